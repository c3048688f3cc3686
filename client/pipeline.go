package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker/mdp"
	"github.com/titanicmq/titanic/broker/zsock"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// Pipelined submits (SubmitAsync) have a connection of their own: one
// DEALER per broker, owned by the pipeline goroutine, apart from the one
// that serves the Client's other calls one at a time. Many titanic.submit
// requests are in flight on it at once. MDP answers carry no request id,
// so the pipeline matches them by the idempotency key that titanic echoes
// as the last frame of every answer to titanic.submit (a titanic
// extension; see README, 9/TSP extensions). Answers that carry no key (a
// node's "not active" or "not ready" refusal, which the broker gives
// before titanic sees the request) concern the node, not a request: every
// submit in flight there is sent again (to the same node, or after a
// failover to the next), with its key, so none makes a second ticket.
// With a broker that does not echo keys the pipeline sends one submit at
// a time.
//
// Its sockets are watched as the Client's are (watch.go), and what was
// seen of each broker since the last answer is the causes of the
// *UnavailableError a submit fails with. When every broker refused for
// good (a CURVE key, a handshake) or refused connections for
// RefusedWait, every submit held fails at once. A connection cut with
// submits in flight and made again at once (a broker restarted, a
// connection reset, or a broker closing it on a request over its maximum
// message size) does not say which of them it was, if any: those are
// sent again one at a time, and only one cut again, alone, fails.

// DefaultMaxPending is Config.MaxPending's default: well under a broker's
// default per-client in-flight limit (1000), beyond which it answers busy.
const DefaultMaxPending = 256

// SubmitFuture is the outcome of a SubmitAsync: a ticket once the broker
// made the request durable, or an error. Every future ends, with a ticket
// or an error: ErrRejected (malformed), ErrUnavailable (no broker took it
// within Retries tries of Timeout per broker), ErrServer (the broker kept
// answering 500, busy or a storage error, until then), ErrClosed.
type SubmitFuture struct {
	key    string
	done   chan struct{}
	ticket string
	dup    bool
	err    error
}

// Key is the submit's idempotency key (the caller's, or the one the
// client made): a later Submit with it returns the same ticket.
func (f *SubmitFuture) Key() string { return f.key }

// Done is closed once the future has its ticket or its error.
func (f *SubmitFuture) Done() <-chan struct{} { return f.done }

