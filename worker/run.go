package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker/mdp"
	"github.com/titanicmq/titanic/broker/zsock"
)

// recvBatch bounds the messages read from the DEALER per poll, so that
// heartbeats and results are served even under a flood.
const recvBatch = 64

// session is the state of one slot of a Run. Only the slot's goroutine
// touches it.
type session struct {
	w      *Worker
	ctx    context.Context
	zctx   *zmq.Context
	slot   int
	log    *slog.Logger
	expiry time.Duration // HeartbeatInterval × Liveness

	// Handler goroutines and ctx's end ring wake.
	wake *wakeup

	// The zmq_poll fallback, for a DEALER whose descriptor Go's poller
	// cannot watch: the doorbell (opened on first need) and a poller of
	// its socket and the DEALER.
	bell   *zsock.Doorbell
	pull   *zmq.Socket
	poller *zmq.Poller

	// The connection, when dealer is not nil: frames sends and receives
	// its messages in one cgo call each, ready waits for it in Go's
	// poller (nil: the zmq_poll fallback).
	dealer   *zmq.Socket
	frames   *zsock.Frames
	ready    *zsock.Readable
	endpoint string
	heard    bool // a message other than DISCONNECT came on it
	// mon watches the connection's events (nil: unwatched, when the
	// monitor could not be made), which conn holds (its handshake
	// succeeded; connection attempts refused since the last made);
	// watchAt: read mon no later than this; full: a send was dropped on
	// a full pipe (logged once per connection).
	mon     *zsock.Monitor
	conn    zsock.Conn
	watchAt time.Time
	full    bool
	// lastBeat: when the broker's last HEARTBEAT came; fastBeats: how
	// many in a row came well within this worker's interval (a broker
	// with a shorter --heartbeat, which expires this worker);
	// beatWarned: said so on this connection.
	lastBeat   time.Time
	fastBeats  int
	beatWarned bool
	// beatsBusy: the broker sent a HEARTBEAT while this worker held a
	// job on this connection. A broker of the Guide's heartbeats idle
	// workers only, and its silence during a job says nothing.
	beatsBusy   bool
	deadAt      time.Time // broker silent until then: connection lost
	heartbeatAt time.Time // nothing sent until then: send HEARTBEAT

	// Between connections.
	next        int       // index in Brokers of the next connection
	attempt     int       // connections in a row that heard nothing
	reconnectAt time.Time // connect no sooner
	connected   bool      // a connection was made before
	// sentAway: 1 + the attempt whose READY a broker answered with
	// DISCONNECT (a pair's passive node; 0: none since the last heard).
	sentAway int
	// said: the reason last logged at WARN for each endpoint not
	// reached since a connection last heard something (the same again is
	// logged at debug).
	said map[string]string

	job *job // the request held, if any

	// drainUntil is set when ctx is done while a job runs and
	// DrainTimeout allows waiting for it.
	drainUntil time.Time
}

// job is a request being handled.
type job struct {
	client   []byte
	cancel   context.CancelFunc
	done     chan result // the handler goroutine sends one result
	started  time.Time
	orphaned bool // its connection was lost: the result is discarded
}

type result struct {
	reply [][]byte
	err   error
	stack []byte // set when the handler panicked
}

// wakeup wakes a slot's goroutine from others: a handler goroutine with
// its result, ctx's end. A ring is a flag the slot takes before it looks
// at everything (job result, ctx), then a wake of whatever the slot may
// be blocked in: the DEALER's Readable, or the fallback's doorbell. A
// ring that comes after the slot took the flag finds the wait the slot
// is about to enter (the slot stores rd, or sets polling, before it takes
// the flag), so none is lost, also across a reconnect that replaces the
// Readable; a ring seen twice only costs an extra look.
type wakeup struct {
	rung    chan struct{}                  // cap 1: rung since the slot last took it
	rd      atomic.Pointer[zsock.Readable] // the DEALER's, while there is one
	polling atomic.Bool                    // the slot may be in zmq_poll with the doorbell
	bell    *zsock.Doorbell
}

func newWakeup(bell *zsock.Doorbell) *wakeup {
	return &wakeup{rung: make(chan struct{}, 1), bell: bell}
}

