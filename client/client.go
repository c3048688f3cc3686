// Package client is the Go client of titanic: durable requests through
// 9/TSP (Submit, Status, Reply, CloseTicket, List) and plain 7/MDP requests
// (Request), over MDPC01 with the Guide's Lazy Pirate reliability: each try
// waits Timeout for an answer, then the socket is dropped and the request
// is sent again.
//
// # What it owns
//
// A Client owns one DEALER socket per broker endpoint and the goroutine
// that uses them; calls from any number of goroutines are handed to that
// goroutine and served one at a time (an MDP client has one request in
// flight: replies carry no request id). Use several Clients for parallel
// requests, or SubmitAsync: pipelined submits have a DEALER per broker
// of their own and a goroutine that keeps many in flight (pipeline.go).
//
// # Finding the active broker
//
// With one endpoint, every try goes to it. With several (a Binary Star
// pair, a raft group), the client does not know at first which one serves
// (a CLI command is a new process each time), so it asks all of them at
// once (titanic.cluster.role, tsp.Role: an admin question that every node
// answers and that is no Binary Star vote), sends the request to the one
// that serves, and keeps sending to it until it fails to answer or refuses
// ("500 not active"); then it asks them all again. A node that is down
// costs nothing while another serves. A passive node is sent the request
// (which makes it take over if its peer is silent too) only after the
// other node let Timeout pass without answering: Binary Star's rule for
// clients, which keeps a cut link between the servers from making two
// actives. When no broker answers the question at all (brokers that do
// not know it), the client falls back to the Guide's Lazy Pirate: the
// request itself, to each broker of the list in turn.
//
// # Retries and duplicates
//
// A request goes to one broker at a time, never to two at once: only the
// question is sent to all. Submit always goes through titanic.submit with
// an idempotency key (a random one when the caller gives none), so a
// submit resent after a lost answer (to the same broker, or after a
// failover to the other) returns the first ticket instead of creating a
// second. Lookups and closes are idempotent. Request, a plain MDP request,
// is not durable: a resent request may run twice on the workers, as with
// the Guide's Lazy Pirate client.
//
// # Why a call failed
//
// A call no broker served fails with an *UnavailableError (errors.Is
// ErrUnavailable) that says, per endpoint, what was seen: each socket to
// a broker is watched by a ZeroMQ socket monitor (watch.go), which tells
// a refused connection, a refused CURVE key, a failed handshake, a
// connection the broker closed right after the request, and again right
// after it was sent again alone (over its ZMQ_MAXMSGSIZE; a connection
// cut once only has the request sent again) and a broker that went away
// from plain silence. A call stops before its tries are spent when every
// broker refused it for good (key, a handshake failed for a reason it
// gave, size): resending cannot help; or when every broker refused its
// connections, or closed each during its handshake, for RefusedWait (2s
// on the defaults) and still does: nothing listens, or will not take
// this client. A broker being restarted refuses for a moment only, and a
// load balancer closes connections while no backend is healthy, so a
// refusal shorter than that keeps the Lazy Pirate tries.
//
// # Wire vocabulary
//
// The codes, service names, refusal kinds and notification events are
// package titanic/tsp, which the broker uses too; the client imports no
// broker package beyond the wire ones (broker/mdp's frames, broker/zsock's
// socket plumbing, broker/curve's keys). It acts on a refusal's kind (the
// token before the first ':' of its text), never on its words.
package client

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/titanicmq/titanic/broker/curve"
	"github.com/titanicmq/titanic/broker/zsock"
)

// Config configures a Client. Zero fields take DefaultConfig's values.
type Config struct {
	// Brokers are the broker endpoints ("tcp://host:port"): one broker,
	// or the nodes of one pair or group (see "Finding the active
	// broker"). The order matters only to brokers that do not answer the
	// role question: they are tried in turn.
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
	// Context is the ZeroMQ context (I/O thread) of the client's
	// sockets. Nil: New makes one for the client, on the calling thread,
	// and Close closes it. Programs with many clients share one
	// (zsock.NewContext), and close it after closing the clients.
	Context *zsock.Context
	// Curve, when set, makes the client's socket a CURVE client of the
	// brokers (all of them share one server key): encrypted, and let in
	// only when the brokers' allowlist holds Curve.Public. Nil: plain
	// TCP. A broker that denies the key refuses the handshake: calls fail
	// at once with an *UnavailableError whose cause is CauseAuth.
	Curve *CurveClient
	// MaxPending bounds the submits SubmitAsync keeps unfinished (sent
	// or waiting to be sent) on its connection; SubmitAsync blocks while
	// that many are. Default DefaultMaxPending. Keep it under the
	// brokers' per-client in-flight limit (limits.per_client_inflight),
	// beyond which they answer busy and submits are sent again later.
	MaxPending int
	// RefusedWait is how long every broker must refuse connections
	// (nothing listens: each connection attempt is refused, again and
	// again; or each connection is closed during its handshake without a
	// word, as a CURVE broker does with the wrong server key, and a load
	// balancer with no backend too) before a call gives up without
	// spending the rest of its tries. Default: all of one broker's tries but one, (Retries-1) x
	// Timeout, and at least DefaultRefusedWait (2s on the default
	// settings), so that a caller who asked for more patience keeps it;
	// negative: never, the tries are kept (the behaviour of earlier
	// releases). It only ends calls sooner: a broker that answers, or is
	// unreachable rather than refusing, keeps the tries.
	RefusedWait time.Duration
	// Direct sends every call to the first broker of Brokers without
	// asking which broker serves (the role question): for admin calls to
	// one node whatever its role, as a pair node's calls to its peer,
	// which must reach the peer also while it is passive. A broker that
	// refuses ("not active") is asked again until the tries' time is up.
	Direct bool
}