// Ticket waits for the submit's outcome, or for ctx (which abandons the
// wait, not the submit).
func (f *SubmitFuture) Ticket(ctx context.Context) (string, error) {
	select {
	case <-f.done:
		return f.ticket, f.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Duplicate reports, once Done, whether the broker had the key already
// (the ticket was made by an earlier submit with the same key).
func (f *SubmitFuture) Duplicate() bool {
	select {
	case <-f.done:
		return f.dup
	default:
		return false
	}
}

// SubmitAsync starts a durable submit and returns at once with its
// future, without waiting for the broker: many submits are in flight on
// one connection, each acknowledged once it is on disk. At most
// Config.MaxPending submits are unfinished at a time: SubmitAsync blocks
// while that many are, until one finishes or ctx ends (ctx bounds only
// this wait; a submit accepted runs until its future ends). It returns an
// error, and no future, when ctx ends first, the Client is closed, or the
// request is malformed (ErrRejected).
//
// Submits go out in the order of SubmitAsync calls, and the broker
// commits them in that order, except a submit sent again (after a busy
// answer, a timeout or a failover), which may land after later ones. The
// caller must not change body until the future is done.
func (c *Client) SubmitAsync(ctx context.Context, service string, body [][]byte, opt SubmitOptions) (*SubmitFuture, error) {
	switch {
	case len(opt.IdemKey) > maxIdemKey:
		return nil, fmt.Errorf("%w: idempotency key of %d bytes, at most %d", ErrRejected, len(opt.IdemKey), maxIdemKey)
	case service == "":
		return nil, fmt.Errorf("%w: empty service name", ErrRejected)
	case len(body) == 0:
		return nil, fmt.Errorf("%w: no body frame", ErrRejected)
	}
	key := opt.IdemKey
	if key == "" {
		var err error
		if key, err = newKey(); err != nil {
			return nil, err
		}
	}
	svc, frames, err := submitRequest(service, body, key, opt)
	if err != nil {
		return nil, err
	}
	p := c.pipe()
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.quit:
		return nil, ErrClosed
	}
	r := &asyncReq{
		fut:     &SubmitFuture{key: key, done: make(chan struct{})},
		service: service,
		msg:     mdp.ClientRequest(svc, frames...),
		v2:      svc == tsp.SvcSubmit2,
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.slots
		return nil, p.closeErr
	}
	if p.unfinished == 0 {
		p.idle = make(chan struct{})
	}
	p.unfinished++
	p.in <- r // never blocks: in holds as many as there are slots
	p.mu.Unlock()
	p.bell.Ring()
	return r.fut, nil
}

// Flush waits until every submit SubmitAsync accepted has finished (its
// future is done), or ctx ends.
func (c *Client) Flush(ctx context.Context) error {
	p := c.pipe()
	p.mu.Lock()
	if p.unfinished == 0 {
		p.mu.Unlock()
		return nil
	}
	idle := p.idle
	p.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// maxIdemKey is titanic.MaxIdemKey (the broker refuses longer keys).
const maxIdemKey = 128

// newKey makes an idempotency key. Time-ordered keys land at the end of
// the broker's key index instead of a random page of it: half the disk
// writes.
func newKey() (string, error) {
	k, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("idempotency key: %w", err)
	}
	return k.String(), nil
}

// asyncReq is one pipelined submit. After SubmitAsync hands it over, only
// the pipeline goroutine touches it (until its future is done).
type asyncReq struct {
	fut      *SubmitFuture
	service  string
	msg      [][]byte  // the MDP request, sent again as it is
	deadline time.Time // it fails when not answered by then
	tries    int       // sends that went unanswered for Timeout
	sentAt   time.Time // last send
	inFlight bool
	v2       bool      // titanic.submit2 (lifecycle options)
	notAt    time.Time // not sent again before (after a busy answer)
	lastErr  error     // the last 500 answered, for the final error
	// suspect: in flight when the broker closed the connection on a
	// request: sent again alone, to tell which one it was.
	suspect bool
}

// pipeline is the state of pipelined submits.
type pipeline struct {
	c     *Client
	slots chan struct{} // one per unfinished submit: the window
	in    chan *asyncReq
	bell  *zsock.Doorbell // wakes the pipeline's poll when a submit is handed over
	done  chan struct{}

	mu         sync.Mutex
	closed     bool
	closeErr   error // why submits are refused once closed
	unfinished int
	idle       chan struct{} // closed when unfinished drops to 0

	// Pipeline goroutine only.
	cn     *conn
	queue  []*asyncReq          // to send, in order
	later  []*asyncReq          // to send again once notAt passes
	flight map[string]*asyncReq // sent, not answered, by key
	order  []sent               // sends in order, for timeouts; stale entries skipped
	keys   map[string][]*asyncReq
	// released: submits whose key's earlier submit has ended, to be
	// queued by admit. finish runs inside loops that rebuild queue in
	// place, where an append would be lost.
	released []*asyncReq
	legacy   bool      // the broker echoes no keys: one submit in flight
	resume   time.Time // no send before (pause after a refusal)
	backoff  time.Duration
	silent   []bool
	// probe: the suspect in flight, alone.
	probe *asyncReq
	// refusing: the active broker refused submits in flight (not active,
	// not ready). Its refusals carry no key, but its other answers do:
	// a submit it took before it stopped serving (a node draining) is
	// still answered with its ticket. Nothing more is sent there, and
	// the socket is read until each submit in flight was answered or
	// refused, or for Timeout; then the rest is sent again.
	refusing refusing
	// noActive: the last search for the broker found none serving.
	noActive bool
	// refusedAt: when every broker last refused for good, and the
	// submits held failed; submits taken soon after fail as well
	// (forgetAfterRefusal).
	refusedAt time.Time
}

type refusing struct {
	since     time.Time // zero: not refusing
	n         int       // refusals read
	notActive bool      // one said not active (not only not ready)
}

type sent struct {
	r  *asyncReq
	at time.Time
}

// pipe returns the pipeline, starting its goroutine on first use.
func (c *Client) pipe() *pipeline {
	c.pipeOnce.Do(func() {
		n := c.cfg.MaxPending
		p := &pipeline{
			c: c, slots: make(chan struct{}, n), in: make(chan *asyncReq, n),
			bell: zsock.NewDoorbell(), done: make(chan struct{}),
			flight: make(map[string]*asyncReq), keys: make(map[string][]*asyncReq),
			backoff: 10 * time.Millisecond, silent: make([]bool, len(c.cfg.Brokers)),
		}
		c.pipeline.Store(p)
		go p.run()
	})
	return c.pipeline.Load()
}

// run owns the pipeline's sockets until the Client closes (or its
// doorbell cannot be opened); then every unfinished submit ends with the
// error, and later SubmitAsync calls return it. A socket failing on the
// way ends only the submits held then (reset).
func (p *pipeline) run() {
	defer close(p.done)
	p.shut(p.serve())
}

func (p *pipeline) serve() error {
	c := p.c
	zctx := c.zc.ZMQ()
	bell, err := p.bell.Open(zctx)
	if err != nil {
		return err
	}
	defer p.bell.Close()
	p.cn = newConn(zctx, c.cfg)
	defer p.cn.dropAll()
	err = p.loop(bell)
	if !errors.Is(err, ErrClosed) {
		c.log.Error("pipelined submits stopped", "err", err)
	}
	return err
}

func (p *pipeline) loop(bell *zmq.Socket) error {
	c := p.c
	cl := &call{ctx: context.Background(), service: tsp.SvcSubmit}
	for {
		select {
		case <-c.quit:
			return ErrClosed
		default:
		}
		p.take()
		now := time.Now()
		p.watch(now)
		p.expire(now)
		p.admit(now)
		if len(p.queue) == 0 && len(p.flight) == 0 && len(p.later) == 0 {
			// Nothing to do: wait for a submit (no socket to watch).
			select {
			case <-c.quit:
				return ErrClosed
			case r := <-p.in:
				p.accept(r)
			}
			continue
		}
		if len(p.queue) > 0 && !now.Before(p.resume) {
			if p.cn.active < 0 {
				if err := p.find(cl); err != nil {
					if err := p.reset(err); err != nil {
						return err
					}
				}
				continue
			}
			if err := p.send(now); err != nil {
				if err := p.reset(err); err != nil {
					return err
				}
				continue
			}
		}
		if err := p.poll(bell); err != nil {
			if err := p.reset(err); err != nil {
				return err
			}
			continue
		}
		p.timeouts(cl, time.Now())
	}
}

// reset ends every submit held with err, an unexpected failure of a
// socket (none could be made, a poll or a receive failed), as a plain
// call ends with it, and starts again with new sockets for the submits
// to come: the pipeline stopping for good would fail every later submit
// of the Client. It returns ErrClosed, which ends the pipeline, when
// that is err or the Client is closing.
func (p *pipeline) reset(err error) error {
	select {
	case <-p.c.quit:
		return ErrClosed
	default:
	}
	if errors.Is(err, ErrClosed) {
		return err
	}
	p.c.log.Warn("pipelined submits failed", "err", err)
	p.failAll(fmt.Errorf("submit: %w", err))
	p.cn.dropAll()
	p.cn.forget()
	clear(p.cn.seen)
	clear(p.silent)
	p.noActive = false
	return nil
}

// take accepts every submit handed over.
func (p *pipeline) take() {
	for {
		select {
		case r := <-p.in:
			p.accept(r)
		default:
			return
		}
	}
}

func (p *pipeline) accept(r *asyncReq) {
	r.deadline = p.deadline(time.Now())
	key := r.fut.key
	// Two submits with one key: the second waits for the first (answers
	// are matched by key), then gets its ticket as a duplicate.
	held := p.keys[key]
	p.keys[key] = append(held, r)
	if len(held) == 0 {
		p.queue = append(p.queue, r)
	}
}

// deadline is when a submit queued at now gives up: its tries of Timeout
// per broker.
func (p *pipeline) deadline(now time.Time) time.Time {
	return now.Add(time.Duration(p.c.cfg.Retries*len(p.c.cfg.Brokers)) * p.c.cfg.Timeout)
}

// admit queues the submits released by finish. Their time starts now:
// waiting for the earlier submit with their key spent none of their tries.
func (p *pipeline) admit(now time.Time) {
	for i, r := range p.released {
		r.deadline = p.deadline(now)
		p.queue = append(p.queue, r)
		p.released[i] = nil
	}
	p.released = p.released[:0]
}

// expire fails the submits whose time is up, and queues those whose pause
// after a busy answer is over.
func (p *pipeline) expire(now time.Time) {
	kept := p.later[:0]
	for _, r := range p.later {
		switch {
		case now.After(r.deadline):
			p.finish(r, "", false, p.gaveUp(r))
		case now.Before(r.notAt):
			kept = append(kept, r)
		default:
			p.queue = append(p.queue, r)
		}
	}
	clear(p.later[len(kept):])
	p.later = kept
	// Every one is looked at: the queue is not in deadline order (a
	// submit back from later, or released by finish, goes to its end;
	// one sent again goes ahead of those not sent yet).
	q := p.queue[:0]
	for _, r := range p.queue {
		if now.After(r.deadline) {
			p.finish(r, "", false, p.gaveUp(r))
			continue
		}
		q = append(q, r)
	}
	clear(p.queue[len(q):])
	p.queue = q
}

func (p *pipeline) gaveUp(r *asyncReq) error {
	if r.lastErr != nil {
		return fmt.Errorf("submit to %s: %w", clipName(r.service), r.lastErr)
	}
	return fmt.Errorf("submit to %s: %w", clipName(r.service), p.unavailable(r, 0, true))
}

// unavailable is the error of a submit no broker took: what was seen of
// each since the last answer. made and waited: as Client.unavailable's.
func (p *pipeline) unavailable(r *asyncReq, made int, waited bool) error {
	svc := tsp.SvcSubmit
	if r != nil && r.v2 {
		svc = tsp.SvcSubmit2
	}
	return p.c.unavailable(p.cn, svc, p.noActive, made, waited)
}

// forgetAfterRefusal is how long after every broker refused for good the
// submits taken fail at once, before the brokers are given another
// chance (a key added to the allowlist, a broker started): a program
// submitting a file learns it in one go, not once per window of submits.
func (p *pipeline) forgetAfterRefusal() time.Duration { return p.c.cfg.Timeout }

// watch reads what the monitors saw. A connection cut with submits in
// flight, and made again, makes them suspects, sent again one at a time;
// a suspect cut again, alone, fails. When every broker refused for good,
// every submit held fails.
func (p *pipeline) watch(now time.Time) {
	cn := p.cn
	if !p.refusedAt.IsZero() && now.Sub(p.refusedAt) >= p.forgetAfterRefusal() {
		// Give the brokers another chance; a refusal of connections
		// goes on being seen as long as it lasts.
		p.refusedAt = time.Time{}
		for i := range cn.seen {
			sn := cn.seen[i].keepUp()
			sn.watched, sn.Refused = cn.seen[i].watched, cn.seen[i].Refused
			sn.RefusingSince, sn.LastRefused = cn.seen[i].RefusingSince, cn.seen[i].LastRefused
			sn.closing, sn.closingSince, sn.lastClosing = cn.seen[i].closing, cn.seen[i].closingSince, cn.seen[i].lastClosing
			cn.seen[i] = sn
		}
	}
	for i := range cn.eps {
		cn.harvest(i)
	}
	if a := cn.active; a >= 0 && cn.seen[a].tooLarge {
		if r := p.probe; r != nil {
			// The suspect sent alone was cut again: too large, final
			// whatever the tries before it met.
			err := p.unavailable(r, 1, false)
			p.requeue()
			p.drop(r)
			p.finish(r, "", false, fmt.Errorf("submit to %s: %w", clipName(r.service), err))
		}
		cn.seen[a].tooLarge = false
	} else if a >= 0 && cn.cut(a) {
		for _, r := range p.flight {
			r.suspect = true
		}
		p.requeue()
	}
	if len(p.queue)+len(p.flight)+len(p.later) > 0 && cn.allRefused() {
		p.refused()
	}
}

// drop takes r out of the queue (it is about to be finished).
func (p *pipeline) drop(r *asyncReq) {
	q := p.queue[:0]
	for _, x := range p.queue {
		if x != r {
			q = append(q, x)
		}
	}
	clear(p.queue[len(q):])
	p.queue = q
}

// refused fails every submit held: every broker refused for good.
func (p *pipeline) refused() {
	err := p.unavailable(nil, 1, false)
	if p.cn.active >= 0 {
		p.requeue() // drops the socket: a late answer must not be taken for a new submit's
	}
	p.refusedAt = time.Now()
	p.failAll(fmt.Errorf("submit: %w", err))
}

// find chooses the broker to send to, as serve does for one call.
func (p *pipeline) find(cl *call) error {
	c, cn := p.c, p.cn
	i, err := c.find(cn, cl, p.silent)
	p.noActive = errors.Is(err, errNoActive)
	switch {
	case err == nil:
		c.choose(cn, cl, i)
		return nil
	case errors.Is(err, errNoActive):
		c.refusals.Add(1)
		p.pause()
		return nil
	case errors.Is(err, errRefused):
		p.refused()
		return nil
	case errors.Is(err, errTimeout):
		// No broker answered the question: the Guide's Lazy Pirate, the
		// next broker of the list, with the requests themselves.
		c.choose(cn, cl, cn.next)
		cn.next = (cn.next + 1) % len(cn.eps)
		return nil
	case errors.Is(err, ErrClosed):
		return err
	}
	return err
}

// pause holds sends back after a refusal, with a growing backoff.
func (p *pipeline) pause() {
	p.resume = time.Now().Add(p.backoff)
	p.backoff = min(2*p.backoff, p.c.cfg.Timeout/2, maxRefusalBackoff)
}

// send sends the queued submits to the active broker.
func (p *pipeline) send(now time.Time) error {
	if !p.refusing.since.IsZero() {
		if len(p.flight) > 0 {
			return nil // the broker refuses: wait for the answers in flight there
		}
		p.refusing = refusing{} // nothing left to wait for
	}
	if _, err := p.cn.sock(p.cn.active); err != nil {
		return err
	}
	// One cgo call per message (zsock.Frames), where pebbe/zmq4 makes one
	// per frame.
	fr := p.cn.frames[p.cn.active]
	n := 0
	for _, r := range p.queue {
		if (p.legacy || p.probe != nil || r.suspect) && len(p.flight) > 0 {
			break
		}
		p.cn.pipelined(p.cn.active, r.msg)
		if r.suspect {
			p.cn.resent(p.cn.active)
		}
		if _, err := fr.Send(r.msg, zmq.DONTWAIT); err != nil {
			// A full pipe: the rest goes once answers drain it (or
			// the timeouts drop the socket).
			break
		}
		r.sentAt, r.inFlight = now, true
		p.flight[r.fut.key] = r
		p.order = append(p.order, sent{r, now})
		n++
		if r.suspect {
			p.probe = r
			break
		}
	}
	clear(p.queue[:n])
	p.queue = p.queue[n:]
	return nil
}

// poll waits for answers (or the bell, or the next deadline) and handles
// every answer waiting.
func (p *pipeline) poll(bell *zmq.Socket) error {
	now := time.Now()
	wait := pollSlice
	if len(p.order) > 0 {
		wait = min(wait, max(0, p.order[0].at.Add(p.c.cfg.Timeout).Sub(now)))
	}
	if len(p.queue) > 0 && now.Before(p.resume) {
		wait = min(wait, p.resume.Sub(now))
	}
	if len(p.later) > 0 {
		wait = min(wait, 10*time.Millisecond)
	}
	if !p.refusing.since.IsZero() {
		wait = min(wait, max(0, p.refusing.since.Add(p.c.cfg.Timeout).Sub(now)))
	}
	poller := zmq.NewPoller()
	poller.Add(bell, zmq.POLLIN)
	var (
		s  *zmq.Socket
		fr *zsock.Frames
	)
	if a := p.cn.active; a >= 0 && p.cn.socks[a] != nil && len(p.flight) > 0 {
		s, fr = p.cn.socks[a], p.cn.frames[a]
		poller.Add(s, zmq.POLLIN)
	}
	if _, err := poller.Poll(wait); err != nil {
		if zmq.AsErrno(err) == zmq.Errno(syscall.EINTR) {
			return nil
		}
		return fmt.Errorf("poll: %w", err)
	}
	if err := p.bell.Drain(); err != nil {
		return err
	}
	if s == nil {
		return nil
	}
	// Read what is waiting, in bounded rounds so that new submits are
	// sent while answers stream in.
	for range recvBatch {
		frames, err := fr.Recv(zmq.DONTWAIT)
		if err != nil {
			if zmq.AsErrno(err) == zmq.Errno(syscall.EAGAIN) {
				return nil
			}
			if errors.Is(err, zsock.ErrTooManyFrames) {
				p.c.stale.Add(1)
				p.c.log.Debug("dropped answer", "err", err)
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		svc := tsp.SvcSubmit
		body, err := mdp.ParseReply(frames, tsp.SvcSubmit)
		if err != nil {
			if b2, err2 := mdp.ParseReply(frames, tsp.SvcSubmit2); err2 == nil {
				svc, body, err = tsp.SvcSubmit2, b2, nil
			}
		}
		if err != nil {
			p.c.stale.Add(1)
			p.c.log.Debug("dropped answer", "err", err)
			continue
		}
		if !p.answer(svc, body) {
			return nil // the socket was dropped
		}
	}
	return nil
}

// recvBatch bounds the answers read per poll.
const recvBatch = 256

// answer handles one answer to titanic.submit; false: the socket was
// dropped (the answers it held are void).
func (p *pipeline) answer(svc string, rep [][]byte) bool {
	c := p.c
	if len(p.flight) == 0 {
		c.stale.Add(1) // nothing asked: a late answer
		return true
	}
	if n := len(rep); n >= 3 {
		// A keyed answer: [200 | ticket | new|duplicate | key] or
		// [code | text | key].
		if r := p.flight[string(rep[n-1])]; r != nil && (string(rep[0]) != "200" || n == 4) {
			p.settle(r, rep[:n-1])
			return !p.endRefusal(false)
		}
	}
	if svc == tsp.SvcSubmit2 && unsupported(rep) {
		// A broker without titanic.submit2 answers it without the key:
		// every submit2 in flight there gets the same answer. They fail
		// (ErrUnsupported); their own answers, when they come, find
		// nothing to settle.
		settled := false
		for _, r := range p.flight {
			if r.v2 {
				p.settle(r, rep)
				settled = true
			}
		}
		if !settled {
			c.stale.Add(1)
		}
		return true
	}
	if notActive(rep) || notReady(rep) {
		// The node does not serve (yet): a submit in flight there is
		// refused, or answered with its key if it was taken before.
		c.refusals.Add(1)
		p.cn.seen[p.cn.active].answer = string(rep[1])
		if p.refusing.since.IsZero() {
			p.refusing.since = time.Now()
		}
		p.refusing.n++
		p.refusing.notActive = p.refusing.notActive || notActive(rep)
		return !p.endRefusal(false)
	}
	if len(p.flight) == 1 {
		for _, r := range p.flight {
			p.settle(r, rep) // one in flight: the answer is its
		}
		return true
	}
	// An answer without a key, with several submits in flight: a broker
	// that does not echo keys. Send them again one at a time.
	if !p.legacy {
		c.log.Info("the broker does not echo submit keys: one pipelined submit at a time", "broker", p.cn.eps[p.cn.active])
	}
	p.legacy = true
	p.requeue()
	return false
}

// endRefusal ends a refusal by the active broker once every submit in
// flight there was answered or refused, or when timedOut: the rest is
// sent again once a broker serves (another one, when it said not
// active). It reports whether the socket was dropped.
func (p *pipeline) endRefusal(timedOut bool) bool {
	if p.refusing.since.IsZero() || (!timedOut && p.refusing.n < len(p.flight)) {
		return false
	}
	notActive := p.refusing.notActive
	p.refusing = refusing{}
	p.requeue()
	if notActive {
		p.noActive = true
		p.c.elsewhere(p.cn, &call{service: tsp.SvcSubmit}, "broker not active")
	}
	p.pause()
	return true
}

// settle ends (or, after a transient 500, queues again) the submit r
// answered rep.
func (p *pipeline) settle(r *asyncReq, rep [][]byte) {
	c := p.c
	r.inFlight = false
	delete(p.flight, r.fut.key)
	if p.probe == r {
		p.probe = nil
	}
	if len(p.flight) == 0 {
		p.cn.answered(p.cn.active)
	}
	clear(p.silent)
	// An answer: what was seen of the brokers before it is no cause of
	// a later failure (Up is the socket's state, not a sighting: kept).
	for i := range p.cn.seen {
		p.cn.seen[i] = seen{Conn: zsock.Conn{Up: p.cn.seen[i].Up}}
	}
	p.noActive = false
	p.backoff = 10 * time.Millisecond
	c.calls_.Add(1)
	p.cn.last = p.cn.active
	err := submitStatus(rep, r.fut.key)
	if err == nil {
		if len(rep) < 2 || len(rep[1]) == 0 {
			p.finish(r, "", false, fmt.Errorf("%w: submit answered 200 without a ticket", ErrProtocol))
			return
		}
		p.finish(r, string(rep[1]), len(rep) > 2 && string(rep[2]) == "duplicate", nil)
		return
	}
	if errors.Is(err, ErrServer) {
		// Busy, quota, a storage error: retry later, with the same key.
		r.lastErr = err
		r.notAt = time.Now().Add(maxRefusalBackoff)
		p.later = append(p.later, r)
		return
	}
	p.finish(r, "", false, fmt.Errorf("submit to %s: %w", clipName(r.service), err))
}

// requeue drops the active socket (a late answer on it must not be taken
// for another's) and queues every submit in flight again, in send order,
// ahead of those not sent yet.
func (p *pipeline) requeue() {
	p.cn.drop(p.cn.active)
	p.refusing = refusing{} // what was in flight there is sent again
	var again []*asyncReq
	for _, s := range p.order {
		if s.r.inFlight && s.r.sentAt.Equal(s.at) {
			s.r.inFlight = false
			again = append(again, s.r)
		}
	}
	clear(p.flight)
	p.probe = nil
	// A connection closed on a request, read as its socket was dropped:
	// whichever it was is sent again, and seen again.
	p.cn.seen[p.cn.active].tooLarge = false
	p.order = p.order[:0]
	p.queue = append(again, p.queue...)
}

// timeouts handles the oldest submit in flight going unanswered for
// Timeout: the broker is taken as gone, as serve does for one call.
func (p *pipeline) timeouts(cl *call, now time.Time) {
	c := p.c
	if !p.refusing.since.IsZero() && now.Sub(p.refusing.since) >= c.cfg.Timeout {
		p.endRefusal(true)
		return
	}
	for len(p.order) > 0 {
		s := p.order[0]
		if s.r.inFlight && s.r.sentAt.Equal(s.at) {
			break
		}
		p.order[0] = sent{}
		p.order = p.order[1:]
	}
	if len(p.order) == 0 || now.Sub(p.order[0].at) < c.cfg.Timeout {
		return
	}
	c.retries.Add(1)
	if a := p.cn.active; a >= 0 {
		p.silent[a] = true
	}
	limit := c.cfg.Retries * len(c.cfg.Brokers)
	for _, s := range p.order {
		if s.r.inFlight && s.r.sentAt.Equal(s.at) && now.Sub(s.at) >= c.cfg.Timeout {
			s.r.tries++
		}
	}
	p.requeue()
	q := p.queue[:0]
	for _, r := range p.queue {
		if r.tries >= limit {
			p.finish(r, "", false, p.gaveUp(r))
			continue
		}
		q = append(q, r)
	}
	clear(p.queue[len(q):])
	p.queue = q
	if p.cn.active >= 0 {
		c.elsewhere(p.cn, cl, "no answer")
	}
}

// finish ends r's future and lets the next submit with its key go.
func (p *pipeline) finish(r *asyncReq, ticket string, dup bool, err error) {
	if p.probe == r {
		p.probe = nil
	}
	f := r.fut
	f.ticket, f.dup, f.err = ticket, dup, err
	close(f.done)
	held := p.keys[f.key]
	if len(held) > 1 {
		p.keys[f.key] = held[1:]
		p.released = append(p.released, held[1])
	} else {
		delete(p.keys, f.key)
	}
	p.release(1)
}

// release frees n window slots and counts n submits out.
func (p *pipeline) release(n int) {
	for range n {
		<-p.slots
	}
	p.mu.Lock()
	p.unfinished -= n
	if p.unfinished == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
	p.mu.Unlock()
}

// failAll ends every submit held with err.
func (p *pipeline) failAll(err error) {
	p.take()
	for _, held := range p.keys {
		for _, r := range held {
			f := r.fut
			f.err = err
			close(f.done)
			p.release(1)
		}
	}
	clear(p.keys)
	clear(p.flight)
	p.probe = nil
	p.refusing = refusing{}
	p.queue, p.later, p.order, p.released = nil, nil, nil, nil
}

// shut refuses submits from now on and ends those held with err.
func (p *pipeline) shut(err error) {
	p.mu.Lock()
	p.closed, p.closeErr = true, err
	p.mu.Unlock()
	p.failAll(err)
}
