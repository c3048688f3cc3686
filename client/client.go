// Package client is the Go client of titanic: durable requests through
// 9/TSP (Submit, Status, Reply, CloseTicket, List) and plain 7/MDP requests
// (Request), over MDPC01 with the Guide's Lazy Pirate reliability: each try
// waits Timeout for an answer, then the socket is dropped and the request
// is sent again, to the next broker of the list.
//
// # What it owns
//
// A Client owns one DEALER socket and the goroutine that uses it; calls
// from any number of goroutines are handed to that goroutine and served one
// at a time (an MDP client has one request in flight: replies carry no
// request id). Use several Clients for parallel requests.
//
// # Retries and duplicates
//
// Submit always goes through titanic.submit with an idempotency key (a
// random one when the caller gives none), so a submit resent after a lost
// answer returns the first ticket instead of creating a second. Lookups and
// closes are idempotent. Request, a plain MDP request, is not durable: a
// resent request may run twice on the workers, as with the Guide's Lazy
// Pirate client.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker/curve"
	"github.com/titanicmq/titanic/broker/mdp"
)

// Config configures a Client. Zero fields take DefaultConfig's values.
type Config struct {
	// Brokers are the broker endpoints ("tcp://host:port"), in failover
	// order.
	Brokers []string
	// Timeout is how long one try waits for an answer.
	Timeout time.Duration
	// Retries is how many tries a call makes per broker of the list
	// before it fails with ErrUnavailable.
	Retries int
	// Logger receives the client's logs (retries, failovers).
	Logger *slog.Logger
	// Notify are the brokers' notification endpoints (titanic broker
	// --notify-listen), which Wait subscribes to.
	Notify []string
	// ID identifies the client to the broker (presence: titanic.hello
	// every PresenceInterval, titanic.bye on Close); empty: anonymous.
	ID string
	// PresenceInterval is the hello period (default 5s; the broker
	// forgets a client silent for 15s).
	PresenceInterval time.Duration
	// Context is the ZeroMQ context for the client's socket. Nil: the
	// client makes its own (one I/O thread per client). Programs with many
	// clients share one; the caller then terminates it after closing them.
	Context *zmq.Context
	// Curve, when set, makes the client's socket a CURVE client of the
	// brokers (all of them share one server key): encrypted, and let in
	// only when the brokers' allowlist holds Curve.Public. Nil: plain
	// TCP. A broker that denies the key answers nothing: calls time out
	// with ErrUnavailable.
	Curve *CurveClient
}

// CurveClient holds the Z85 keys of a CURVE client: the broker's public
// key (ServerPublic) and the client's own pair (Public, Secret).
type CurveClient = curve.ClientKeys

// DefaultConfig returns the Guide's Lazy Pirate settings.
func DefaultConfig() Config {
	return Config{
		Brokers: []string{"tcp://127.0.0.1:5555"},
		Timeout: 2500 * time.Millisecond,
		Retries: 3,
		Logger:  slog.Default(),
	}
}

// Stats counts what a Client did.
type Stats struct {
	Calls     uint64 // calls answered by a broker
	Retries   uint64 // tries that timed out and were sent again
	Failovers uint64 // moves to another broker
	Stale     uint64 // answers dropped as not matching the request
	Refusals  uint64 // answers "not active" from a passive or follower broker
	Notices   uint64 // notifications that woke a Wait
}

// Client talks to titanic brokers. It is safe for concurrent use.
type Client struct {
	cfg   Config
	log   *slog.Logger
	calls chan *call
	quit  chan struct{}
	done  chan struct{}
	once  sync.Once

	calls_, retries, failovers, stale, refusals, notices atomic.Uint64
}

type call struct {
	ctx     context.Context
	service string
	body    [][]byte
	res     chan result
}

type result struct {
	frames [][]byte
	err    error
}