// ring is safe from any goroutine and never blocks.
func (w *wakeup) ring() {
	select {
	case w.rung <- struct{}{}:
	default:
	}
	if r := w.rd.Load(); r != nil {
		r.Wake()
	}
	if w.polling.Load() {
		w.bell.Ring()
	}
}

// take reports whether the slot was rung since it last took the flag, and
// takes it.
func (w *wakeup) take() bool {
	select {
	case <-w.rung:
		return true
	default:
		return false
	}
}

// Run connects to the brokers and serves requests until ctx is done, then
// (after the drain of Config.DrainTimeout, if any) sends DISCONNECT,
// closes its sockets and returns nil. Each of the Concurrency slots runs on
// a goroutine of its own, with its own connection. Run returns an error
// only when ZeroMQ fails (or an endpoint is rejected by ZeroMQ), in which
// case it stops the other slots first, or when another Run of w is running
// (ErrRunning). Run may be called again once it has returned.
func (w *Worker) Run(ctx context.Context) (err error) {
	if !w.running.CompareAndSwap(false, true) {
		return fmt.Errorf("worker %q: %w", w.cfg.Service, ErrRunning)
	}
	defer w.running.Store(false)
	if ctx.Err() != nil {
		return nil
	}
	shared := w.cfg.Context
	if shared == nil {
		if shared, err = zsock.NewContext(); err != nil {
			return fmt.Errorf("worker: %w", err)
		}
		// Closed once every slot has closed its sockets.
		defer func() {
			if cerr := shared.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("worker: %w", cerr)
			}
		}()
	}
	n := w.cfg.Concurrency
	if n == 1 {
		return w.runSlot(ctx, shared.ZMQ(), 0)
	}
	// A slot that fails stops the others, which drain as on a cancel.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := w.runSlot(ctx, shared.ZMQ(), i); err != nil {
				errs[i] = fmt.Errorf("slot %d: %w", i, err)
				cancel()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// runSlot runs slot i until ctx is done; its sockets are made, used and
// closed by the calling goroutine.
func (w *Worker) runSlot(ctx context.Context, zctx *zmq.Context, i int) (err error) {
	s := &session{
		w:      w,
		ctx:    ctx,
		zctx:   zctx,
		slot:   i,
		log:    w.log.With("slot", i),
		expiry: w.cfg.HeartbeatInterval * time.Duration(w.cfg.Liveness),
		bell:   zsock.NewDoorbell(),
	}
	s.wake = newWakeup(s.bell)
	defer s.teardown()
	stop := context.AfterFunc(ctx, s.wake.ring)
	defer stop()
	return s.loop()
}

func (s *session) loop() error {
	for {
		now := time.Now()
		if s.ctx.Err() != nil && !s.draining(now) {
			return nil
		}
		if s.dealer == nil && s.job == nil && !now.Before(s.reconnectAt) {
			if err := s.connect(now); err != nil {
				return err
			}
		}
		if s.dealer != nil && !now.Before(s.deadAt) && s.job != nil && !s.beatsBusy {
			// Silence while a job runs, from a broker not known to
			// heartbeat busy workers: wait for the job's end.
			s.deadAt = now.Add(s.expiry)
		}
		if s.dealer != nil && !now.Before(s.deadAt) {
			s.w.c.timeouts.Add(1)
			reason := fmt.Sprintf("broker silent for %s", s.expiry)
			if s.heard {
				reason += fmt.Sprintf(" (%d heartbeats of %s: a broker whose --heartbeat is longer than this worker's seems silent)",
					s.w.cfg.Liveness, s.w.cfg.HeartbeatInterval)
			} else {
				// Nothing came on this connection at all: ZeroMQ
				// hides a refused connection, so say what it may be.
				reason += " (nothing answered since connecting: is a broker listening there, with the same CURVE keys?)"
			}
			s.lose(now, reason)
			continue
		}
		if s.dealer != nil && s.mon != nil && !now.Before(s.watchAt) {
			s.watchAt = now.Add(watchEvery)
			if reason := s.watch(now); reason != "" {
				s.lose(now, reason)
				continue
			}
		}
		if s.dealer != nil && !now.Before(s.heartbeatAt) {
			if s.send(now, mdp.WorkerCommand(mdp.Heartbeat)) {
				s.w.c.heartbeats.Add(1)
			}
		}
		if err := s.wait(now); err != nil {
			return err
		}
		if s.job != nil {
			select {
			case r := <-s.job.done:
				s.finish(time.Now(), r)
			default:
			}
		}
	}
}

