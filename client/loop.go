package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker/mdp"
	"github.com/titanicmq/titanic/broker/zsock"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// conn is the socket goroutine's state: one DEALER per broker endpoint,
// made when first needed. Only run's goroutine touches it.
type conn struct {
	zctx  *zmq.Context
	curve *CurveClient
	eps   []string
	socks []*zmq.Socket
	// ready[i] waits for socks[i] in Go's poller (nil: zmq_poll does);
	// frames[i] sends and receives its messages in one cgo call each.
	ready  []*zsock.Readable
	frames []*zsock.Frames
	// active is the index in eps of the broker calls go to; -1: not known,
	// ask them all first (find). With one endpoint it is always 0.
	active int
	// last is the broker that answered last, to tell a failover from a
	// first choice; -1: none yet.
	last int
	// next is the broker to try when none answers the question of find.
	next int
	// watches[i] follows socks[i]'s connection (nil: unwatched); seen[i]
	// is what the current call saw of broker i (watch.go).
	watches []*watch
	seen    []seen
	// refusedWait is Config.RefusedWait (<= 0: refused connections
	// keep the tries).
	refusedWait time.Duration
}

func newConn(zctx *zmq.Context, cfg Config) *conn {
	curve, eps := cfg.Curve, cfg.Brokers
	cn := &conn{zctx: zctx, curve: curve, eps: eps, refusedWait: cfg.RefusedWait, socks: make([]*zmq.Socket, len(eps)), ready: make([]*zsock.Readable, len(eps)), frames: make([]*zsock.Frames, len(eps)), active: -1, last: -1,
		watches: make([]*watch, len(eps)), seen: make([]seen, len(eps))}
	if len(eps) == 1 {
		cn.active = 0
	}
	return cn
}

// forget makes the next call ask every broker which one serves.
func (cn *conn) forget() {
	if len(cn.eps) > 1 {
		cn.active = -1
	}
}

func (cn *conn) drop(i int) {
	cn.unwatch(i)
	if r := cn.ready[i]; r != nil {
		_ = r.Close()
		cn.ready[i] = nil
	}
	cn.frames[i] = nil
	if s := cn.socks[i]; s != nil {
		_ = s.SetLinger(0)
		_ = s.Close()
		cn.socks[i] = nil
	}
}

// begin forgets what earlier calls saw of the brokers, but for a
// connection still up: made before this call, it is this call's too (its
// monitor says nothing more, and a broker silent on it would be reported
// as never connected to).
func (cn *conn) begin() {
	for i := range cn.seen {
		cn.harvest(i) // events of the time between calls: not this call's
		cn.seen[i] = cn.seen[i].keepUp()
	}
}

func (cn *conn) dropAll() {
	for i := range cn.socks {
		cn.drop(i)
	}
}

// sock returns the socket to broker i, connecting it first if need be.
func (cn *conn) sock(i int) (*zmq.Socket, error) {
	if s := cn.socks[i]; s != nil {
		return s, nil
	}
	endpoint := cn.eps[i]
	s, err := cn.zctx.NewSocket(zmq.DEALER)
	if err != nil {
		return nil, fmt.Errorf("new socket: %w", err)
	}
	_ = s.SetLinger(0)
	if cn.curve != nil {
		if err := cn.curve.Apply(s); err != nil {
			_ = s.Close()
			return nil, fmt.Errorf("socket for %s: %w", endpoint, err)
		}
	}
	cn.socks[i] = s
	cn.watches[i] = cn.monitor(s)
	if err := s.Connect(endpoint); err != nil {
		cn.drop(i)
		return nil, fmt.Errorf("connect %s: %w", endpoint, err)
	}
	// Without it (a descriptor Go cannot watch) await falls back to
	// zmq_poll: slower, the same answers.
	cn.ready[i], _ = zsock.NewReadable(s)
	cn.frames[i] = zsock.NewFrames(s)
	return s, nil
}

// run owns the ZeroMQ context and sockets.
func (c *Client) run() {
	defer close(c.done)
	cn := newConn(c.zc.ZMQ(), c.cfg)
	defer cn.dropAll()
	var tick <-chan time.Time
	if c.cfg.ID != "" {
		t := time.NewTicker(c.cfg.PresenceInterval)
		defer t.Stop()
		tick = t.C
		c.presence(cn, tsp.SvcHello, c.cfg.Timeout)
	}
	for {
		select {
		case <-c.quit:
			if c.cfg.ID != "" {
				// To the broker that served last, on a new socket when
				// the call in flight was abandoned (its context ended:
				// a wait given up, an interrupt), which drops its
				// socket: without the bye the broker lists the client
				// until its presence timeout.
				if cn.active < 0 {
					cn.active = cn.last
				}
				if cn.active >= 0 {
					c.presence(cn, tsp.SvcBye, min(c.cfg.Timeout, 500*time.Millisecond))
				}
			}
			return
		case <-tick:
			c.presence(cn, tsp.SvcHello, c.cfg.Timeout)
		case cl := <-c.calls:
			frames, err := c.serve(cn, cl)
			cl.res <- result{frames, err}
		}
	}
}

