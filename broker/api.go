package broker

import (
	"log/slog"
	"time"

	"github.com/titanicmq/titanic/broker/curve"
)

// Config configures a Broker. Zero fields take the defaults of
// DefaultConfig.
type Config struct {
	// Endpoints are bound by the ROUTER socket that serves both clients and
	// workers, as the Guide's broker does (e.g. "tcp://127.0.0.1:5555").
	Endpoints []string
	// HeartbeatInterval and HeartbeatLiveness are 7/MDP's heartbeat
	// settings: a worker silent for Interval × Liveness is gone.
	HeartbeatInterval time.Duration
	HeartbeatLiveness int
	// LeaseTimeout bounds how long a busy worker that does NOT send
	// heartbeats while busy (the Guide's synchronous workers) may stay
	// silent before its job is taken back. Workers that heartbeat while busy
	// (ours do) keep their lease for as long as they are alive.
	LeaseTimeout time.Duration
	// RequestExpiry is how long a plain (non-durable) MDP request waits for
	// a worker before it is dropped and counted; 7/MDP has no error reply.
	RequestExpiry time.Duration
	// MaxQueue bounds plain MDP requests queued per service.
	MaxQueue int
	// MaxQueuedBytes bounds the bytes of all plain requests queued, so
	// that requests for many services cannot exhaust memory.
	MaxQueuedBytes int
	// MaxMsgSize is ZMQ_MAXMSGSIZE for the ROUTER socket: a peer that
	// sends a larger frame is disconnected. It bounds the whole message
	// too, plus EnvelopeRoom: libzmq bounds frames only, so a message of
	// many frames under the limit is received, then dropped past it and
	// counted (Stats.TooLarge), copied no further. Unlimited (-1): no
	// limit; zero: the default. With Curve it must be at least
	// MinCurveMsgSize.
	MaxMsgSize int64
	// MaxFrames bounds the frames of one message, on the ROUTER and the
	// peering sockets: ZMQ_MAXMSGSIZE bounds each frame, not how many,
	// so without it a message of a million empty frames would be taken
	// in whole. A longer message is discarded frame by frame as it is
	// read and counted (Counters.TooManyFrames). Zero:
	// zsock.DefaultMaxFrames (1024; titanic's messages have fewer than 16).
	MaxFrames int
	// RefuseFrames, when set, answers a client request discarded for its
	// frame count whose service a Handler serves: service, the start of
	// its body (at most two frames, each cut to 255 bytes: a key, say)
	// and its frame count give the answer's body; nil leaves it
	// unanswered. A worker that sends too many frames is disconnected
	// and its attempt fails, whatever this says.
	RefuseFrames func(service string, head [][]byte, frames int) [][]byte
	// Peering, when set, makes the broker lend workers to and borrow
	// workers from other clusters' brokers (see peer.go).
	Peering *PeeringConfig
	// Logger receives the broker's logs.
	Logger *slog.Logger
	// Curve, when set, makes the ROUTER a CURVE server: traffic is
	// encrypted, and only clients and workers whose public key Allow
	// accepts complete the handshake (the others cannot send anything:
	// no submit, lookup or READY). Nil: plain TCP.
	Curve *CurveConfig
}

// EnvelopeRoom is what a message may carry past MaxMsgSize: its
// envelope and command frames around a body of the largest frame.
const EnvelopeRoom = 64 << 10

// Unlimited, in MaxMsgSize, means no limit (zero means the default, as in
// every field); titanic.Config and the config file spell it the same way.
const Unlimited = -1

// DefaultCurveDomain is the ZAP domain of the broker's ROUTER.
const DefaultCurveDomain = "titanic"

// MinCurveMsgSize is the least MaxMsgSize that CURVE allows: libzmq applies
// ZMQ_MAXMSGSIZE to the handshake commands as well (HELLO is 200 bytes,
// INITIATE some 250 plus metadata). Under CURVE each message also carries
// some 33 bytes of box overhead on the wire, which count against it.
const MinCurveMsgSize = 1024

// CurveConfig is the broker's CURVE security.
type CurveConfig struct {
	// Server is the broker's key pair (Z85). Clients and workers need
	// its public key.
	Server curve.KeyPair
	// Allow reports whether a client or worker with this Z85 public key
	// may connect; required. Typically (*curve.Allowlist).Allowed, whose
	// Reload takes effect for the next handshakes (connections already
	// made stay up). It is called on the ZAP handler's goroutine and must
	// be fast and safe for concurrent use with whatever changes its
	// answer.
	Allow func(pubZ85 string) bool
	// Domain is the ZAP domain of the ROUTER. Empty: DefaultCurveDomain.
	Domain string
	// DenyLogEvery is the least time between two logs of denied
	// handshakes (each is counted: Broker.AuthStats). Zero: 10s.
	DenyLogEvery time.Duration

	// zap is this broker's handler, made by New (config copy).
	zap *curve.ZAPHandler
}