// draining reports, once ctx is done, whether the slot goes on serving
// its connection to let the job it holds finish: only with a DrainTimeout,
// not past it, and only while the result can still be sent. A draining
// slot takes no new request (the broker sends none to a busy worker) and
// disconnects once the job's result is sent.
func (s *session) draining(now time.Time) bool {
	d := s.w.cfg.DrainTimeout
	if d <= 0 || s.job == nil || s.job.orphaned || s.dealer == nil {
		return false
	}
	if s.drainUntil.IsZero() {
		s.drainUntil = now.Add(d)
		s.log.Info("stopping: waiting for the running request before disconnecting", "drain_timeout", d, "running_for", now.Sub(s.job.started))
	}
	if !now.Before(s.drainUntil) {
		s.log.Warn("drain timeout passed: cancelling the running request", "drain_timeout", d)
		return false
	}
	return true
}

// deadline is when the next wait ends at the latest: the next timer; ok
// is false while the worker waits, disconnected, for its handler (whose
// goroutine rings).
func (s *session) deadline() (deadline time.Time, ok bool) {
	switch {
	case s.dealer != nil:
		deadline = s.deadAt
		if s.heartbeatAt.Before(deadline) {
			deadline = s.heartbeatAt
		}
		if !s.drainUntil.IsZero() && s.drainUntil.Before(deadline) {
			deadline = s.drainUntil
		}
		if s.mon != nil && s.watchAt.Before(deadline) {
			deadline = s.watchAt
		}
		return deadline, true
	case s.job == nil:
		return s.reconnectAt, true
	}
	return time.Time{}, false
}

// pollTimeout is deadline as the fallback's zmq_poll takes it.
func (s *session) pollTimeout(now time.Time) time.Duration {
	deadline, ok := s.deadline()
	if !ok {
		return -1
	}
	return zsock.PollTimeout(now, deadline)
}

// wait blocks until the broker has sent something (which it reads), the
// slot is rung, or the deadline: in Go's poller on the DEALER's
// descriptor, parked on the ring flag and a timer while there is no
// DEALER, or in zmq_poll, with the doorbell, when Go's poller cannot
// watch the DEALER. It returns only ZeroMQ's errors.
func (s *session) wait(now time.Time) error {
	if s.wake.take() {
		return nil // rung since the last look: look now
	}
	deadline, ok := s.deadline()
	switch {
	case s.ready != nil:
		err := s.ready.Wait(deadline)
		switch {
		case err == nil:
			s.readDealer()
		case errors.Is(err, zsock.ErrWoken):
			// This look answers the ring that woke it.
			s.wake.take()
		case errors.Is(err, zsock.ErrTimeout):
		default:
			return fmt.Errorf("worker: wait: %w", err)
		}
	case s.dealer != nil:
		return s.poll(now)
	default:
		var expired <-chan time.Time
		if ok {
			t := time.NewTimer(deadline.Sub(now))
			defer t.Stop()
			expired = t.C
		}
		select {
		case <-s.wake.rung:
		case <-expired:
		}
	}
	return nil
}

// poll is wait's zmq_poll fallback.
func (s *session) poll(now time.Time) error {
	polled, err := s.poller.Poll(s.pollTimeout(now))
	if err != nil {
		if zmq.AsErrno(err) == zmq.Errno(syscall.EINTR) {
			return nil
		}
		return fmt.Errorf("worker: poll: %w", err)
	}
	for _, p := range polled {
		switch {
		case p.Socket == s.pull:
			if err := s.bell.Drain(); err != nil {
				return fmt.Errorf("worker: %w", err)
			}
			s.wake.take()
		case s.dealer != nil && p.Socket == s.dealer:
			s.readDealer()
		}
	}
	return nil
}