// presence tells the broker this client is here (titanic.hello) or
// leaving (titanic.bye); one try, bounded by timeout, answer ignored: a
// lost hello is made up by the next.
func (c *Client) presence(cn *conn, service string, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	quit := c.quit
	if service == tsp.SvcBye {
		quit = nil // already closing: let the bye go out
	}
	cl := &call{ctx: ctx, service: service, body: [][]byte{[]byte(c.cfg.ID)}}
	if _, err := c.serveOnce(cn, cl, quit); err != nil {
		c.log.Debug("presence", "service", service, "err", err)
	}
}

// pollSlice bounds how long the socket goroutine waits without looking at
// the caller's context and Close.
const pollSlice = 50 * time.Millisecond

// maxRefusalBackoff caps the pause before asking again after a refusal.
// A refusal is answered at once and costs the broker next to nothing, and
// while a node takes over the caller is waiting: ask often.
const maxRefusalBackoff = 100 * time.Millisecond

// errNoActive: brokers answered, but none serves, is taking over, or may be
// asked to take over.
var errNoActive = errors.New(noActive)

// noActive is in the text of ErrUnavailable errors when brokers answered
// but none serves.
const noActive = "no active broker"

// serve runs the Lazy Pirate loop for one call. With several brokers and
// none known to serve, it first asks all of them which one does (find) and
// then sends the request to that one alone: a request is never sent to two
// brokers at once.
func (c *Client) serve(cn *conn, cl *call) ([][]byte, error) {
	n := len(cn.eps)
	tries := c.cfg.Retries * n
	// Refusals by brokers that are not active cost no try, but they are
	// bounded by the time the tries would take.
	budget := time.Now().Add(time.Duration(tries) * c.cfg.Timeout)
	backoff := 10 * time.Millisecond
	// silent[i]: broker i let a try of this call time out. It has had its
	// chance: find does not wait for it again, and another broker may be
	// asked to take over from it.
	silent := make([]bool, n)
	// large[i]: the tries of this call whose request broker i cut after
	// its lone resend (seen.tooLarge). A connection reset twice does that
	// too, so one such try is no verdict for the call: the next try's
	// first send is a suspect already (it was sent again alone), and a
	// cut of it makes two: the request is not sent there again.
	large := make([]int, n)
	waited := false // a try waited out its Timeout (others were refused at once)
	cn.begin()
	msg := mdp.ClientRequest(cl.service, cl.body...)
	for try := 1; ; {
		var (
			frames [][]byte
			err    error
		)
		if cn.active < 0 {
			var i int
			if c.cfg.Direct {
				c.choose(cn, cl, 0)
			} else if i, err = c.find(cn, cl, silent); err == nil {
				c.choose(cn, cl, i)
			}
		}
		if err == nil && large[cn.active] >= 2 {
			// The broker to take the request closes the connection on
			// it: resending it there cannot help, and another broker
			// is not to be asked to take over from one that answers.
			return nil, c.unavailable(cn, cl.service, false, try, waited)
		}
		if err == nil {
			frames, err = c.exchange(cn, cn.active, cl, msg, large[cn.active] > 0, c.quit)
			if err == nil && !notActive(frames) && !notReady(frames) {
				c.calls_.Add(1)
				cn.last = cn.active
				return frames, nil
			}
			// Whatever happened, the socket may hold a late answer: drop
			// it so it cannot be taken for the answer to the next call.
			cn.drop(cn.active)
			if errors.Is(err, errRefused) && cn.seen[cn.active].tooLarge {
				large[cn.active]++
			}
			if errors.Is(err, errTimeout) || errors.Is(err, errRefused) && !cn.seen[cn.active].tooLarge {
				// It had its chance (or refuses it): find does not
				// wait for it again. Not one that closed the
				// connection on the request: it answers, and is no
				// reason to vote for its passive peer.
				silent[cn.active] = true
			}
		}
		switch {
		case err == nil || errors.Is(err, errNoActive):
			// A passive or follower broker: the active one is elsewhere
			// (or being elected): look again after a short pause. An
			// active broker that is not ready yet (taking over): ask it
			// again.
			c.refusals.Add(1)
			if err == nil && len(frames) == 2 {
				cn.seen[cn.active].answer = string(frames[1])
			}
			if time.Now().After(budget) {
				return nil, c.unavailable(cn, cl.service, true, 0, false)
			}
			if err != nil || !notReady(frames) {
				c.elsewhere(cn, cl, "broker not active")
			}
			if err := c.pause(cl, backoff); err != nil {
				return nil, err
			}
			backoff = min(2*backoff, c.cfg.Timeout/2, maxRefusalBackoff)
			continue
		case errors.Is(err, errRefused):
			// Refused for good (a CURVE key, a request over its size
			// limit), or every connection refused for RefusedWait:
			// when every broker did, more tries cannot help.
			if cn.allRefused() {
				return nil, c.unavailable(cn, cl.service, false, try, waited)
			}
		case !errors.Is(err, errTimeout):
			return nil, err
		}
		if errors.Is(err, errTimeout) {
			waited = true
		}
		if try == tries {
			return nil, c.unavailable(cn, cl.service, false, try, waited)
		}
		try++
		c.retries.Add(1)
		if cn.active >= 0 {
			c.elsewhere(cn, cl, "no answer")
			continue
		}
		// No broker answered the question (brokers that do not know it,
		// or all down): the Guide's Lazy Pirate, the next broker of the
		// list, with the request itself.
		c.choose(cn, cl, cn.next)
		cn.next = (cn.next + 1) % n
	}
}