// New returns a Client. It does not connect until the first call.
func New(cfg Config) (*Client, error) {
	d := DefaultConfig()
	if len(cfg.Brokers) == 0 {
		cfg.Brokers = d.Brokers
	}
	for _, b := range cfg.Brokers {
		if b == "" {
			return nil, fmt.Errorf("%w: empty broker endpoint", ErrConfig)
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = d.Timeout
	}
	if cfg.Retries <= 0 {
		cfg.Retries = d.Retries
	}
	if cfg.Logger == nil {
		cfg.Logger = d.Logger
	}
	if cfg.PresenceInterval <= 0 {
		cfg.PresenceInterval = 5 * time.Second
	}
	if cfg.Curve != nil {
		if err := cfg.Curve.Validate(); err != nil {
			return nil, fmt.Errorf("%w: curve: %w", ErrConfig, err)
		}
		keys := *cfg.Curve
		cfg.Curve = &keys
	}
	c := &Client{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "client"),
		calls: make(chan *call),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go c.run()
	return c, nil
}

// Close stops the client; calls in progress fail with ErrClosed.
func (c *Client) Close() error {
	c.once.Do(func() { close(c.quit) })
	<-c.done
	return nil
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{Calls: c.calls_.Load(), Retries: c.retries.Load(), Failovers: c.failovers.Load(), Stale: c.stale.Load(), Refusals: c.refusals.Load(), Notices: c.notices.Load()}
}

// do sends one request for service and returns the reply body.
func (c *Client) do(ctx context.Context, service string, body [][]byte) ([][]byte, error) {
	cl := &call{ctx: ctx, service: service, body: body, res: make(chan result, 1)}
	select {
	case c.calls <- cl:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.quit:
		return nil, ErrClosed
	}
	r := <-cl.res
	return r.frames, r.err
}

// conn is the socket goroutine's state.
type conn struct {
	zctx   *zmq.Context
	sock   *zmq.Socket
	broker int // index in Brokers of the current (or next) connection
	curve  *CurveClient
}

// run owns the ZeroMQ context and socket.
func (c *Client) run() {
	defer close(c.done)
	zctx := c.cfg.Context
	if zctx == nil {
		var err error
		if zctx, err = zmq.NewContext(); err != nil {
			c.failAll(fmt.Errorf("zmq context: %w", err))
			return
		}
		defer func() { _ = zctx.Term() }()
	}
	cn := &conn{zctx: zctx, curve: c.cfg.Curve}
	defer cn.drop()
	var tick <-chan time.Time
	if c.cfg.ID != "" {
		t := time.NewTicker(c.cfg.PresenceInterval)
		defer t.Stop()
		tick = t.C
		c.presence(cn, "titanic.hello", c.cfg.Timeout)
	}
	for {
		select {
		case <-c.quit:
			if c.cfg.ID != "" && cn.sock != nil {
				c.presence(cn, "titanic.bye", min(c.cfg.Timeout, 500*time.Millisecond))
			}
			return
		case <-tick:
			c.presence(cn, "titanic.hello", c.cfg.Timeout)
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
	if service == "titanic.bye" {
		quit = nil // already closing: let the bye go out
	}
	cl := &call{ctx: ctx, service: service, body: [][]byte{[]byte(c.cfg.ID)}}
	if _, err := c.serveOnce(cn, cl, quit); err != nil {
		c.log.Debug("presence", "service", service, "err", err)
	}
}

// failAll answers every call with err until Close.
func (c *Client) failAll(err error) {
	for {
		select {
		case <-c.quit:
			return
		case cl := <-c.calls:
			cl.res <- result{nil, err}
		}
	}
}

func (cn *conn) drop() {
	if cn.sock != nil {
		_ = cn.sock.SetLinger(0)
		_ = cn.sock.Close()
		cn.sock = nil
	}
}

func (cn *conn) connect(endpoint string) error {
	s, err := cn.zctx.NewSocket(zmq.DEALER)
	if err != nil {
		return fmt.Errorf("new socket: %w", err)
	}
	_ = s.SetLinger(0)
	if cn.curve != nil {
		if err := cn.curve.Apply(s); err != nil {
			_ = s.Close()
			return fmt.Errorf("socket for %s: %w", endpoint, err)
		}
	}
	if err := s.Connect(endpoint); err != nil {
		_ = s.Close()
		return fmt.Errorf("connect %s: %w", endpoint, err)
	}
	cn.sock = s
	return nil
}

// pollSlice bounds how long the socket goroutine waits without looking at
// the caller's context and Close.
const pollSlice = 50 * time.Millisecond

// serve runs the Lazy Pirate loop for one call.
func (c *Client) serve(cn *conn, cl *call) ([][]byte, error) {
	tries := c.cfg.Retries * len(c.cfg.Brokers)
	// Refusals by brokers that are not active cost no try, but they are
	// bounded by the time the tries would take.
	budget := time.Now().Add(time.Duration(tries) * c.cfg.Timeout)
	backoff := 10 * time.Millisecond
	msg := mdp.ClientRequest(cl.service, cl.body...)
	for try := 1; ; {
		if cn.sock == nil {
			if err := cn.connect(c.cfg.Brokers[cn.broker]); err != nil {
				return nil, err
			}
		}
		// A connecting DEALER queues the message (ZMQ_IMMEDIATE is off),
		// so a failed send means a full pipe: treat it as an unanswered
		// try.
		var frames [][]byte
		_, err := cn.sock.SendMessageDontwait(msg)
		if err == nil {
			frames, err = c.await(cn, cl, c.quit)
		} else {
			err = fmt.Errorf("%w: send: %w", errTimeout, err)
		}
		if err == nil && !notActive(frames) && !notReady(frames) {
			c.calls_.Add(1)
			return frames, nil
		}
		// Whatever happened, the socket may hold a late answer: drop it
		// so it cannot be taken for the answer to the next call.
		cn.drop()
		if err == nil {
			// A passive or follower broker: the active one is elsewhere
			// (or being elected): move on after a short pause. An active
			// broker that is not ready yet (taking over): ask it again.
			c.refusals.Add(1)
			if time.Now().After(budget) {
				return nil, fmt.Errorf("%w: %s: no active broker among %d within %s", ErrUnavailable, cl.service, len(c.cfg.Brokers), time.Duration(tries)*c.cfg.Timeout)
			}
			if !notReady(frames) {
				c.next(cn, cl, "broker not active")
			}
			t := time.NewTimer(backoff)
			select {
			case <-cl.ctx.Done():
				t.Stop()
				return nil, cl.ctx.Err()
			case <-c.quit:
				t.Stop()
				return nil, ErrClosed
			case <-t.C:
			}
			backoff = min(2*backoff, c.cfg.Timeout/2)
			continue
		}
		if !errors.Is(err, errTimeout) {
			return nil, err
		}
		if try == tries {
			return nil, fmt.Errorf("%w: %s after %d tries of %s", ErrUnavailable, cl.service, tries, c.cfg.Timeout)
		}
		try++
		c.retries.Add(1)
		c.next(cn, cl, "no answer")
	}
}

// serveOnce sends one request and waits for its answer once: no retry,
// no failover.
func (c *Client) serveOnce(cn *conn, cl *call, quit <-chan struct{}) ([][]byte, error) {
	if cn.sock == nil {
		if err := cn.connect(c.cfg.Brokers[cn.broker]); err != nil {
			return nil, err
		}
	}
	if _, err := cn.sock.SendMessageDontwait(mdp.ClientRequest(cl.service, cl.body...)); err != nil {
		cn.drop()
		return nil, fmt.Errorf("send: %w", err)
	}
	frames, err := c.await(cn, cl, quit)
	if err != nil {
		cn.drop() // a late answer must not be taken for the next call's
	}
	return frames, err
}

// next moves to the next broker of the list (the same one if it is alone).
func (c *Client) next(cn *conn, cl *call, why string) {
	if len(c.cfg.Brokers) == 1 {
		c.log.Debug(why+", retrying", "service", cl.service)
		return
	}
	cn.broker = (cn.broker + 1) % len(c.cfg.Brokers)
	c.failovers.Add(1)
	c.log.Info(why+", failing over", "service", cl.service, "broker", c.cfg.Brokers[cn.broker])
}

// notReady reports a refusal by an active broker still taking over
// (titanic/ha: 500 + "not ready: ...").
func notReady(frames [][]byte) bool {
	return len(frames) == 2 && string(frames[0]) == "500" && strings.HasPrefix(string(frames[1]), "not ready")
}

// notActive reports a refusal by a broker that is not the active one
// (titanic.Refusal: 500 + "not active").
func notActive(frames [][]byte) bool {
	return len(frames) == 2 && string(frames[0]) == "500" && string(frames[1]) == "not active"
}

var errTimeout = errors.New("timeout")

// await waits for the answer to the request just sent.
func (c *Client) await(cn *conn, cl *call, quit <-chan struct{}) ([][]byte, error) {
	deadline := time.Now().Add(c.cfg.Timeout)
	poller := zmq.NewPoller()
	poller.Add(cn.sock, zmq.POLLIN)
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
		polled, err := poller.Poll(min(left, pollSlice))
		if err != nil {
			if zmq.AsErrno(err) == zmq.Errno(syscall.EINTR) {
				continue
			}
			return nil, fmt.Errorf("poll: %w", err)
		}
		if len(polled) == 0 {
			continue
		}
		frames, err := cn.sock.RecvMessageBytes(0)
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