// DefaultConfig returns the Guide's timings and this project's limits.
func DefaultConfig() Config {
	return Config{
		Endpoints:         []string{"tcp://127.0.0.1:5555"},
		HeartbeatInterval: 2500 * time.Millisecond,
		HeartbeatLiveness: 3,
		LeaseTimeout:      60 * time.Second,
		RequestExpiry:     30 * time.Second,
		MaxQueue:          10000,
		MaxQueuedBytes:    256 << 20,
		MaxMsgSize:        32 << 20,
		Logger:            slog.Default(),
	}
}

// Client is the route back to a client that sent a request. It is
// comparable and opaque; hand it back to Broker.Reply.
type Client struct{ id string }

// String is a printable form of the route, for logs.
func (c Client) String() string { return routeString(c.id) }

// Request is a client request for a service owned by an in-process Handler.
type Request struct {
	Client  Client
	Service string
	// Body holds the frames after the service frame; the handler owns them.
	Body [][]byte
	// From is the IP address the request came from (ZeroMQ's
	// Peer-Address of a TCP client; empty over ipc or inproc), for a
	// handler registered with HandleFrom only: a handler of services that
	// only some hosts may call decides by it.
	From string
	// Unread: the broker's last answer to this client could not be
	// queued (its pipe is full: it does not read its answers), so an
	// answer to this request will most likely be dropped too. Titanic
	// refuses such a client's submits rather than commit tickets it
	// would never learn of.
	Unread bool
}

// Handler serves in-process services (titanic.*). It is registered for a
// service-name prefix before Run.
type Handler interface {
	// ServeMDP is called on the broker's loop goroutine for each client
	// request for a service under the handler's prefix. It must not block.
	// A non-nil result is sent to the client at once as the reply body;
	// nil means the handler will answer later with Broker.Reply.
	ServeMDP(req Request) [][]byte
	// Serves reports whether the handler serves service, a name under
	// its prefix: 8/MMI's mmi.service answers 200 for it, 404 for a name
	// the handler would refuse. Called on the broker's loop; must not
	// block.
	Serves(service string) bool
}

// Job is a unit of durable work handed to a worker.
type Job struct {
	// Token goes to the worker as the REQUEST's client-address frame and
	// must come back in its REPLY. Titanic uses the ticket ID.
	Token []byte
	Body  [][]byte
	// Tag is the Source's own mark of this dispatch, handed back
	// unchanged in its Lease: titanic tells by it a lease of the
	// ticket's current dispatch from an older one that ends late.
	Tag uint64
}

// Lease is one dispatch of a Job to one worker.
type Lease struct {
	ID      uint64 // unique per broker run
	Service string
	Token   []byte
	// Worker names the worker that took the job, as Next was told.
	Worker string
	Tag    uint64 // the Job's
}

// Source supplies durable work to the broker's workers and learns how each
// dispatch ended. All methods are called on the broker's loop goroutine and
// must not block.
type Source interface {
	// Next returns the next job for service, or false when there is none.
	// It is called when a worker of service is idle; worker names the one
	// that takes the job (WorkerName of its routing identity, or "peer
	// NAME" for a job forwarded to a peer cluster), for the attempt
	// history and logs.
	Next(service, worker string) (Job, bool)
	// Completed hands over a worker's reply. The worker stays reserved
	// (not given new work) until Broker.Release(lease.ID) is called: a
	// Source may free it only once the reply is durable, or at once (as
	// titanic does, so that workers never wait for the disk); Release may
	// be called from Completed itself.
	Completed(lease Lease, reply [][]byte)
	// Failed reports that the attempt ended without a reply: the worker
	// died, disconnected, sent FAIL, or its lease expired. reason says
	// which, for people.
	Failed(lease Lease, reason string)
	// Unsent reports that the job Next returned never left: its send to
	// the worker or peer failed at once (the worker was gone, or its
	// queue was full). No attempt was made, so none should be counted.
	Unsent(lease Lease, reason string)
	// Workers reports the number of registered workers of a service when
	// it changes (0 when the last one goes).
	Workers(service string, n int)
}

// Gate decides whether this broker serves. In a replicated deployment only
// the active node (Binary Star active, raft leader) does; the others refuse
// client work and send workers away, so that both move on to the active
// one by themselves. Methods are called on the broker's loop and must not
// block.
type Gate interface {
	// Admit is called for each client request and reports whether to
	// serve it. It may change the node's role: in Binary Star a client
	// request is the backup's vote to take over. A gate may admit some
	// services (administration) on every node.
	Admit(service string) bool
	// Active reports whether the node serves now, with no side effect.
	// While it is false, registered workers are sent DISCONNECT and
	// READY is answered with DISCONNECT.
	Active() bool
	// Refusal is the answer to a request Admit refused; nil drops it
	// (7/MDP has no error reply: the client's timeout sees it).
	Refusal(service string) [][]byte
}