// pause waits d, or less if the call is abandoned.
func (c *Client) pause(cl *call, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-cl.ctx.Done():
		return cl.ctx.Err()
	case <-c.quit:
		return ErrClosed
	case <-t.C:
		return nil
	}
}

// choose makes broker i the one calls go to.
func (c *Client) choose(cn *conn, cl *call, i int) {
	cn.active = i
	if cn.last >= 0 && cn.last != i {
		c.failovers.Add(1)
		c.log.Info("failing over", "service", cl.service, "broker", cn.eps[i])
	}
}

// elsewhere notes that the current broker did not serve the call: with
// several brokers, the next try asks them all again.
func (c *Client) elsewhere(cn *conn, cl *call, why string) {
	if len(cn.eps) == 1 || cn.active < 0 {
		c.log.Debug(why+", retrying", "service", cl.service)
		return
	}
	c.log.Debug(why+", asking every broker", "service", cl.service, "broker", cn.eps[cn.active])
	cn.forget()
}

// serveOnce sends one request and waits for its answer once: no retry,
// no failover (but, with several brokers, it finds the active one first).
func (c *Client) serveOnce(cn *conn, cl *call, quit <-chan struct{}) ([][]byte, error) {
	if cn.active < 0 && c.cfg.Direct {
		c.choose(cn, cl, 0)
	}
	if cn.active < 0 {
		i, err := c.find(cn, cl, make([]bool, len(cn.eps)))
		if err != nil {
			return nil, err
		}
		c.choose(cn, cl, i)
	}
	frames, err := c.exchange(cn, cn.active, cl, mdp.ClientRequest(cl.service, cl.body...), false, quit)
	if err != nil {
		cn.drop(cn.active) // a late answer must not be taken for the next call's
	}
	return frames, err
}

// exchange sends msg to broker i and waits for its answer. When the
// connection is cut with it in flight and made again at once, msg is sent
// again, once, within the same try: the broker may hold it or not, and a
// second cut tells a request over its size limit from a broker restarted
// or a connection reset. suspect: an earlier try of the call ended so
// (msg cut after its lone resend): msg is a suspect from its first send,
// and a cut of it is taken for too large at once.
func (c *Client) exchange(cn *conn, i int, cl *call, msg [][]byte, suspect bool, quit <-chan struct{}) ([][]byte, error) {
	s, err := cn.sock(i)
	if err != nil {
		return nil, err
	}
	defer cn.answered(i)
	// A verdict of an earlier try: this one is judged by its own cuts.
	cn.seen[i].tooLarge = false
	deadline := time.Now().Add(c.cfg.Timeout)
	refused := func() error {
		if err := cn.refusedNow(i); err != nil {
			return err
		}
		if cn.cut(i) {
			return errCut
		}
		return nil
	}
	for again := suspect; ; again = true {
		// A connecting DEALER queues the message (ZMQ_IMMEDIATE is
		// off), so a failed send means a full pipe: treat it as an
		// unanswered try.
		cn.sent(i, msg)
		if again {
			cn.resent(i)
		}
		if _, err := cn.frames[i].Send(msg, zmq.DONTWAIT); err != nil {
			return nil, fmt.Errorf("%w: send: %w", errTimeout, err)
		}
		frames, err := c.await(s, cn.frames[i], cn.ready[i], cl, quit, deadline, refused)
		if errors.Is(err, errCut) || errors.Is(err, errTimeout) {
			cl.uncertain = true
		}
		if !errors.Is(err, errCut) || again {
			return frames, err
		}
		c.log.Debug("connection cut with the request in flight, sending it again", "service", cl.service, "broker", cn.eps[i])
	}
}

