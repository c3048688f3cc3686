package binarystar

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
)

// Defaults for Config fields left zero. They are the Guide's.
const (
	DefaultHeartbeat = time.Second
	DefaultMissed    = 2
)

// ErrClosed is returned by Run when it is called a second time: a Node runs
// once. To restart a server, build a new Node from the same Config.
var ErrClosed = errors.New("binarystar: node already run")

// Config configures a Node.
type Config struct {
	// Role is Primary or Backup; required.
	Role Role
	// Local is the endpoint this node's state PUB socket binds, e.g.
	// "tcp://*:5003"; required. The peer's Peer must reach it.
	Local string
	// Peer is the endpoint of the peer's state PUB socket, which this
	// node's SUB socket connects to, e.g. "tcp://10.0.0.2:5004"; required.
	Peer string
	// Heartbeat is how often the node publishes its state. Zero means
	// DefaultHeartbeat.
	Heartbeat time.Duration
	// Missed is how many heartbeats the peer may miss before it counts as
	// dead: peer timeout = Missed × Heartbeat. Zero means DefaultMissed.
	// Clients must wait at least this long before retrying on the other
	// server, or their vote comes too early and is refused.
	Missed int
	// Logger receives state changes and faults. Nil means slog.Default().
	Logger *slog.Logger
	// OnChange, if set, is called on the Run goroutine after each state
	// change, before the node publishes the new state, and before a client
	// request that caused the change is answered: the application can
	// prepare to serve before its first request. It must not call back
	// into the Node's ClientRequest, and it should return quickly: the
	// node neither heartbeats nor answers while it runs.
	OnChange func(old, new State)
	// OnPeer, if set, is called on the Run goroutine when the peer is
	// heard from after silence (true) and when it has been silent for the
	// peer timeout (false). It is information only: the FSM never changes
	// state on silence alone (see the package doc). Same rules as OnChange.
	OnPeer func(alive bool)
	// Curve, when set, secures the pair link with CURVE: the state PUB
	// binds as a CURVE server that lets in only the peer's key, and the
	// state SUB connects as a CURVE client that accepts only the peer's
	// server key. Both nodes must set it (each with its own pair and the
	// other's public key), or neither hears the other. Nil: plain TCP.
	Curve *CurveConfig
}

// CurveDomain is the ZAP domain of the state PUB socket under CURVE.
const CurveDomain = "titanic-pair"

// CurveConfig holds the Z85 keys that secure the pair link.
type CurveConfig struct {
	// Public and Secret are this node's key pair: the PUB serves with
	// it, and the SUB authenticates with it to the peer.
	Public string
	Secret string
	// PeerPublic is the peer's public key: the only client key the PUB
	// lets in, and the server key the SUB expects.
	PeerPublic string
}