// attach makes sock the connection: waited on in Go's poller, or with
// zmq_poll when that cannot watch it (or Worker.pollOnly says so), the
// doorbell then opened to be polled beside it.
func (s *session) attach(sock *zmq.Socket) error {
	s.dealer, s.frames = sock, zsock.NewFrames(sock)
	// A client's request of the most frames a broker takes, with the
	// REQUEST header the broker adds.
	s.frames.SetMaxFrames(zsock.DefaultMaxFrames + requestHeader)
	if !s.w.pollOnly {
		if r, err := zsock.NewReadable(sock); err == nil {
			s.ready = r
			s.wake.rd.Store(r)
			return nil
		}
	}
	if s.pull == nil {
		pull, err := s.bell.Open(s.zctx)
		if err != nil {
			s.detach()
			return fmt.Errorf("worker: %w", err)
		}
		s.pull = pull
	}
	s.poller = zmq.NewPoller()
	s.poller.Add(s.pull, zmq.POLLIN)
	s.poller.Add(sock, zmq.POLLIN)
	s.wake.polling.Store(true)
	return nil
}

// detach forgets the connection and closes its socket, which it leaves
// to linger as set.
func (s *session) detach() {
	if s.mon != nil {
		s.mon.Close()
		s.mon = nil
	}
	s.wake.rd.Store(nil)
	s.wake.polling.Store(false)
	if s.ready != nil {
		_ = s.ready.Close()
		s.ready = nil
	}
	_ = s.dealer.Close()
	s.dealer, s.frames, s.poller = nil, nil, nil
}

// connect opens a DEALER to the next broker and sends READY.
func (s *session) connect(now time.Time) error {
	ep := s.w.cfg.Brokers[s.next]
	sock, err := s.zctx.NewSocket(zmq.DEALER)
	if err != nil {
		return fmt.Errorf("worker: dealer socket: %w", err)
	}
	if err := sock.SetLinger(0); err != nil {
		_ = sock.Close()
		return fmt.Errorf("worker: dealer linger: %w", err)
	}
	if k := s.w.cfg.Curve; k != nil {
		if err := k.Apply(sock); err != nil {
			_ = sock.Close()
			return fmt.Errorf("worker: dealer: %w", err)
		}
	}
	// Watched before it connects, so that no event is missed; without
	// a monitor the connection works, its failures told by silence only.
	mon, merr := zsock.NewMonitor(s.zctx, sock, zsock.ConnectionEvents)
	if merr != nil {
		s.log.Debug("connection not watched", "endpoint", ep, "err", merr)
	}
	if err := sock.Connect(ep); err != nil {
		if mon != nil {
			mon.Close()
		}
		_ = sock.Close()
		return fmt.Errorf("worker: connect %s: %w", ep, err)
	}
	if err := s.attach(sock); err != nil {
		if mon != nil {
			mon.Close()
		}
		return err
	}
	// The first look soon: a refused connection or handshake is known
	// within milliseconds on a LAN.
	s.mon, s.conn, s.watchAt, s.full = mon, zsock.Conn{}, now.Add(watchFirst), false
	s.endpoint, s.heard, s.beatsBusy = ep, false, false
	s.lastBeat, s.fastBeats, s.beatWarned = time.Time{}, 0, false
	s.deadAt = now.Add(s.expiry)
	if s.connected {
		s.w.c.reconnects.Add(1)
	}
	s.connected = true
	if _, again := s.said[ep]; again {
		s.log.Debug("connecting to broker", "endpoint", ep)
	} else {
		s.log.Info("connecting to broker", "endpoint", ep)
	}
	s.send(now, mdp.WorkerCommand(mdp.Ready, []byte(s.w.cfg.Service)))
	return nil
}

// lose closes the connection and schedules the next one, to the next
// broker.
func (s *session) lose(now time.Time, reason string) {
	s.detach() // linger 0: whatever is queued is stale now
	if s.heard {
		s.attempt, s.sentAway, s.said = 0, 0, nil
	}
	// Within a round of the ring the next broker is tried at once; the
	// backoff comes between rounds that reached no broker, growing with
	// each (none after the first). While a broker sends the worker away
	// (a pair's passive node, whose peer is down and which takes over
	// at the next client request), rounds follow each other every
	// sentAwayRetry at most, so that the worker is there soon after the
	// node becomes active.
	var delay time.Duration
	if n := len(s.w.cfg.Brokers); (s.attempt+1)%n == 0 {
		delay = backoff(s.w.cfg.ReconnectDelay, s.attempt/n)
		if s.sentAway > 0 && s.attempt+1-s.sentAway < n {
			delay = min(delay, sentAwayRetry)
		}
	}
	s.attempt++
	s.reconnectAt = now.Add(delay)
	lost := s.endpoint
	s.next = (s.next + 1) % len(s.w.cfg.Brokers)
	attrs := []any{"endpoint", lost, "reason", reason, "next", s.w.cfg.Brokers[s.next], "delay", delay}
	if s.job != nil {
		s.job.orphaned = true
		attrs = append(attrs, "busy", true)
		s.log.Warn("lost broker while handling a request: reconnecting once the handler returns", attrs...)
		return
	}
	if !s.heard {
		// Never registered on this connection: nothing was lost. Said
		// again only when the reason changes: a worker left waiting for
		// a broker logs a line per change, not per try.
		if s.said[lost] == reason {
			s.log.Debug("broker not reached: trying again", attrs...)
			return
		}
		if s.said == nil {
			s.said = make(map[string]string)
		}
		s.said[lost] = reason
		s.log.Warn("broker not reached: trying again (said once while the reason stays the same)", attrs...)
		return
	}
	s.log.Warn("lost broker: reconnecting", attrs...)
}

