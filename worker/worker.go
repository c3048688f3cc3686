package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/titanicmq/titanic/broker/curve"
	"github.com/titanicmq/titanic/broker/mdp"
	"github.com/titanicmq/titanic/broker/zsock"
)

// Handler serves one request: it gets the body frames of a REQUEST and
// returns the body frames of the REPLY, or an error, which is sent to the
// broker as FAIL with the error's text. ctx is cancelled when Run stops
// (at once, or when Config.DrainTimeout has passed). The handler owns
// request. It runs on a goroutine of its own; each slot (see
// Config.Concurrency) runs one request at a time, so with Concurrency N
// up to N calls run at once and the handler must be safe for that.
// SlotOf tells a call's slot from its context.
type Handler func(ctx context.Context, request [][]byte) ([][]byte, error)

// Defaults of the zero fields of Config.
const (
	DefaultHeartbeatInterval = 2500 * time.Millisecond
	DefaultLiveness          = 3
	DefaultReconnectDelay    = time.Second
)

// MaxReconnectDelay caps the reconnect backoff (unless ReconnectDelay is
// larger, which is then the cap).
const MaxReconnectDelay = 5 * time.Second

// MaxConcurrency bounds Config.Concurrency: each slot holds up to five
// ZeroMQ sockets (its DEALER, its monitor's pair and its doorbell's), and
// a ZeroMQ context holds at most zsock.MaxSockets (a Config.Context made
// otherwise, libzmq's default of 1023: then fewer slots fit).
const MaxConcurrency = 256

// MaxReason bounds the reason frame of a FAIL, in bytes.
const MaxReason = 1024

// shutdownLinger is how long the final DISCONNECT may wait to be sent.
const shutdownLinger = 250 * time.Millisecond

// mmiPrefix is reserved for the broker's management services (8/MMI).
const mmiPrefix = "mmi."

// ErrConfig is wrapped by the errors of New for an invalid Config.
var ErrConfig = errors.New("invalid worker config")

// ErrRunning is returned by Run while another Run of the same Worker is
// running.
var ErrRunning = errors.New("worker already running")

// Config configures a Worker. Zero fields take defaults.
type Config struct {
	// Brokers are the endpoints to connect to (e.g. "tcp://127.0.0.1:5555"),
	// in failover order: each reconnect moves to the next one, in a ring.
	Brokers []string
	// Service is the service the worker registers (1 to 255 bytes, not
	// under the "mmi." prefix 8/MMI reserves). A titanic broker also
	// refuses "titanic." services, which it answers itself; a Guide
	// broker takes them (the Guide's Titanic server is a worker of
	// them), so the library leaves them to the broker.
	Service string
	// HeartbeatInterval is 7/MDP's heartbeat interval; match the broker's.
	// Default 2500ms.
	HeartbeatInterval time.Duration
	// Liveness is how many intervals the broker may be silent before the
	// worker reconnects. Default 3.
	Liveness int
	// ReconnectDelay is the first backoff between rounds of reconnects
	// (each broker of Brokers tried once) that follow each other without
	// a word from a broker; within a round, and after a working
	// connection, the next broker is tried at once. Default 1s.
	ReconnectDelay time.Duration
	// Concurrency is how many requests the worker handles at once.
	// 7/MDP gives a worker one request at a time, so each is a slot: a
	// worker session of its own, with its own DEALER socket, READY,
	// heartbeats, reconnects and backoff, all calling the same Handler.
	// The broker sees Concurrency workers of the service. Default 1; at
	// most MaxConcurrency; negative is an error.
	Concurrency int
	// DrainTimeout is how long a slot that holds a request when Run's
	// context is done keeps its connection (heartbeating) for the
	// handler to finish; its REPLY or FAIL is sent, then DISCONNECT.
	// Idle slots disconnect at once, and a draining slot takes no new
	// request. When it passes, the handler's context is cancelled and
	// its result discarded (the broker redelivers a durable job). 0 (the
	// default): the handler's context is cancelled at once.
	DrainTimeout time.Duration
	// Logger receives the worker's logs (with a "slot" attribute).
	// Default slog.Default().
	Logger *slog.Logger
	// Context is the ZeroMQ context (I/O thread) of the worker's
	// sockets. Nil: each Run makes its own, on the thread that calls Run.
	// Programs with many workers share one (zsock.NewContext), and close
	// it after the workers' Run returned.
	Context *zsock.Context
	// Curve, when set, makes the worker's socket a CURVE client of the
	// brokers (all of them share one server key): encrypted, and let in
	// only when the brokers' allowlist holds Curve.Public. Nil: plain
	// TCP. A broker that denies the key refuses the handshake: the worker
	// logs so (as a failed handshake, CURVE on one side only), never
	// registers, and keeps reconnecting with its backoff.
	Curve *CurveClient
}

// CurveClient holds the Z85 keys of a CURVE client: the broker's public
// key (ServerPublic) and the worker's own pair (Public, Secret).
type CurveClient = curve.ClientKeys