// find asks every broker at once which one serves (titanic.cluster.role, tsp.Role: an
// admin request, which no broker counts as a Binary Star client vote) and
// returns the index of the one to send the call to:
//
//  1. the first that answers that it serves, at once;
//  2. else, once every broker answered or Timeout passed, one that is
//     Binary Star active but not ready yet (taking over: it answers the
//     call "not ready" until it is);
//  3. else a pair node that is not active, but only if another broker
//     let Timeout pass without answering, now or earlier in the call
//     (silent): the call is then its vote to take over. This is Binary
//     Star's rule for clients: turn to the other server only when the
//     active one failed to answer in time. Asking every node at once does
//     not change it, since the question is not a vote.
//
// It returns errTimeout when no broker answered and errNoActive when
// brokers answered but none fits. Brokers found silent are marked in
// silent, and their sockets dropped (they hold the question).
func (c *Client) find(cn *conn, cl *call, silent []bool) (int, error) {
	n := len(cn.eps)
	answers := make([]*tsp.Role, n)
	msg := mdp.ClientRequest(tsp.SvcRole, nil)
	poller := zmq.NewPoller()
	var socks []*zmq.Socket
	var which []int
	// Wait for the brokers not known to be silent; when all are, for all.
	waitFor := make([]bool, n)
	for i := range n {
		waitFor[i] = !silent[i]
	}
	if !slices.Contains(waitFor, true) {
		clear(silent)
		for i := range n {
			waitFor[i] = true
		}
	}
	waiting := 0 // answers still due from brokers in waitFor
	for i := range n {
		s, err := cn.sock(i)
		if err != nil {
			return -1, err
		}
		if _, err := s.SendMessageDontwait(msg); err != nil {
			cn.drop(i)
			silent[i] = true
			continue
		}
		poller.Add(s, zmq.POLLIN)
		socks, which = append(socks, s), append(which, i)
		if waitFor[i] {
			waiting++
		}
	}
	deadline := time.Now().Add(c.cfg.Timeout)
	serving := -1
	for serving < 0 && len(socks) > 0 {
		if waiting == 0 {
			break // every broker that may still answer has
		}
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		select {
		case <-cl.ctx.Done():
			return -1, cl.ctx.Err()
		case <-c.quit:
			return -1, ErrClosed
		default:
		}
		polled, err := poller.PollAll(min(left, pollSlice))
		if err != nil {
			if zmq.AsErrno(err) == zmq.Errno(syscall.EINTR) {
				continue
			}
			return -1, fmt.Errorf("poll: %w", err)
		}
		if noneCanAnswer(cn, answers) {
			break // every broker still silent refused this client for good
		}
		for k, p := range polled {
			if p.Events&zmq.POLLIN == 0 {
				continue
			}
			i := which[k]
			frames, err := zsock.RecvMessage(socks[k], 0, zsock.DefaultMaxFrames)
			if errors.Is(err, zsock.ErrTooManyFrames) {
				c.stale.Add(1)
				continue
			}
			if err != nil {
				return -1, fmt.Errorf("receive: %w", err)
			}
			body, err := mdp.ParseReply(frames, tsp.SvcRole)
			if err != nil || answers[i] != nil {
				c.stale.Add(1)
				continue
			}
			a, err := tsp.ParseRole(body)
			if err != nil {
				c.log.Debug("odd role answer", "broker", cn.eps[i], "err", err)
			}
			answers[i] = &a
			if !a.Serving {
				// For the error, should none serve: the node's words
				// (Why is a refusal text, "not active: ..."), or the
				// kind its refusal would have.
				switch {
				case a.Why != "":
					cn.seen[i].answer = a.Why
				case a.Star == tsp.StarActive:
					cn.seen[i].answer = string(tsp.NotReady)
				default:
					cn.seen[i].answer = string(tsp.NotActive)
				}
			}
			if waitFor[i] {
				waiting--
			}
			if a.Serving && serving < 0 {
				serving = i
			}
		}
	}
	answered := 0
	for i, a := range answers {
		if a != nil {
			answered++
			continue
		}
		// Its socket holds the question: drop it, so that a late answer
		// cannot be read as the next one's.
		cn.drop(i)
		if serving < 0 {
			silent[i] = true // it had the whole Timeout
		}
	}
	if serving >= 0 {
		return serving, nil
	}
	for i, a := range answers {
		if a != nil && a.Star == tsp.StarActive {
			return i, nil
		}
	}
	for i, a := range answers {
		if a != nil && a.Star != "" && anySilent(silent, i) {
			return i, nil
		}
	}
	if answered == 0 {
		if cn.allRefused() {
			return -1, fmt.Errorf("%w: every broker, asked %s", errRefused, tsp.SvcRole)
		}
		return -1, fmt.Errorf("%w: no broker answered %s", errTimeout, tsp.SvcRole)
	}
	return -1, errNoActive
}

