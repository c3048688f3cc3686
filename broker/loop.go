package broker

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker/curve"
	"github.com/titanicmq/titanic/broker/zsock"
)

// recvBatch bounds the messages read from the ROUTER per poll, so that
// commands and timers are served under load.
const recvBatch = 256

// Done is closed when Run has returned.
func (b *Broker) Done() <-chan struct{} { return b.done }

// Run binds the endpoints and serves until ctx is done. It owns every
// socket of the broker: it closes them (linger 0) before it returns nil.
// It returns an error when it cannot bind (before Ready is closed), when a
// Handle call was invalid, when the sockets fail, or when Run was called
// before (ErrClosed): a Broker runs once.
func (b *Broker) Run(ctx context.Context) (err error) {
	if !b.started.CompareAndSwap(false, true) {
		return fmt.Errorf("run called twice: %w", ErrClosed)
	}
	defer close(b.done)
	if b.setupErr != nil {
		return fmt.Errorf("broker setup: %w", b.setupErr)
	}
	zctx, err := zmq.NewContext()
	if err != nil {
		return fmt.Errorf("zmq context: %w", err)
	}
	var sockets []*zmq.Socket
	var zap *curve.ZAPHandler
	defer func() {
		for i := len(sockets) - 1; i >= 0; i-- {
			_ = sockets[i].Close()
		}
		// After the ROUTER is closed: without a handler, libzmq would let
		// any CURVE client in.
		if zap != nil {
			if zerr := zap.Close(); zerr != nil && err == nil {
				err = fmt.Errorf("zap handler: %w", zerr)
			}
		}
		if terr := zctx.Term(); terr != nil && err == nil {
			err = fmt.Errorf("terminate zmq context: %w", terr)
		}
	}()
	var zapDone <-chan struct{} // nil without CURVE: never ready
	if b.cfg.Curve != nil {
		// Before the ROUTER binds, in the ROUTER's context.
		if err := b.cfg.Curve.zap.Start(zctx); err != nil {
			return fmt.Errorf("zap handler: %w", err)
		}
		zap, zapDone = b.cfg.Curve.zap, b.cfg.Curve.zap.Done()
	}
	router, err := b.bindRouter(zctx)
	if router != nil {
		sockets = append(sockets, router)
	}
	if err != nil {
		return err
	}
	pull, err := b.bell.Open(zctx)
	if err != nil {
		return err
	}
	// Before the deferred socket closes and Term.
	defer b.bell.Close()
	stopRing := context.AfterFunc(ctx, b.ring)
	defer stopRing()

	// One Frames for the ROUTER, used by the loop for both directions.
	rf := zsock.NewFrames(router)
	rf.SetMaxFrames(b.cfg.MaxFrames)
	if b.cfg.MaxMsgSize > 0 {
		rf.SetMaxBytes(int(b.cfg.MaxMsgSize) + EnvelopeRoom)
	}
	s := newState(b.cfg, b.log, routerSender(rf), b.source, b.handlers)
	s.gate = b.gate
	for _, ph := range b.handlers {
		if ph.from {
			rf.SetPeerAddress(true)
			s.from = rf.PeerAddress
		}
	}
	var ps *peerSockets
	if b.cfg.Peering != nil {
		var err error
		ps, err = openPeering(zctx, *b.cfg.Peering, b.cfg.Curve, b.cfg.MaxMsgSize, &sockets)
		if err != nil {
			return err
		}
		ps.bound(b.cfg.MaxMsgSize, b.cfg.MaxFrames)
		s.peering = newPeering(*b.cfg.Peering)
		s.peering.sendPeer = routerSender(ps.fback)
		s.peering.sendOrigin = routerSender(ps.ffront)
		s.peering.publish = func(frames [][]byte) error {
			_, err := ps.pub.SendMessageDontwait(frames)
			return err
		}
		b.log.Info("peering", "name", b.cfg.Peering.Name, "cloud", b.cfg.Peering.CloudListen,
			"state", b.cfg.Peering.StateListen, "peers", len(b.cfg.Peering.Peers))
	}
	var rd *zsock.Readable
	if ps == nil {
		// The ROUTER is the only socket to wait on: wait in Go's poller,
		// and let ring wake the wait (no doorbell hop). Commands pushed
		// before the Store rang the doorbell instead; the loop's first
		// drain runs them.
		if r, err := zsock.NewReadable(router); err == nil {
			rd = r
			defer rd.Close()
			b.wake.Store(rd)
			defer b.wake.Store(nil)
		}
	}
	close(b.ready)
	// Debug: the program that embeds the broker (titanic/node) says it is
	// ready, with more to say (data, mode); two "ready" lines at start-up
	// read as two brokers.
	if b.cfg.Curve != nil {
		b.log.Debug("broker ready", "endpoints", b.Endpoints(), "curve", true,
			"server_key", b.cfg.Curve.Server.Public, "zap_domain", b.cfg.Curve.Domain)
	} else {
		b.log.Debug("broker ready", "endpoints", b.Endpoints())
	}
	if rd != nil {
		err = b.loopReadable(ctx, rf, rd, s, zapDone)
	} else {
		err = b.loop(ctx, router, rf, pull, ps, s, zapDone)
	}
	if err == nil && ctx.Err() != nil {
		// A clean stop: the registered workers are told (7/MDP's
		// DISCONNECT), so that they move to another broker at once
		// rather than after their heartbeat liveness; the ROUTER
		// lingers a moment for it to leave.
		if s.byeWorkers() > 0 {
			_ = router.SetLinger(byeLinger)
		}
	}
	if err == nil && zap != nil && zap.Err() != nil {
		err = fmt.Errorf("zap handler: %w", zap.Err())
	}
	b.log.Debug("broker stopped", "workers", len(s.workers), "leases", len(s.leases))
	return err
}