// send queues frames on the DEALER without blocking, in one cgo call, and
// reports whether it did. A full pipe drops a HEARTBEAT or READY (the next one follows); a
// REPLY or FAIL dropped would leave the broker waiting for ever on a
// worker that keeps heartbeating, so the connection is given up instead:
// the broker then sees the worker gone and redelivers the request. Any
// other error loses the connection too.
func (s *session) send(now time.Time, frames [][]byte) bool {
	if i, err := s.frames.Send(frames, zmq.DONTWAIT); err != nil {
		s.w.c.sendErrors.Add(1)
		if cmd := command(frames); i == 0 && isAgain(err) && cmd != mdp.Reply.String() && cmd != mdp.Fail.String() {
			// The next one follows at the next interval, not at once:
			// a pipe with no connection behind it (a handshake that
			// fails) refuses every send, and the loop would spin.
			s.heartbeatAt = now.Add(s.w.cfg.HeartbeatInterval)
			if !s.full {
				s.full = true
				s.log.Warn("send queue full: message dropped (logged once per connection)", "endpoint", s.endpoint, "command", cmd)
			} else {
				s.log.Debug("send queue full: message dropped", "endpoint", s.endpoint, "command", cmd)
			}
			return false
		}
		s.lose(now, fmt.Sprintf("send %s: %v", command(frames), err))
		return false
	}
	s.heartbeatAt = now.Add(s.w.cfg.HeartbeatInterval)
	return true
}

// watchEvery is how often a slot reads its connection's monitor: how soon
// it sees a broker close the connection (it stopped or crashed: move to
// the next one at once, not after Liveness silent heartbeats), a refused
// CURVE key or handshake, or connections refused.
const watchEvery = 200 * time.Millisecond

// watchFirst is when a new connection's monitor is first read.
const watchFirst = 25 * time.Millisecond

// refusedWait is how long every connection attempt must have been
// refused before the slot gives up the endpoint of its only broker:
// nothing listens there. With several brokers, the first refusal moves
// on to the next one.
const refusedWait = 500 * time.Millisecond

// sentAwayRetry bounds the backoff between rounds while a broker sends
// the worker away (DISCONNECT answering READY).
const sentAwayRetry = 500 * time.Millisecond

// watch reads the events of the connection's monitor, and returns why the
// connection is to be given up ("": it is not).
func (s *session) watch(now time.Time) string {
	for {
		ev, val, ok := s.mon.Next()
		if !ok {
			break
		}
		switch s.conn.Apply(ev, val, now, "worker", s.w.cfg.Curve != nil) {
		case zsock.ConnLost:
			// libzmq would connect again on its own, to a broker that
			// no longer knows this worker (or is gone).
			return "the broker closed the connection (stopped, crashed or restarted)"
		case zsock.ConnAuthFailed:
			return zsock.AuthRefused("worker", strconv.Itoa(s.conn.Auth))
		case zsock.ConnHandshakeFailed:
			const failed = "security handshake failed: "
			if prev := s.said[s.endpoint]; ev == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL && strings.HasPrefix(prev, failed) {
				// The same handshake failing again, told with less
				// detail this time (libzmq's timing): keep what the
				// earlier failure said.
				return prev
			}
			return failed + s.conn.Handshake
		}
	}
	if !s.conn.RefusingSince.IsZero() {
		switch {
		case len(s.w.cfg.Brokers) > 1:
			return "connection refused (no broker listens there)"
		case now.Sub(s.conn.RefusingSince) >= refusedWait:
			return fmt.Sprintf("connection refused for %s (no broker listens there)", refusedWait)
		}
	}
	return ""
}