// noneCanAnswer reports that every broker that has not answered find's
// question refused this client for good (its CURVE key, say): waiting
// out the Timeout for them is pointless.
func noneCanAnswer(cn *conn, answers []*tsp.Role) bool {
	silent, refused := 0, 0
	now := time.Now()
	for i, a := range answers {
		if a != nil {
			continue
		}
		silent++
		// Every one is read, also after one that can answer: a refusal
		// of connections is timed from when it is read.
		cn.harvest(i)
		if cn.seen[i].refusesClient(now, cn.refusedWait) {
			refused++
		}
	}
	return silent > 0 && refused == silent
}

func anySilent(silent []bool, except int) bool {
	for i, s := range silent {
		if s && i != except {
			return true
		}
	}
	return false
}

// notReady reports a refusal by an active broker still taking over, or
// one that may lack its peer's split (500, kind not ready): ask it again.
// The broker's gate sends it: it carries no key, so exactly two frames.
func notReady(frames [][]byte) bool {
	return len(frames) == 2 && tsp.Is(frames, tsp.CodeError, tsp.NotReady)
}

// notActive reports a refusal by a broker that is not the active one
// (500, kind not active, from the gate): ask another.
func notActive(frames [][]byte) bool {
	return len(frames) == 2 && tsp.Is(frames, tsp.CodeError, tsp.NotActive)
}

var errTimeout = errors.New("timeout")

// await waits on s until deadline for the answer to the request just
// sent, parked in Go's poller with ready (see zsock.Readable), or in
// zmq_poll without. Whenever a slice of the wait passes without an
// answer, refused is asked whether the broker refused the connection for
// good: its error ends the wait early.
func (c *Client) await(s *zmq.Socket, fr *zsock.Frames, ready *zsock.Readable, cl *call, quit <-chan struct{}, deadline time.Time, refused func() error) ([][]byte, error) {
	var poller *zmq.Poller
	if ready == nil {
		poller = zmq.NewPoller()
		poller.Add(s, zmq.POLLIN)
	}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, errTimeout
		}
		select {
		case <-cl.ctx.Done():
			return nil, cl.ctx.Err()
		case <-quit:
			return nil, ErrClosed
		default:
		}
		if ready != nil {
			err := ready.Wait(time.Now().Add(min(left, pollSlice)))
			if errors.Is(err, zsock.ErrTimeout) {
				if err := refused(); err != nil {
					return nil, err
				}
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("poll: %w", err)
			}
		} else {
			polled, err := poller.Poll(min(left, pollSlice))
			if err != nil {
				if zmq.AsErrno(err) == zmq.Errno(syscall.EINTR) {
					continue
				}
				return nil, fmt.Errorf("poll: %w", err)
			}
			if len(polled) == 0 {
				if err := refused(); err != nil {
					return nil, err
				}
				continue
			}
		}
		frames, err := fr.Recv(zmq.DONTWAIT)
		if errors.Is(err, zsock.ErrTooManyFrames) {
			// Not an answer of a broker that speaks 7/MDP: dropped (its
			// frames were discarded as they were read).
			c.stale.Add(1)
			c.log.Debug("dropped answer", "err", err)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("receive: %w", err)
		}
		body, err := mdp.ParseReply(frames, cl.service)
		if err != nil {
			c.stale.Add(1)
			c.log.Debug("dropped answer", "err", err)
			continue
		}
		return body, nil
	}
}