// byeLinger bounds how long a clean stop waits for the DISCONNECTs to
// its workers to leave.
const byeLinger = 100 * time.Millisecond

// bindRouter creates the ROUTER socket and binds every endpoint, recording
// what ZeroMQ actually bound. It returns the socket even on error, so the
// caller closes it.
func (b *Broker) bindRouter(zctx *zmq.Context) (*zmq.Socket, error) {
	router, err := zctx.NewSocket(zmq.ROUTER)
	if err != nil {
		return nil, fmt.Errorf("router socket: %w", err)
	}
	if err := router.SetLinger(0); err != nil {
		return router, fmt.Errorf("router linger: %w", err)
	}
	if err := router.SetRouterMandatory(1); err != nil {
		return router, fmt.Errorf("router mandatory: %w", err)
	}
	if b.cfg.MaxMsgSize > 0 {
		if err := router.SetMaxmsgsize(b.cfg.MaxMsgSize); err != nil {
			return router, fmt.Errorf("router max message size: %w", err)
		}
	}
	if cc := b.cfg.Curve; cc != nil {
		if err := curve.ApplyServer(router, cc.Server, cc.Domain); err != nil {
			return router, fmt.Errorf("router: %w", err)
		}
	}
	var bound []string
	for _, ep := range b.cfg.Endpoints {
		if err := router.Bind(ep); err != nil {
			return router, fmt.Errorf("bind %s: %w", ep, err)
		}
		last, err := router.GetLastEndpoint()
		if err != nil {
			return router, fmt.Errorf("bound endpoint of %s: %w", ep, err)
		}
		bound = append(bound, last)
	}
	b.epMu.Lock()
	b.endpoints = bound
	b.epMu.Unlock()
	return router, nil
}

// loop polls the ROUTER and the doorbell until ctx is done, or until the
// ZAP handler stops serving (zapDone; nil without CURVE).
func (b *Broker) loop(ctx context.Context, router *zmq.Socket, rf *zsock.Frames, pull *zmq.Socket, ps *peerSockets, s *state, zapDone <-chan struct{}) error {
	poller := zmq.NewPoller()
	poller.Add(router, zmq.POLLIN)
	poller.Add(pull, zmq.POLLIN)
	every := tickEvery(b.cfg)
	if ps != nil {
		poller.Add(ps.front, zmq.POLLIN)
		poller.Add(ps.back, zmq.POLLIN)
		poller.Add(ps.sub, zmq.POLLIN)
		// Capacity changes reach peers within a tick.
		every = min(every, b.cfg.Peering.StateEvery/4, 100*time.Millisecond)
	}
	next := time.Now().Add(every)
	b.drainCommands(s) // queued before Run
	for ctx.Err() == nil {
		polled, err := poller.Poll(zsock.PollTimeout(time.Now(), next))
		if err != nil {
			if zmq.AsErrno(err) == zmq.Errno(syscall.EINTR) {
				continue
			}
			return fmt.Errorf("poll: %w", err)
		}
		for _, p := range polled {
			switch p.Socket {
			case router:
				if err := readRouter(rf, s); err != nil {
					return err
				}
				// A Source or Handler called for those messages may
				// have queued commands (titanic releases a worker
				// from Completed): run them now, not a poll later.
				b.drainCommands(s)
			case pull:
				if err := b.bell.Drain(); err != nil {
					return err
				}
				b.drainCommands(s)
			default:
				if err := ps.read(p.Socket, s); err != nil {
					return err
				}
			}
		}
		next = s.tickDue(next, every)
		if stopped(zapDone) {
			return nil
		}
	}
	return nil
}