// command names the MDP command of frames built by package mdp, for logs.
func command(frames [][]byte) string {
	if len(frames) > 2 && len(frames[2]) == 1 {
		return mdp.Command(frames[2][0]).String()
	}
	return "?"
}

// requestHeader is the frames of a REQUEST before its body, as a DEALER
// receives it: empty, MDPW01, command, client, empty.
const requestHeader = 5

// readDealer handles up to recvBatch waiting messages, each received whole
// in one cgo call.
func (s *session) readDealer() {
	for range recvBatch {
		if s.dealer == nil {
			return
		}
		frames, err := s.frames.Recv(zmq.DONTWAIT)
		if errors.Is(err, zsock.ErrTooManyFrames) {
			// Its frames were discarded as they were read.
			s.deadAt = time.Now().Add(s.expiry)
			s.w.c.dropped.Add(1)
			if s.job == nil {
				// A REQUEST this worker cannot take: left alone, the
				// broker would hold its lease while the worker
				// heartbeats. A new connection makes it fail the job.
				s.log.Warn("dropped a request of too many frames: reconnecting, so that the broker fails its job", "endpoint", s.endpoint, "err", err)
				s.lose(time.Now(), "a request of too many frames")
				return
			}
			s.log.Debug("dropped invalid message from broker", "endpoint", s.endpoint, "err", err)
			continue
		}
		if err != nil {
			if !isAgain(err) {
				s.lose(time.Now(), fmt.Sprintf("receive: %v", err))
			}
			return
		}
		s.receive(time.Now(), frames)
	}
}

// receive handles one message from the broker.
func (s *session) receive(now time.Time, frames [][]byte) {
	// Whatever it says, the broker is alive.
	s.deadAt = now.Add(s.expiry)
	msg, err := mdp.ParseWorker(frames)
	if err != nil {
		s.w.c.dropped.Add(1)
		s.log.Debug("dropped invalid message from broker", "endpoint", s.endpoint, "frames", len(frames), "err", err)
		return
	}
	switch msg.Command {
	case mdp.Heartbeat:
		s.registered()
		if s.job != nil {
			s.beatsBusy = true
		}
		s.checkBeat(now)
	case mdp.Disconnect:
		s.w.c.disconnects.Add(1)
		reason := "broker sent DISCONNECT"
		if s.heard && s.job == nil {
			// Registered, then sent away: a broker expecting heartbeats
			// more often than this worker sends them drops it as
			// silent, again and again.
			reason += fmt.Sprintf(" (again and again? the broker may expect heartbeats more often than this worker's --heartbeat of %s)",
				s.w.cfg.HeartbeatInterval)
		}
		if !s.heard {
			// Sent away on READY: a live broker that does not serve
			// now (a pair's passive node).
			s.sentAway = s.attempt + 1
			reason += " (it does not take workers now: a pair's passive node?)"
		}
		if !s.heard && strings.HasPrefix(s.w.cfg.Service, "titanic.") {
			// Answered READY with DISCONNECT: a titanic broker serves
			// the "titanic." services itself and takes no worker for
			// them (a Guide broker does; the library lets them be).
			reason += ` (a titanic broker answers the "titanic." services itself and refuses workers for them)`
		}
		s.lose(now, reason)
	case mdp.Request:
		s.registered()
		if s.job != nil {
			s.w.c.dropped.Add(1)
			s.log.Warn("dropped REQUEST received while busy", "endpoint", s.endpoint)
			return
		}
		s.w.c.requests.Add(1)
		s.start(now, msg.Client, msg.Body)
	}
}

// registered notes that the broker took this connection's READY: it
// sent a HEARTBEAT or a REQUEST (7/MDP answers READY with nothing), and
// says so once per connection.
func (s *session) registered() {
	if s.heard {
		return
	}
	s.heard = true
	s.log.Info("registered with broker: ready for requests", "endpoint", s.endpoint)
}