// Stats are the worker's counters since New, summed over its slots.
type Stats struct {
	Requests    uint64 // REQUESTs received and handed to the Handler
	Replies     uint64 // REPLYs sent
	Failures    uint64 // FAILs sent (handler errors and panics)
	Reconnects  uint64 // connections after the first one
	Dropped     uint64 // broker messages dropped: malformed or unexpected
	Disconnects uint64 // DISCONNECTs received from a broker
	Timeouts    uint64 // connections given up because the broker was silent
	Heartbeats  uint64 // HEARTBEATs sent
	Discarded   uint64 // handler results not sent: connection lost or Run stopped
	SendErrors  uint64 // messages that could not be queued for sending
}

type counters struct {
	requests, replies, failures, reconnects, dropped, disconnects,
	timeouts, heartbeats, discarded, sendErrors atomic.Uint64
}

// Worker is an MDP worker for one service. Create it with New, then call
// Run. Stats may be called from any goroutine.
type Worker struct {
	cfg     Config
	handler Handler
	log     *slog.Logger
	running atomic.Bool
	c       counters
	// pollOnly makes every slot wait in zmq_poll, as when Go's poller
	// cannot watch a DEALER's descriptor: tests of that fallback set it.
	pollOnly bool
}

// New returns a Worker for cfg and h. Zero fields of cfg take their
// defaults; an invalid cfg is an error wrapping ErrConfig.
func New(cfg Config, h Handler) (*Worker, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(h); err != nil {
		return nil, err
	}
	cfg.Brokers = append([]string(nil), cfg.Brokers...)
	if cfg.Curve != nil {
		keys := *cfg.Curve
		cfg.Curve = &keys
	}
	return &Worker{
		cfg:     cfg,
		handler: h,
		log:     cfg.Logger.With("component", "worker", "service", cfg.Service),
	}, nil
}

func (c Config) withDefaults() Config {
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.Liveness == 0 {
		c.Liveness = DefaultLiveness
	}
	if c.ReconnectDelay == 0 {
		c.ReconnectDelay = DefaultReconnectDelay
	}
	if c.Concurrency == 0 {
		c.Concurrency = 1
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate(h Handler) error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("no broker endpoints"))
	}
	for _, ep := range c.Brokers {
		if err := zsock.CheckEndpoint(ep, false); err != nil {
			errs = append(errs, fmt.Errorf("broker endpoint %w", err))
		}
	}
	switch {
	case c.Service == "":
		errs = append(errs, errors.New("empty service name"))
	case len(c.Service) > mdp.MaxServiceName:
		errs = append(errs, fmt.Errorf("service name of %d bytes, limit %d", len(c.Service), mdp.MaxServiceName))
	case strings.HasPrefix(c.Service, mmiPrefix):
		errs = append(errs, fmt.Errorf("service %q: the %q services are reserved", c.Service, mmiPrefix))
	}
	if c.HeartbeatInterval < time.Millisecond {
		errs = append(errs, fmt.Errorf("heartbeat interval %s: want at least 1ms", c.HeartbeatInterval))
	}
	if c.Liveness < 1 {
		errs = append(errs, fmt.Errorf("liveness %d: want at least 1", c.Liveness))
	}
	if c.Concurrency < 1 || c.Concurrency > MaxConcurrency {
		errs = append(errs, fmt.Errorf("concurrency %d: want 1 to %d (0: the default, 1)", c.Concurrency, MaxConcurrency))
	}
	if c.DrainTimeout < 0 {
		errs = append(errs, fmt.Errorf("drain timeout %s: must not be negative", c.DrainTimeout))
	}
	if c.ReconnectDelay < 0 {
		errs = append(errs, fmt.Errorf("reconnect delay %s: must not be negative", c.ReconnectDelay))
	}
	if c.Curve != nil {
		if err := c.Curve.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("curve: %w", err))
		}
	}
	if h == nil {
		errs = append(errs, errors.New("nil handler"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	return nil
}

// Concurrency returns the number of slots: requests handled at once.
func (w *Worker) Concurrency() int { return w.cfg.Concurrency }

type slotKey struct{}

// SlotOf returns the slot, 0 to Concurrency-1, of the handler call whose
// context is ctx; false for a context not from a Worker.
func SlotOf(ctx context.Context) (int, bool) {
	i, ok := ctx.Value(slotKey{}).(int)
	return i, ok
}

// Stats returns a snapshot of the counters. It is safe for concurrent use.
func (w *Worker) Stats() Stats {
	return Stats{
		Requests:    w.c.requests.Load(),
		Replies:     w.c.replies.Load(),
		Failures:    w.c.failures.Load(),
		Reconnects:  w.c.reconnects.Load(),
		Dropped:     w.c.dropped.Load(),
		Disconnects: w.c.disconnects.Load(),
		Timeouts:    w.c.timeouts.Load(),
		Heartbeats:  w.c.heartbeats.Load(),
		Discarded:   w.c.discarded.Load(),
		SendErrors:  w.c.sendErrors.Load(),
	}
}

// backoff is the delay before the reconnect that follows attempt failed
// connections in a row (0 for the first).
func backoff(base time.Duration, attempt int) time.Duration {
	if attempt <= 0 {
		return 0
	}
	limit := max(base, MaxReconnectDelay)
	d := base
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// failReason is the FAIL reason frame for a handler error: its text, cut
// to MaxReason bytes on a UTF-8 boundary.
func failReason(err error) []byte {
	s := err.Error()
	if s == "" {
		s = "handler failed"
	}
	if len(s) > MaxReason {
		i := MaxReason
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i]
	}
	return []byte(s)
}