// tickDue runs s's tick once next has come, and returns when the next
// one is due.
func (s *state) tickDue(next time.Time, every time.Duration) time.Time {
	if now := time.Now(); !now.Before(next) {
		s.tick(now)
		return now.Add(every)
	}
	return next
}

// stopped reports that the ZAP handler stopped serving (zapDone; nil
// without CURVE): handshakes stall without it, so the loop stops, and Run
// says why (it returns the handler's error).
func stopped(zapDone <-chan struct{}) bool {
	select {
	case <-zapDone:
		return true
	default:
		return false
	}
}

// loopReadable is loop for a broker without peering: it waits for the
// ROUTER in Go's poller (zsock.Readable) and is woken by ring directly,
// where loop blocks in zmq_poll and is woken through the doorbell's
// goroutine and inproc socket.
func (b *Broker) loopReadable(ctx context.Context, rf *zsock.Frames, rd *zsock.Readable, s *state, zapDone <-chan struct{}) error {
	every := tickEvery(b.cfg)
	next := time.Now().Add(every)
	b.drainCommands(s) // queued before Run
	for ctx.Err() == nil {
		err := rd.Wait(next)
		switch {
		case err == nil:
			if err := readRouter(rf, s); err != nil {
				return err
			}
			// As in loop: commands queued by those messages' callbacks
			// run now, not a wait later.
			b.drainCommands(s)
		case errors.Is(err, zsock.ErrWoken):
			b.drainCommands(s)
		case errors.Is(err, zsock.ErrTimeout):
		default:
			return fmt.Errorf("poll: %w", err)
		}
		next = s.tickDue(next, every)
		if stopped(zapDone) {
			return nil
		}
	}
	return nil
}

// AuthStats returns the counters of the broker's ZAP handler: CURVE
// handshakes allowed and denied. Zero without CURVE.
func (b *Broker) AuthStats() curve.ZAPStats {
	if b.cfg.Curve == nil || b.cfg.Curve.zap == nil {
		return curve.ZAPStats{}
	}
	return b.cfg.Curve.zap.Stats()
}

// tickEvery is how often the timers run: a quarter of the shortest timing,
// so heartbeats go out at most a quarter interval late.
func tickEvery(cfg Config) time.Duration {
	d := min(cfg.HeartbeatInterval, cfg.RequestExpiry, cfg.LeaseTimeout) / 4
	return max(d, time.Millisecond)
}