// checkBeat notes a HEARTBEAT from the broker, and says once per
// connection when the broker's come much more often than this worker's
// interval: the broker's --heartbeat is shorter, and it will expire this
// worker (idle, every few seconds; busy, its job) for silence.
func (s *session) checkBeat(now time.Time) {
	last := s.lastBeat
	s.lastBeat = now
	if last.IsZero() || s.beatWarned {
		return
	}
	if gap := now.Sub(last); gap >= s.w.cfg.HeartbeatInterval/2 {
		s.fastBeats = 0
		return
	}
	if s.fastBeats++; s.fastBeats < 3 {
		return
	}
	s.beatWarned = true
	s.log.Warn("the broker heartbeats much more often than this worker: it will drop the worker as silent (idle or during a job); "+
		"give the worker the broker's --heartbeat", "endpoint", s.endpoint, "broker_every", now.Sub(last).Round(time.Millisecond),
		"heartbeat", s.w.cfg.HeartbeatInterval)
}

// start runs the handler for a request on a goroutine of its own. Its
// context is not Run's: a drain lets it run on after Run's is done, and
// teardown (stopJob) cancels it.
func (s *session) start(now time.Time, client []byte, body [][]byte) {
	jctx, cancel := context.WithCancel(context.WithValue(context.WithoutCancel(s.ctx), slotKey{}, s.slot))
	done := make(chan result, 1)
	s.job = &job{client: client, cancel: cancel, done: done, started: now}
	h, wake := s.w.handler, s.wake
	go func() {
		done <- callHandler(jctx, h, body)
		wake.ring()
	}()
}

// callHandler runs h, turning a panic into an error.
func callHandler(ctx context.Context, h Handler, body [][]byte) (r result) {
	defer func() {
		if p := recover(); p != nil {
			r = result{err: fmt.Errorf("handler panic: %v", p), stack: debug.Stack()}
		}
	}()
	reply, err := h(ctx, body)
	return result{reply: reply, err: err}
}

// finish sends the result of the job held: REPLY, or FAIL on error.
func (s *session) finish(now time.Time, r result) {
	j := s.job
	s.job = nil
	j.cancel()
	took := now.Sub(j.started)
	if r.stack != nil {
		s.log.Error("handler panicked", "err", r.err, "stack", string(r.stack))
	}
	if j.orphaned || s.dealer == nil {
		s.w.c.discarded.Add(1)
		s.log.Warn("discarded the result of a request whose connection was lost", "took", took, "failed", r.err != nil)
		return
	}
	if r.err != nil {
		s.log.Info("request failed", "err", r.err, "took", took)
		if s.send(now, mdp.WorkerEnvelope(mdp.Fail, j.client, failReason(r.err))) {
			s.w.c.failures.Add(1)
		}
		return
	}
	reply := r.reply
	if len(reply) == 0 {
		reply = [][]byte{{}} // MDP needs a body frame
	}
	s.log.Debug("request handled", "took", took, "frames", len(reply))
	if s.send(now, mdp.WorkerEnvelope(mdp.Reply, j.client, reply...)) {
		s.w.c.replies.Add(1)
	}
}

// teardown cancels the job held, says DISCONNECT (best effort) and
// closes every socket of the slot.
func (s *session) teardown() {
	if s.job != nil {
		s.stopJob()
	}
	if s.dealer != nil {
		// Linger a moment so that DISCONNECT (and a drained job's
		// REPLY, queued before it) leaves; never for long.
		_ = s.dealer.SetLinger(shutdownLinger)
		_, _ = s.frames.Send(mdp.WorkerCommand(mdp.Disconnect), zmq.DONTWAIT)
		s.detach()
		s.log.Info("disconnected from broker", "endpoint", s.endpoint)
	}
	_ = s.bell.Close()
}

// stopJob deals with the job held when Run stops. A result that is ready
// and successful is still sent; anything else (a handler still running, or
// one that failed, perhaps because Run stopped) is discarded: the broker
// learns from DISCONNECT that the request was not done.
func (s *session) stopJob() {
	select {
	case r := <-s.job.done:
		if r.err == nil && !s.job.orphaned && s.dealer != nil {
			s.finish(time.Now(), r)
			return
		}
	default:
	}
	s.job.cancel()
	s.job = nil
	s.w.c.discarded.Add(1)
	s.log.Info("stopping with a request in progress: its result is discarded")
}

func isAgain(err error) bool { return zmq.AsErrno(err) == zmq.Errno(syscall.EAGAIN) }