func (c *CurveConfig) validate() error {
	if err := curve.Available(); err != nil {
		return err
	}
	var errs []error
	if err := (curve.KeyPair{Public: c.Public, Secret: c.Secret}).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("key pair: %w", err))
	}
	if err := curve.CheckKey(c.PeerPublic); err != nil {
		errs = append(errs, fmt.Errorf("peer public key: %w", err))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.Missed == 0 {
		c.Missed = DefaultMissed
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Curve != nil {
		keys := *c.Curve
		c.Curve = &keys
	}
	return c
}

// Validate reports every invalid setting of c. Zero values that have a
// default are invalid here; New fills them before it validates.
func (c Config) Validate() error {
	var errs []error
	if !c.Role.valid() {
		errs = append(errs, fmt.Errorf("role %v: must be Primary or Backup", c.Role))
	}
	if strings.TrimSpace(c.Local) == "" {
		errs = append(errs, errors.New("no local endpoint"))
	}
	if strings.TrimSpace(c.Peer) == "" {
		errs = append(errs, errors.New("no peer endpoint"))
	}
	if c.Local != "" && c.Local == c.Peer {
		// The node would hear its own state as its peer's.
		errs = append(errs, fmt.Errorf("local and peer endpoints are both %q", c.Local))
	}
	if c.Heartbeat <= 0 {
		errs = append(errs, fmt.Errorf("heartbeat %v: must be positive", c.Heartbeat))
	}
	if c.Missed < 1 {
		errs = append(errs, fmt.Errorf("missed %d: must be at least 1", c.Missed))
	}
	if c.Curve != nil {
		if err := c.Curve.validate(); err != nil {
			errs = append(errs, fmt.Errorf("curve: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}

// Stats are the node's counters since New.
type Stats struct {
	Sent       uint64 // state messages published
	SendErrors uint64 // state messages the PUB socket refused
	Received   uint64 // valid state messages from the peer
	Malformed  uint64 // messages on the state SUB that were dropped
}

// Node is one server of a Binary Star pair: the FSM plus the state
// PUB/SUB sockets that connect it to its peer. Run drives it; the other
// methods are safe from any goroutine.
type Node struct {
	cfg     Config
	log     *slog.Logger
	timeout time.Duration

	// The Run goroutine owns the FSM; these mirror what other goroutines
	// may read. peerExpiry is in nanoseconds since epoch (a monotonic
	// reading), 0 until Run starts the FSM.
	epoch      time.Time
	state      atomic.Uint32
	peerExpiry atomic.Int64
	peerAlive  atomic.Bool
	serving    atomic.Bool // Run's loop is live: its answers count
	backupVote atomic.Bool // AllowBackupVote

	started  atomic.Bool
	requests chan chan bool
	ready    chan struct{}
	done     chan struct{}

	sent, sendErrors, received, malformed atomic.Uint64
}

// New checks cfg and returns a Node in the starting state of its role. It
// opens no socket: Run does, on its own goroutine.
func New(cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "binarystar", "role", cfg.Role.String()),
		timeout:  time.Duration(cfg.Missed) * cfg.Heartbeat,
		epoch:    time.Now(),
		requests: make(chan chan bool),
		ready:    make(chan struct{}),
		done:     make(chan struct{}),
	}
	n.state.Store(uint32(cfg.Role.initial()))
	return n, nil
}

// State returns the node's current state. A change shows here once
// OnChange has returned.
func (n *Node) State() State { return State(n.state.Load()) }

// PeerTimeout returns Missed × Heartbeat, the silence after which the
// peer counts as dead.
func (n *Node) PeerTimeout() time.Duration { return n.timeout }

// PeerAlive reports whether the peer has been heard from within the peer
// timeout.
func (n *Node) PeerAlive() bool { return n.peerAlive.Load() }

// Ready is closed once Run has set up its sockets and started the FSM.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// Done is closed when Run has returned.
func (n *Node) Done() <-chan struct{} { return n.done }

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	return Stats{
		Sent:       n.sent.Load(),
		SendErrors: n.sendErrors.Load(),
		Received:   n.received.Load(),
		Malformed:  n.malformed.Load(),
	}
}

// ClientRequest feeds a CLIENT_REQUEST event to the FSM and reports
// whether this node may serve the request. On false the caller drops the
// request without replying, as the Guide does, so that the client times
// out and tries the other server. It returns false while Run is not
// running.
//
// It is called for every client request, so it answers without a round
// trip to the Run goroutine whenever the answer cannot change the state:
// ACTIVE always accepts (and has no way out but death), BACKUP refuses
// (unless AllowBackupVote), and PRIMARY or PASSIVE (or BACKUP so allowed)
// refuse while the peer is alive. Only a
// request that may be the client vote waits for the Run goroutine, which
// answers as soon as it has handled the event (and any OnChange).
func (n *Node) ClientRequest() bool {
	if !n.serving.Load() {
		return false
	}
	switch st := n.State(); {
	case st == StateActive:
		return true
	case st == StateBackup && !n.backupVote.Load():
		return false
	default:
		// The mirrored expiry can only lag behind the FSM's (expiry
		// only moves forward), so "not yet expired" here is certain.
		if exp := n.peerExpiry.Load(); exp != 0 && int64(time.Since(n.epoch)) < exp {
			return false
		}
	}
	reply := make(chan bool, 1)
	select {
	case n.requests <- reply:
	case <-n.done:
		return false
	}
	select {
	case ok := <-reply:
		return ok
	case <-n.done:
		return false
	}
}

// AllowBackupVote lets this node, in BACKUP, be voted active by a client
// once its peer has been silent for the timeout (see FSM.SetBackupVote);
// the pair's replication layer knows when that is safe. Safe from any
// goroutine.
func (n *Node) AllowBackupVote(on bool) { n.backupVote.Store(on) }

// Run opens the state sockets and runs the pair protocol until ctx is done
// (it then returns nil) or something fails. Its goroutine owns the PUB
// socket and the FSM; a second goroutine it starts and stops owns the SUB
// socket. Run may be called once.
func (n *Node) Run(ctx context.Context) (err error) {
	if !n.started.CompareAndSwap(false, true) {
		return fmt.Errorf("run called twice: %w", ErrClosed)
	}
	defer close(n.done)
	zctx, err := zmq.NewContext()
	if err != nil {
		return fmt.Errorf("zmq context: %w", err)
	}
	defer func() {
		if terr := zctx.Term(); terr != nil && err == nil {
			err = fmt.Errorf("terminate zmq context: %w", terr)
		}
	}()
	var zapDone <-chan struct{} // nil without CURVE: never ready
	var zap *curve.ZAPHandler
	if k := n.cfg.Curve; k != nil {
		// Bound before the PUB, in its context; closed (deferred) after
		// the PUB: libzmq lets every client in without a handler.
		peer := k.PeerPublic
		zap = curve.NewZAPHandler(curve.ZAPConfig{
			Allow:  func(key string) bool { return key == peer },
			Domain: CurveDomain,
			Logger: n.log,
		})
		if err := zap.Start(zctx); err != nil {
			return fmt.Errorf("pair zap handler: %w", err)
		}
		defer zap.Close()
		zapDone = zap.Done()
	}
	pub, err := n.openPub(zctx)
	if pub != nil {
		defer pub.Close()
	}
	if err != nil {
		return err
	}

	states := make(chan State, 16)
	readErr := make(chan error, 1)
	started := make(chan error, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.readPeer(zctx, stop, started, readErr, states)
	}()
	// Runs before pub.Close and Term: the reader must have closed its
	// socket, or Term would wait for it forever.
	defer func() {
		n.serving.Store(false)
		close(stop)
		wg.Wait()
	}()
	if err := <-started; err != nil {
		return err
	}

	fsm, err := NewFSM(n.cfg.Role, n.timeout)
	if err != nil {
		return err
	}
	fsm.Start(time.Now())
	n.mirrorExpiry(fsm)
	n.serving.Store(true)
	close(n.ready)
	n.log.Info("binary star running", "state", fsm.State().String(),
		"local", n.cfg.Local, "peer", n.cfg.Peer, "heartbeat", n.cfg.Heartbeat, "peer_timeout", n.timeout)
	err = n.loop(ctx, fsm, pub, states, readErr, zapDone)
	if err == nil && zap != nil && zap.Err() != nil {
		err = fmt.Errorf("pair zap handler: %w", zap.Err())
	}
	n.log.Info("binary star stopped", "state", fsm.State().String(), "error", err)
	return err
}

// openPub creates and binds the state publisher. It returns the socket even
// on error, so the caller closes it.
func (n *Node) openPub(zctx *zmq.Context) (*zmq.Socket, error) {
	pub, err := zctx.NewSocket(zmq.PUB)
	if err != nil {
		return nil, fmt.Errorf("state pub socket: %w", err)
	}
	// A state is stale a heartbeat later: never hold the process open to
	// deliver one.
	if err := pub.SetLinger(0); err != nil {
		return pub, fmt.Errorf("state pub linger: %w", err)
	}
	if k := n.cfg.Curve; k != nil {
		if err := curve.ApplyServer(pub, curve.KeyPair{Public: k.Public, Secret: k.Secret}, CurveDomain); err != nil {
			return pub, fmt.Errorf("state pub: %w", err)
		}
	}
	if err := pub.Bind(n.cfg.Local); err != nil {
		return pub, fmt.Errorf("bind state pub %s: %w", n.cfg.Local, err)
	}
	return pub, nil
}

// pollSlice bounds how long the reader blocks in a receive, and so how
// long Run takes to stop.
func (n *Node) pollSlice() time.Duration {
	// Never 0: a zero receive timeout would make the reader spin.
	return max(min(n.cfg.Heartbeat/2, 100*time.Millisecond), time.Millisecond)
}

// readPeer owns the SUB socket: it creates, reads and closes it on its own
// goroutine, and hands valid peer states to the loop. It reports on started
// whether the socket is set up, and on fail an error that ends Run.
func (n *Node) readPeer(zctx *zmq.Context, stop <-chan struct{}, started, fail chan<- error, states chan<- State) {
	sub, err := zctx.NewSocket(zmq.SUB)
	if err != nil {
		started <- fmt.Errorf("state sub socket: %w", err)
		return
	}
	defer sub.Close()
	if k := n.cfg.Curve; k != nil {
		keys := curve.ClientKeys{ServerPublic: k.PeerPublic, Public: k.Public, Secret: k.Secret}
		if err := keys.Apply(sub); err != nil {
			started <- fmt.Errorf("state sub: %w", err)
			return
		}
	}
	maxSize := int64(maxWireSize)
	if n.cfg.Curve != nil {
		maxSize = curveWireSize
	}
	if err := setupSub(sub, n.cfg.Peer, n.pollSlice(), maxSize, n.cfg.Heartbeat, n.timeout); err != nil {
		started <- err
		return
	}
	started <- nil

	var lastWarn time.Time
	for {
		select {
		case <-stop:
			return
		default:
		}
		frame, err := sub.RecvBytes(0)
		if err != nil {
			switch zmq.AsErrno(err) {
			case zmq.Errno(syscall.EAGAIN), zmq.Errno(syscall.EINTR):
				continue // receive timeout: look at stop again
			}
			fail <- fmt.Errorf("receive peer state: %w", err)
			return
		}
		frames := 1
		for {
			more, err := sub.GetRcvmore()
			if err != nil {
				fail <- fmt.Errorf("receive peer state: %w", err)
				return
			}
			if !more {
				break
			}
			// The rest of a multipart message is already queued, so
			// this does not block.
			if _, err := sub.RecvBytes(0); err != nil {
				fail <- fmt.Errorf("receive peer state: %w", err)
				return
			}
			frames++
		}
		s, ok := parseState(frame)
		if v, newer := newerWire(frame); !ok && newer {
			n.malformed.Add(1)
			if now := time.Now(); now.Sub(lastWarn) >= 10*time.Second {
				lastWarn = now
				n.log.Error(fmt.Sprintf("the peer runs a newer pair protocol %d; this node understands up to %d: upgrade it", v, WireVersion),
					"dropped_total", n.malformed.Load())
			}
			continue
		}
		if !ok || frames != 1 {
			n.malformed.Add(1)
			// A misconfigured publisher would flood the log at its own
			// rate: warn at most once per 10 seconds.
			if now := time.Now(); now.Sub(lastWarn) >= 10*time.Second {
				lastWarn = now
				n.log.Warn("malformed state message dropped", "frames", frames,
					"size", len(frame), "malformed_total", n.malformed.Load())
			}
			continue
		}
		n.received.Add(1)
		select {
		case states <- s:
		case <-stop:
			return
		}
	}
}

// curveWireSize is the SUB's ZMQ_MAXMSGSIZE under CURVE: libzmq applies
// it to the handshake commands too (HELLO is 200 bytes, INITIATE some 250
// plus metadata), so maxWireSize would break every handshake. Messages
// are still checked to be exactly a state by parseState.
const curveWireSize = 1024

// minConnectTimeout is the least time a connect of the state subscriber
// is given: a few round trips of a slow WAN link.
const minConnectTimeout = 250 * time.Millisecond

// setupSub sets the SUB up and connects it to peer. With hb > 0 it sends
// ZMTP PINGs every hb and drops the connection when nothing at all came
// back within hbTimeout, then connects again. A silent partition leaves
// the peer's TCP stream to this node stalled in retransmission backoff:
// once the path is back, its data resumes only at the next retry, which
// can be many seconds later, and meanwhile this node hears nothing of a
// peer that hears it (the fault suite saw 12 s of a split brain going on
// after a heal that way). A new connection delivers at once, provided it
// is made after the heal: the partition drops the reconnect's SYN too,
// and the kernel retries a SYN at growing intervals (here 1, 2, 3, 4, 6,
// 10, 18 s after it), so the node would hear its peer only at the retry
// after the heal (7.2 s in the fault suite). So a connect that gets no
// answer within the heartbeat timeout is abandoned, and libzmq tries a
// new one after its reconnect interval (100 ms). No connection takes that
// long on a link a pair with that timeout can use; the floor
// (minConnectTimeout) keeps a heartbeat set far below a slow link's round
// trip from making every connect give up before its answer comes.
func setupSub(sub *zmq.Socket, peer string, slice time.Duration, maxSize int64, hb, hbTimeout time.Duration) error {
	if err := sub.SetLinger(0); err != nil {
		return fmt.Errorf("state sub linger: %w", err)
	}
	if hb > 0 {
		if err := sub.SetHeartbeatIvl(hb); err != nil {
			return fmt.Errorf("state sub heartbeat: %w", err)
		}
		if err := sub.SetHeartbeatTimeout(max(hbTimeout, hb)); err != nil {
			return fmt.Errorf("state sub heartbeat timeout: %w", err)
		}
		if err := sub.SetConnectTimeout(max(hbTimeout, hb, minConnectTimeout)); err != nil {
			return fmt.Errorf("state sub connect timeout: %w", err)
		}
	}
	if err := sub.SetRcvtimeo(slice); err != nil {
		return fmt.Errorf("state sub receive timeout: %w", err)
	}
	if err := sub.SetMaxmsgsize(maxSize); err != nil {
		return fmt.Errorf("state sub max message size: %w", err)
	}
	if err := sub.SetSubscribe(""); err != nil {
		return fmt.Errorf("state sub subscribe: %w", err)
	}
	if err := sub.Connect(peer); err != nil {
		return fmt.Errorf("connect state sub %s: %w", peer, err)
	}
	return nil
}

// loop is the Run goroutine's event loop: heartbeats out, peer states and
// client requests in, peer silence noticed.
func (n *Node) loop(ctx context.Context, fsm *FSM, pub *zmq.Socket, states <-chan State, readErr <-chan error, zapDone <-chan struct{}) error {
	ticker := time.NewTicker(n.cfg.Heartbeat)
	defer ticker.Stop()
	silence := time.NewTimer(n.timeout)
	defer silence.Stop()
	var sameRoleWarned bool

	// The Guide first publishes a heartbeat after start; publishing at
	// once only lets a waiting peer decide sooner.
	n.publish(pub, fsm.State())
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			return err
		case <-zapDone:
			return nil // the handler failed: Run returns its error
		case <-ticker.C:
			n.publish(pub, fsm.State())
		case <-silence.C:
			now := time.Now()
			if !fsm.PeerExpired(now) {
				silence.Reset(fsm.PeerExpiry().Sub(now))
				continue
			}
			if n.peerAlive.Swap(false) {
				n.log.Warn("peer silent, considered dead", "state", fsm.State().String(), "peer_timeout", n.timeout)
				if n.cfg.OnPeer != nil {
					n.cfg.OnPeer(false)
				}
			}
		case s := <-states:
			res, err := fsm.Handle(PeerEvent(s), time.Now())
			n.mirrorExpiry(fsm)
			silence.Reset(n.timeout)
			if err != nil {
				return fmt.Errorf("peer %s: %w", n.cfg.Peer, err)
			}
			if !n.peerAlive.Swap(true) {
				n.log.Info("peer heard", "peer_state", s.String())
				if n.cfg.OnPeer != nil {
					n.cfg.OnPeer(true)
				}
			}
			if res.SameRole && !sameRoleWarned {
				// Both servers have the same role: neither will go
				// active by itself. Say it once; it will not mend.
				sameRoleWarned = true
				n.log.Error("peer has the same role as this node: check the pair configuration",
					"peer_state", s.String())
			}
			if s == StateActive && res.From == StateActive && !res.Changed {
				// The primary's side of a healed split brain: say so
				// each time (it lasts until the backup has yielded,
				// about one heartbeat).
				n.log.Warn(res.Message, "event", res.Event.String())
			}
			n.changed(res, pub)
		case reply := <-n.requests:
			fsm.SetBackupVote(n.backupVote.Load())
			res, err := fsm.Handle(EventClientRequest, time.Now())
			if err != nil {
				// Handle fails only on an unknown event, which this is
				// not; never answer yes on an error.
				reply <- false
				return fmt.Errorf("client request: %w", err)
			}
			n.changed(res, pub)
			reply <- res.Accepted
		}
	}
}

// changed reports, mirrors and publishes a state change.
func (n *Node) changed(res Result, pub *zmq.Socket) {
	if !res.Changed {
		return
	}
	n.log.Info(res.Message, "event", res.Event.String(), "from", res.From.String(), "to", res.To.String())
	if n.cfg.OnChange != nil {
		n.cfg.OnChange(res.From, res.To)
	}
	// Mirrored only now, so that ClientRequest's fast path does not
	// accept requests before OnChange has prepared the application.
	n.state.Store(uint32(res.To))
	n.publish(pub, res.To)
}

// mirrorExpiry copies the FSM's peer expiry where ClientRequest reads it.
func (n *Node) mirrorExpiry(fsm *FSM) {
	n.peerExpiry.Store(int64(fsm.PeerExpiry().Sub(n.epoch)))
}

// publish sends our state without blocking. PUB drops at its high-water
// mark anyway, and a lost state is repeated a heartbeat later.
func (n *Node) publish(pub *zmq.Socket, s State) {
	if _, err := pub.SendBytes(encodeState(s), zmq.DONTWAIT); err != nil {
		if n.sendErrors.Add(1) == 1 {
			n.log.Warn("state publish failed", "error", err)
		}
		return
	}
	n.sent.Add(1)
}