// CurveClient holds the Z85 keys of a CURVE client: the broker's public
// key (ServerPublic) and the client's own pair (Public, Secret).
type CurveClient = curve.ClientKeys

// Defaults of Config.
const (
	// DefaultTimeout is a try's timeout. A live broker answers in
	// milliseconds, and with several brokers a dead one costs nothing
	// while another serves (the client asks them all at once), so the
	// timeout is paid only when the active broker dies during a call, or
	// before the call's vote for a passive node (Binary Star: only after
	// the other failed to answer in time). 1s is the pair's default peer
	// timeout (two missed 500ms heartbeats): a vote after it is not
	// refused as too early, and a stall of the active shorter than both
	// makes no failover. (The Guide's Lazy Pirate waits 2.5s.)
	DefaultTimeout = time.Second
	// DefaultRetries is the number of tries per broker.
	DefaultRetries = 3
	// DefaultRefusedWait is RefusedWait's least default. A broker being
	// restarted refuses connections for about a second (the old process
	// is gone, the new one not listening yet), and a pair's passive
	// node does not refuse them at all (it answers "not active"), so
	// twice that tells a broker that is not there from one coming back,
	// and a call against brokers that are all down ends in about 2s
	// instead of Retries tries of Timeout per broker (9s for three).
	DefaultRefusedWait = 2 * time.Second
)

// DefaultConfig returns the default settings: one broker on localhost,
// DefaultTimeout and DefaultRetries.
func DefaultConfig() Config {
	return Config{
		Brokers: []string{"tcp://127.0.0.1:5555"},
		Timeout: DefaultTimeout,
		Retries: DefaultRetries,
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
	zc    *zsock.Context // cfg.Context, or the client's own
	ownZC bool           // zc is the client's own: Close closes it

	pipeOnce sync.Once
	pipeline atomic.Pointer[pipeline] // pipelined submits, once started

	calls_, retries, failovers, stale, refusals, notices atomic.Uint64
}

type call struct {
	ctx     context.Context
	service string
	body    [][]byte
	res     chan result
	// uncertain: a send of the request went unanswered (its try ran out,
	// or its connection was cut with it in flight), so the broker may
	// have applied it; the answer the call returns is a later send's.
	// Sends answered "not active" or "not ready" were not applied and do
	// not count. The run goroutine's until the result is sent (read by
	// doResent after it).
	uncertain bool
}

type result struct {
	frames [][]byte
	err    error
}

// maxID bounds Config.ID: what the broker takes in a hello
// (titanic.MaxClientID).
const maxID = 128

// New returns a Client. It does not connect until the first call; its
// connections are made by the I/O thread of Config.Context, or of its own
// context, started here on the calling thread (whose network namespace
// the connections then use).
func New(cfg Config) (*Client, error) {
	d := DefaultConfig()
	if len(cfg.Brokers) == 0 {
		cfg.Brokers = d.Brokers
	}
	for _, b := range cfg.Brokers {
		if err := CheckEndpoint(b); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	for _, n := range cfg.Notify {
		if err := CheckEndpoint(n); err != nil {
			return nil, fmt.Errorf("%w: notify: %w", ErrConfig, err)
		}
	}
	if len(cfg.ID) > maxID {
		// The broker refuses the hello of a longer id, and the client
		// would never be present (found by an outside-in tester).
		return nil, fmt.Errorf("%w: id of %d bytes: at most %d", ErrConfig, len(cfg.ID), maxID)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = d.Timeout
	}
	if cfg.Retries <= 0 {
		cfg.Retries = d.Retries
	}
	if cfg.RefusedWait == 0 {
		cfg.RefusedWait = max(DefaultRefusedWait, time.Duration(cfg.Retries-1)*cfg.Timeout)
	}
	if cfg.Logger == nil {
		cfg.Logger = d.Logger
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
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
		zc:    cfg.Context,
	}
	if c.zc == nil {
		zc, err := zsock.NewContext()
		if err != nil {
			return nil, err
		}
		c.zc, c.ownZC = zc, true
	}
	go c.run()
	return c, nil
}

// Close stops the client; calls in progress and pipelined submits not
// finished fail with ErrClosed, and so does a Wait in progress (Close
// waits for it to let go of its socket).
func (c *Client) Close() error {
	c.once.Do(func() { close(c.quit) })
	<-c.done
	if p := c.pipeline.Load(); p != nil {
		p.bell.Ring()
		<-p.done
	}
	if c.ownZC {
		return c.zc.Close()
	}
	return nil
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{Calls: c.calls_.Load(), Retries: c.retries.Load(), Failovers: c.failovers.Load(), Stale: c.stale.Load(), Refusals: c.refusals.Load(), Notices: c.notices.Load()}
}

// do sends one request for service and returns the reply body.
func (c *Client) do(ctx context.Context, service string, body [][]byte) ([][]byte, error) {
	frames, _, err := c.doResent(ctx, service, body)
	return frames, err
}

// doResent is do that also tells whether the request was sent more than
// once (a try unanswered in time, a connection cut): the answer is then
// the last send's, which the broker may have judged on what an earlier
// send did.
func (c *Client) doResent(ctx context.Context, service string, body [][]byte) ([][]byte, bool, error) {
	cl := &call{ctx: ctx, service: service, body: body, res: make(chan result, 1)}
	select {
	case c.calls <- cl:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	case <-c.quit:
		return nil, false, ErrClosed
	}
	r := <-cl.res
	// The run goroutine is done with cl once it sent r: an answer after
	// a send that went unanswered may be judged on what that send did.
	return r.frames, r.err == nil && cl.uncertain, r.err
}