// readRouter handles up to recvBatch waiting messages, each received
// whole in one cgo call (zsock.Frames).
func readRouter(router *zsock.Frames, s *state) error {
	for range recvBatch {
		frames, err := router.Recv(zmq.DONTWAIT)
		if err != nil {
			if isAgain(err) {
				return nil
			}
			if errors.Is(err, zsock.ErrTooManyFrames) || errors.Is(err, zsock.ErrTooLarge) {
				s.tooManyFrames(time.Now(), "router", err)
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		s.receive(time.Now(), frames)
	}
	return nil
}

func isAgain(err error) bool { return zmq.AsErrno(err) == zmq.Errno(syscall.EAGAIN) }

// routerSender sends on a ROUTER without ever blocking, a message in one
// cgo call (zsock.Frames), and translates the errnos of
// ZMQ_ROUTER_MANDATORY into the package's errors.
func routerSender(router *zsock.Frames) sendFunc {
	return func(to string, frames [][]byte) error {
		i, err := router.SendTo(to, frames, zmq.DONTWAIT)
		switch {
		case err == nil:
			return nil
		case i == 0:
			return sendError(err)
		}
		// ROUTER checks the peer on the identity frame; this is not
		// expected once that frame is accepted.
		return fmt.Errorf("send frame %d: %w", i, err)
	}
}

func sendError(err error) error {
	switch zmq.AsErrno(err) {
	case zmq.Errno(syscall.EHOSTUNREACH):
		return errUnroutable
	case zmq.Errno(syscall.EAGAIN):
		return errWouldBlock
	}
	return fmt.Errorf("send: %w", err)
}

// peerSockets are the sockets of peering, owned by the loop, and the
// Frames each one is read (and the cloud ones written) through.
type peerSockets struct {
	front, back, pub, sub *zmq.Socket
	ffront, fback, fsub   *zsock.Frames
}

// bound makes the Frames the peering sockets are read through, with the
// ROUTER's bounds on a whole message: maxMsg (ZMQ_MAXMSGSIZE, set by
// openPeering) plus EnvelopeRoom, and maxFrames.
func (ps *peerSockets) bound(maxMsg int64, maxFrames int) {
	ps.ffront, ps.fback, ps.fsub = zsock.NewFrames(ps.front), zsock.NewFrames(ps.back), zsock.NewFrames(ps.sub)
	for _, fr := range []*zsock.Frames{ps.ffront, ps.fback, ps.fsub} {
		fr.SetMaxFrames(maxFrames)
		if maxMsg > 0 {
			fr.SetMaxBytes(int(maxMsg) + EnvelopeRoom)
		}
	}
}

// minConnectTimeout is the least time a connect of the peering state
// subscriber is given: a few round trips of a slow WAN link.
const minConnectTimeout = 250 * time.Millisecond

// openPeering binds the cloud frontend and state publisher and connects
// the cloud backend and state subscriber to every peer. The sockets are
// appended to *all so that Run closes them.
//
// Under CURVE (pc.curved) the cloud frontend and the state publisher are
// CURVE servers with the broker's key pair, whose handshakes the broker's
// ZAP handler admits under PeeringCurveDomain (the peers' keys only), and
// the backend and subscriber connect to each peer as CURVE clients of its
// key: libzmq takes the security options a connect finds set, so each
// connect gets its peer's.
//
// maxMsg (> 0) is ZMQ_MAXMSGSIZE of every peering socket, as of the
// ROUTER: the cloud endpoint takes anyone's connection, and a peer's
// reply or state is no more trusted than a worker's. It is set before
// any bind or connect, which take the options they find.
func openPeering(zctx *zmq.Context, pc PeeringConfig, cc *CurveConfig, maxMsg int64, all *[]*zmq.Socket) (*peerSockets, error) {
	curved := pc.curved(cc)
	ps := &peerSockets{}
	mk := func(t zmq.Type) (*zmq.Socket, error) {
		sk, err := zctx.NewSocket(t)
		if err != nil {
			return nil, fmt.Errorf("peering socket: %w", err)
		}
		*all = append(*all, sk)
		if err := sk.SetLinger(0); err != nil {
			return nil, fmt.Errorf("peering socket: %w", err)
		}
		if maxMsg > 0 {
			if err := sk.SetMaxmsgsize(maxMsg); err != nil {
				return nil, fmt.Errorf("peering max message size: %w", err)
			}
		}
		return sk, nil
	}
	var err error
	for _, r := range []**zmq.Socket{&ps.front, &ps.back} {
		if *r, err = mk(zmq.ROUTER); err != nil {
			return nil, err
		}
		// Peers address each other by name on both cloud sockets.
		if err := (*r).SetIdentity(pc.Name); err != nil {
			return nil, fmt.Errorf("peering identity: %w", err)
		}
		if err := (*r).SetRouterMandatory(1); err != nil {
			return nil, fmt.Errorf("peering router: %w", err)
		}
		// A peer that crashed or was cut off for good (a reboot, a NAT
		// dropping an idle flow) leaves its old connection here, never
		// closed: the cloud sockets do not heartbeat (see below). Its new
		// connection has the same routing id; without handover it would
		// be left unread while the dead one keeps the name, and every job
		// between the two would be lost until the lease ran out.
		if err := (*r).SetRouterHandover(true); err != nil {
			return nil, fmt.Errorf("peering router handover: %w", err)
		}
	}
	if curved {
		if err := curve.ApplyServer(ps.front, cc.Server, PeeringCurveDomain); err != nil {
			return nil, fmt.Errorf("peering cloud: %w", err)
		}
	}
	if err := ps.front.Bind(pc.CloudListen); err != nil {
		return nil, fmt.Errorf("bind cloud %s: %w", pc.CloudListen, err)
	}
	if ps.pub, err = mk(zmq.PUB); err != nil {
		return nil, err
	}
	if curved {
		if err := curve.ApplyServer(ps.pub, cc.Server, PeeringCurveDomain); err != nil {
			return nil, fmt.Errorf("peering state: %w", err)
		}
	}
	if err := ps.pub.Bind(pc.StateListen); err != nil {
		return nil, fmt.Errorf("bind state %s: %w", pc.StateListen, err)
	}
	if ps.sub, err = mk(zmq.SUB); err != nil {
		return nil, err
	}
	if err := ps.sub.SetSubscribe(peerFamily); err != nil {
		return nil, fmt.Errorf("peering subscribe: %w", err)
	}
	// The state SUB heartbeats (ZMTP PING) and drops a connection from
	// which nothing came back for the peers' liveness, then connects
	// again: after a silent partition heals, a peer's TCP stream may wait
	// in retransmission backoff for many seconds, during which the peer
	// would look dead here (binarystar's state SUB does the same). A
	// dropped connection loses only states, which come again. Not the
	// cloud sockets: a dropped connection discards the requests and
	// replies queued on it, which then wait for their peer lease to run
	// out (TestCloudFront missed its deadline that way); those wait for
	// the stream.
	if err := ps.sub.SetHeartbeatIvl(pc.StateEvery); err != nil {
		return nil, fmt.Errorf("peering heartbeat: %w", err)
	}
	liveness := time.Duration(pc.Liveness) * pc.StateEvery
	if err := ps.sub.SetHeartbeatTimeout(liveness); err != nil {
		return nil, fmt.Errorf("peering heartbeat timeout: %w", err)
	}
	// The partition drops the reconnect's SYN too, and the kernel retries
	// it seconds apart: a connect unanswered for the liveness is abandoned
	// and a new one made, so a peer is heard soon after a heal. Not below
	// a few round trips of a slow link, whatever the liveness.
	if err := ps.sub.SetConnectTimeout(max(liveness, minConnectTimeout)); err != nil {
		return nil, fmt.Errorf("peering connect timeout: %w", err)
	}
	for _, p := range pc.Peers {
		if curved {
			ck := curve.ClientKeys{ServerPublic: p.Public, Public: cc.Server.Public, Secret: cc.Server.Secret}
			for _, sk := range []*zmq.Socket{ps.back, ps.sub} {
				if err := ck.Apply(sk); err != nil {
					return nil, fmt.Errorf("peering with %s: %w", p.Name, err)
				}
			}
		}
		if err := ps.back.Connect(p.Cloud); err != nil {
			return nil, fmt.Errorf("connect cloud of %s (%s): %w", p.Name, p.Cloud, err)
		}
		if err := ps.sub.Connect(p.State); err != nil {
			return nil, fmt.Errorf("connect state of %s (%s): %w", p.Name, p.State, err)
		}
	}
	return ps, nil
}

// read handles up to recvBatch waiting messages of one peering socket.
func (ps *peerSockets) read(sk *zmq.Socket, s *state) error {
	fr := ps.fsub
	switch sk {
	case ps.front:
		fr = ps.ffront
	case ps.back:
		fr = ps.fback
	}
	for range recvBatch {
		frames, err := fr.Recv(zmq.DONTWAIT)
		if err != nil {
			if isAgain(err) {
				return nil
			}
			if errors.Is(err, zsock.ErrTooManyFrames) || errors.Is(err, zsock.ErrTooLarge) {
				s.tooManyFrames(time.Now(), "peering", err)
				continue
			}
			return fmt.Errorf("peering receive: %w", err)
		}
		now := time.Now()
		switch sk {
		case ps.front:
			s.cloudRequest(now, string(frames[0]), frames[1:])
		case ps.back:
			s.peerAnswer(now, string(frames[0]), frames[1:])
		case ps.sub:
			s.peerStateMsg(now, frames)
		}
	}
	return nil
}
