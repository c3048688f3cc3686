package broker

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/titanicmq/titanic/broker/mdp"
	"github.com/titanicmq/titanic/broker/zsock"
	"github.com/titanicmq/titanic/internal/lograte"
)

// mmiPrefix names the services the broker answers itself (8/MMI).
const mmiPrefix = "mmi."

// mmiService is the one MMI service the broker implements.
const mmiService = "mmi.service"

// maxReason bounds the FAIL reason handed to Source.Failed.
const maxReason = 1024

// dropLogEvery is how often, at most, the broker logs that a service's
// plain queue is full.
const dropLogEvery = 10 * time.Second

// sendFunc sends frames to the peer with ROUTER identity to. It never
// blocks. It must not keep frames, nor the slices in it, after it returns:
// the state reuses them for the next message (state.msg). It returns errUnroutable when the peer is gone, errWouldBlock when
// its pipe is full, or another error.
type sendFunc func(to string, frames [][]byte) error

// prefixHandler is a Handler registered for a service-name prefix.
type prefixHandler struct {
	prefix string
	h      Handler
	from   bool // its requests carry Request.From
}

// state is the broker's protocol state: services, workers, queues and
// leases. It owns no socket: it sends through send and is driven by the
// loop (or a test) with receive, tick and the command methods, each given
// the current time. It is not safe for concurrent use.
type state struct {
	cfg      Config
	log      *slog.Logger
	send     sendFunc
	source   Source          // nil: plain Majordomo only
	handlers []prefixHandler // longest prefix first
	// from returns the address the message being handled came from
	// (nil: unknown), for handlers registered with HandleFrom.
	from    func() string
	gate    Gate     // nil: always serve
	peering *peering // nil: no peers

	services  map[string]*service
	workers   map[string]*worker // registered workers by ROUTER identity
	leases    map[uint64]*worker
	nextLease uint64
	// queuedBytes is the size of every plain request queued, bounded by
	// MaxQueuedBytes.
	queuedBytes int
	// Drops of plain requests are logged at most every dropLogEvery.
	lastDropLog time.Time
	dropped     uint64 // since lastDropLog
	// Refusals of too many frames, likewise.
	lastFramesLog time.Time
	framesRefused uint64 // since lastFramesLog
	// Clients not reading their answers (unread.go).
	unread unreadClients
	// complaints bounds the warnings a worker's protocol errors cause
	// (complain): one bad connection repeating one in a loop must not
	// write a line per message.
	complaints *lograte.Limiter

	// msg holds the frames of the reply or request being sent, and name
	// the service frame of a reply: reused from one send to the next,
	// which send allows (sendFunc), they save a slice and a frame per
	// message. The MDP frames that never change are made once.
	msg                           [][]byte
	name                          []byte
	clientHdr, workerHdr, request []byte

	c Counters
}

// workState is what a registered worker is doing.
type workState int

const (
	workIdle     workState = iota // waiting for work, in its service's idle list
	workPlain                     // holds a plain request
	workLeased                    // holds a durable job, no reply yet
	workReserved                  // replied to its job; waits for Release
)

type worker struct {
	id    string
	name  string // WorkerName(id), for the Source and the attempt history
	svc   *service
	state workState
	elem  *list.Element // position in svc.idle while idle, else nil
	// client is the route of the plain request held (workPlain).
	client string
	// lease is the durable job held (workLeased, workReserved).
	lease Lease
	// lastRecv and lastSent drive expiry and heartbeats.
	lastRecv, lastSent time.Time
	// beatsWhileBusy: the worker has sent HEARTBEAT while holding work, so
	// heartbeat expiry applies to it even when busy.
	beatsWhileBusy bool
	// given is when the work it holds was sent to it: only a HEARTBEAT
	// that comes a heartbeat interval after that shows a worker that
	// beats while busy. One sooner may have crossed the REQUEST (the
	// Guide's worker beats only while it waits for work, and beats
	// right after its REPLY when a long job made it overdue): taken for
	// a busy beat, it held the Guide's worker to heartbeat expiry, and its
	// next long job was taken away mid-run.
	given time.Time
}

func (w *worker) busy() bool { return w.state == workPlain || w.state == workLeased }

type service struct {
	name    string
	workers int        // registered
	idle    *list.List // of *worker; front = idle longest
	queue   fifo       // plain requests
	// jobFirst: the next dispatch tries the Source before the plain queue.
	jobFirst bool
}

// pending is a plain request waiting for a worker.
type pending struct {
	client  string
	body    [][]byte
	size    int // bodyBytes(body)
	expires time.Time
}

func newState(cfg Config, log *slog.Logger, send sendFunc, source Source, handlers []prefixHandler) *state {
	return &state{
		cfg:      cfg,
		log:      log,
		send:     send,
		source:   source,
		handlers: handlers,
		services: make(map[string]*service),
		workers:  make(map[string]*worker),
		leases:   make(map[uint64]*worker),

		clientHdr: []byte(mdp.ClientHeader),
		workerHdr: []byte(mdp.WorkerHeader),
		request:   []byte{byte(mdp.Request)},

		complaints: lograte.New(lograte.Every),
	}
}

// clientReply is mdp.ClientReply(service, body...), built in s.msg.
func (s *state) clientReply(service string, body [][]byte) [][]byte {
	s.name = append(s.name[:0], service...)
	s.msg = append(append(s.msg[:0], []byte{}, s.clientHdr, s.name), body...)
	return s.msg
}

// workerRequest is mdp.WorkerEnvelope(mdp.Request, client, body...), built
// in s.msg.
func (s *state) workerRequest(client []byte, body [][]byte) [][]byte {
	s.msg = append(append(s.msg[:0], []byte{}, s.workerHdr, s.request, client, []byte{}), body...)
	return s.msg
}

// sent forgets the frames of the message just sent, which s.msg would
// otherwise keep from the garbage collector until the next one.
func (s *state) sent() { clear(s.msg) }

// receive handles one message from the ROUTER socket: the identity frame,
// then the MDP frames.
func (s *state) receive(now time.Time, frames [][]byte) {
	if len(frames) < 1 {
		s.c.Malformed++
		return
	}
	id := string(frames[0])
	m, err := mdp.ParseBroker(frames[1:])
	if errors.Is(err, mdp.ErrNoBody) && s.answersItself(m.Service) {
		// A request without a body for a service this broker answers
		// (MMI, a handler's: 9/TSP's) gets its refusal, as one with an
		// empty body frame would ("400", "404"), not silence; one for a
		// worker's service is dropped, as 7/MDP says.
		s.c.Malformed++
		m.Body, err = [][]byte{{}}, nil
	}
	if err != nil {
		s.c.Malformed++
		if w := s.workers[id]; w != nil && w.busy() && malformedAnswer(frames[1:]) {
			// A busy worker's REPLY or FAIL that breaks 7/MDP (no body
			// frame, say) answers nothing: its job would wait for the
			// lease to end. The worker is disconnected at once, and the
			// job's attempt ends now (a failed attempt: a durable
			// ticket is retried after its backoff; a plain request is
			// lost, as with any worker that goes). Other malformed
			// messages of a registered worker are dropped and leave it
			// be.
			s.complain(now, "malformed answer: disconnecting worker", "worker", routeString(id), "service", w.svc.name, "err", err)
			s.remove(w, "protocol error: "+err.Error(), true, false)
			return
		}
		if s.workers[id] == nil && invalidReady(frames[1:]) {
			// A READY the broker cannot take: the worker is told, or it
			// would believe itself registered and wait for work for ever.
			s.complain(now, "READY refused: disconnecting worker", "worker", routeString(id), "err", err)
			s.disconnect(id)
			return
		}
		s.log.Debug("dropped invalid message", "from", routeString(id), "err", err)
		return
	}
	switch m.Kind {
	case mdp.KindClient:
		s.clientRequest(now, id, m)
	case mdp.KindWorker:
		s.workerMessage(now, id, m)
	}
}

// tooManyFrames counts a message refused by zsock for its frame count,
// and logs refusals at most every dropLogEvery: a hostile peer sending
// them in a loop must not flood the log.
func (s *state) tooManyFrames(now time.Time, socket string, err error) {
	var tl *zsock.TooLargeError
	large := errors.As(err, &tl)
	if large {
		s.c.TooLarge++
		if w := s.workers[string(tl.First)]; w != nil && socket == "router" {
			// A worker's message (its reply, most likely) was dropped:
			// it would go on heartbeating with the job's lease held for
			// good. Its attempt fails, and says why.
			s.complainRemove(now, w, fmt.Sprintf("worker sent a message of over %d bytes, larger in all than limits.max_message_size (%d) allows", tl.Bytes, s.cfg.MaxMsgSize))
		}
	} else {
		s.c.TooManyFrames++
		var tm *zsock.TooManyFramesError
		if errors.As(err, &tm) && socket == "router" {
			if w := s.workers[string(tm.First)]; w != nil {
				// As above: its reply, most likely, is gone.
				s.complainRemove(now, w, fmt.Sprintf("worker sent a message of %d frames, more than the %d the broker takes", tm.Frames, s.cfg.MaxFrames))
			} else {
				s.refuseFrames(tm)
			}
		}
	}
	s.framesRefused++
	if now.Sub(s.lastFramesLog) < dropLogEvery {
		return
	}
	if large {
		s.log.Warn("dropped messages over the size limit", "socket", socket, "from", routeString(string(tl.First)),
			"bytes_at_least", tl.Bytes, "max_message_size", s.cfg.MaxMsgSize, "dropped", s.framesRefused)
	} else {
		var tm *zsock.TooManyFramesError
		from, frames := "", 0
		if errors.As(err, &tm) {
			from, frames = routeString(string(tm.First)), tm.Frames
		}
		s.log.Warn("dropped messages with too many frames", "socket", socket, "from", from,
			"frames", frames, "max_frames", s.cfg.MaxFrames, "dropped", s.framesRefused)
	}
	s.lastFramesLog, s.framesRefused = now, 0
}

// refuseFrames answers a client request the receive dropped for its frame
// count, when it was for a service a Handler serves and Config.RefuseFrames
// gives an answer: a client of the Guide's Lazy Pirate kind otherwise
// tries again and again, and gives up without knowing why. A request for
// a worker's service is dropped unanswered (7/MDP has no error reply).
func (s *state) refuseFrames(tm *zsock.TooManyFramesError) {
	if s.cfg.RefuseFrames == nil || len(tm.Head) < 3 {
		return
	}
	id, rest := string(tm.Head[0]), tm.Head[1:]
	if len(rest[0]) == 0 {
		rest = rest[1:] // the REQ (or Guide DEALER) delimiter
	}
	if len(rest) < 2 || string(rest[0]) != mdp.ClientHeader {
		return
	}
	service := string(rest[1])
	if s.handlerFor(service) == nil {
		return
	}
	if body := s.cfg.RefuseFrames(service, rest[2:], tm.Frames); body != nil {
		s.sendClient(id, service, body)
	}
}

func (s *state) handlerFor(service string) *prefixHandler {
	for i := range s.handlers {
		if strings.HasPrefix(service, s.handlers[i].prefix) {
			return &s.handlers[i]
		}
	}
	return nil
}

func (s *state) clientRequest(now time.Time, id string, m mdp.Message) {
	s.c.Requests++
	if s.gate != nil && !s.gate.Admit(m.Service) {
		s.c.NotActive++
		if body := s.gate.Refusal(m.Service); body != nil {
			s.sendClient(id, m.Service, body)
		}
		return
	}
	if strings.HasPrefix(m.Service, mmiPrefix) {
		s.c.MMIRequests++
		code := "501"
		if m.Service == mmiService {
			// As the reference brokers do, the name is the last body frame.
			code = "404"
			if s.present(string(m.Body[len(m.Body)-1])) {
				code = "200"
			}
		}
		s.sendClient(id, m.Service, [][]byte{[]byte(code)})
		return
	}
	if ph := s.handlerFor(m.Service); ph != nil {
		s.c.HandlerRequests++
		req := Request{Client: Client{id: id}, Service: m.Service, Body: m.Body, Unread: s.isUnread(id)}
		if ph.from && s.from != nil {
			req.From = s.from()
		}
		if body := ph.h.ServeMDP(req); body != nil {
			s.c.HandlerReplies++
			s.sendClient(id, m.Service, body)
		}
		return
	}
	s.enqueue(now, id, m)
}

// malformedAnswer reports whether frames (a message ParseBroker refused)
// are a worker's REPLY or FAIL.
func malformedAnswer(frames [][]byte) bool {
	return len(frames) > 2 && string(frames[1]) == mdp.WorkerHeader && len(frames[2]) == 1 &&
		(mdp.Command(frames[2][0]) == mdp.Reply || mdp.Command(frames[2][0]) == mdp.Fail)
}

// invalidReady reports whether frames (a message ParseBroker refused) are a
// READY that 7/MDP finds valid and this broker cannot take: its service
// name is longer than mdp.MaxServiceName. (7/MDP sets no bound; a READY
// that breaks 7/MDP itself is dropped, as it says.)
func invalidReady(frames [][]byte) bool {
	return len(frames) == 4 && len(frames[0]) == 0 && string(frames[1]) == mdp.WorkerHeader && len(frames[2]) == 1 &&
		mdp.Command(frames[2][0]) == mdp.Ready && len(frames[3]) > mdp.MaxServiceName
}

// answersItself reports whether the broker answers requests for service
// itself (MMI, or a handler) rather than passing them to a worker.
func (s *state) answersItself(service string) bool {
	return strings.HasPrefix(service, mmiPrefix) || s.handlerFor(service) != nil
}

// present answers mmi.service: a worker is registered for name (idle or
// busy), a live peer advertises it (it serves this broker's tickets: a
// cloud front has no workers of its own, and `titanic submit --wait`
// would warn that none serves), or the broker serves it itself (a name
// under a handler's prefix only if the handler serves it: one it refuses
// as unknown is not there).
func (s *state) present(name string) bool {
	if svc := s.services[name]; svc != nil && svc.workers > 0 {
		return true
	}
	if s.peering != nil && s.peering.remote[name] > 0 {
		return true
	}
	if ph := s.handlerFor(name); ph != nil {
		return ph.h.Serves(name)
	}
	return name == mmiService
}

func (s *state) workerMessage(now time.Time, id string, m mdp.Message) {
	w := s.workers[id]
	if m.Command == mdp.Disconnect {
		if w != nil {
			s.removeWorker(w, "worker disconnected", false)
		}
		return
	}
	if w == nil {
		if m.Command == mdp.Ready {
			s.register(now, id, m.Service)
			return
		}
		s.log.Debug("unexpected command from an unregistered worker", "worker", routeString(id), "command", m.Command)
		s.disconnect(id)
		return
	}
	w.lastRecv = now
	switch m.Command {
	case mdp.Ready:
		s.complain(now, "second READY: disconnecting worker", "worker", routeString(id), "service", w.svc.name)
		s.remove(w, "protocol error: second READY", true, false)
	case mdp.Heartbeat:
		if w.busy() && now.Sub(w.given) >= s.cfg.HeartbeatInterval {
			w.beatsWhileBusy = true
		}
	case mdp.Reply:
		s.workerReply(now, w, m)
	case mdp.Fail:
		s.workerFail(now, w, m)
	}
}

func (s *state) register(now time.Time, id, name string) {
	if s.gate != nil && !s.gate.Active() {
		s.c.NotActive++
		s.disconnect(id)
		return
	}
	if strings.HasPrefix(name, mmiPrefix) || s.handlerFor(name) != nil {
		s.complain(now, "READY for a reserved service: disconnecting worker", "worker", routeString(id), "service", name)
		s.disconnect(id)
		return
	}
	svc := s.service(name)
	w := &worker{id: id, name: WorkerName(id), svc: svc, lastRecv: now, lastSent: now}
	s.workers[id] = w
	svc.workers++
	s.log.Debug("worker registered", "worker", routeString(id), "service", name, "workers", svc.workers)
	if s.source != nil {
		s.tellWorkers(name)
	}
	s.setIdle(w)
	s.dispatch(now, svc)
}

func (s *state) workerReply(now time.Time, w *worker, m mdp.Message) {
	switch {
	case w.state == workPlain && string(m.Client) == w.client:
		s.c.RepliesRelayed++
		s.sendClient(w.client, w.svc.name, m.Body)
		s.setIdle(w)
		s.dispatch(now, w.svc)
	case w.state == workLeased && bytes.Equal(m.Client, w.lease.Token):
		s.c.JobsCompleted++
		w.state = workReserved
		s.source.Completed(w.lease, m.Body)
	default:
		s.stale(now, w, m)
	}
}

func (s *state) workerFail(now time.Time, w *worker, m mdp.Message) {
	reason := m.Body[0]
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	switch {
	case w.state == workPlain && string(m.Client) == w.client:
		// 7/MDP has no error reply: the client's request is dropped. A
		// peer's request is answered FAIL, so the origin redelivers.
		s.c.RequestsFailed++
		if s.peering != nil && strings.HasPrefix(w.client, cloudRoutePrefix) {
			s.answerOrigin(w.client, false, [][]byte{reason})
		}
		s.setIdle(w)
		s.dispatch(now, w.svc)
	case w.state == workLeased && bytes.Equal(m.Client, w.lease.Token):
		lease := w.lease
		delete(s.leases, lease.ID)
		s.c.JobsFailed++
		s.setIdle(w)
		s.source.Failed(lease, "worker: "+string(reason))
		s.dispatch(now, w.svc)
	default:
		s.stale(now, w, m)
	}
}

// stale handles a REPLY or FAIL for a request w does not hold: a valid
// but unexpected command, which 7/MDP answers with DISCONNECT. The worker
// believes it answered, and would wait for work and heartbeat while the
// broker held its job for good; so it goes, and the work it holds fails
// its attempt now.
func (s *state) stale(now time.Time, w *worker, m mdp.Message) {
	s.c.StaleReplies++
	s.complain(now, "answer for a request the worker does not hold: disconnecting worker", "worker", routeString(w.id), "service", w.svc.name,
		"command", m.Command, "client", routeString(string(m.Client)))
	s.remove(w, fmt.Sprintf("protocol error: %s for a request it does not hold", m.Command), true, false)
}

// complain logs a warning a worker's protocol error causes, at most once
// per message every lograte.Every, with the count of those left out since
// ("suppressed"): a peer can repeat the error with every message it
// sends, and the broker's counters count each one. msg is one of a fixed
// set of strings, so the kinds are bounded.
func (s *state) complain(now time.Time, msg string, args ...any) {
	n, ok := s.complaints.Allow(now, msg)
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	s.log.Warn(msg, args...)
}

// complainRemove disconnects and removes w for a message over the limits,
// which it can send in a loop, re-registering in between: its removal is
// logged as a complaint, rate-limited, not a line each.
func (s *state) complainRemove(now time.Time, w *worker, reason string) {
	s.complain(now, "worker sent a message over the limits: disconnecting worker", "worker", routeString(w.id), "service", w.svc.name, "reason", reason)
	s.remove(w, reason, true, false)
}

// removeWorker forgets w. Work it holds is given up: a durable job is
// reported to Source.Failed with reason, a plain request is lost. With
// disconnect, it is sent DISCONNECT first.
func (s *state) removeWorker(w *worker, reason string, disconnect bool) {
	s.remove(w, reason, disconnect, true)
}

// remove is removeWorker, logging the removal only with logRemoval: a
// removal for a protocol error was logged already, rate-limited, by the
// complaint that caused it.
func (s *state) remove(w *worker, reason string, disconnect, logRemoval bool) {
	if s.workers[w.id] != w {
		return
	}
	delete(s.workers, w.id)
	svc := w.svc
	if w.elem != nil {
		svc.idle.Remove(w.elem)
		w.elem = nil
	}
	if disconnect {
		s.disconnect(w.id)
	}
	svc.workers--
	if logRemoval {
		s.log.Info("worker removed", "worker", routeString(w.id), "service", svc.name, "reason", reason, "workers", svc.workers)
	}
	switch w.state {
	case workPlain:
		s.c.RequestsLost++
		if s.peering != nil && strings.HasPrefix(w.client, cloudRoutePrefix) {
			s.answerOrigin(w.client, false, [][]byte{[]byte("worker lost: " + reason)})
		}
	case workLeased:
		delete(s.leases, w.lease.ID)
		s.c.JobsFailed++
		s.source.Failed(w.lease, reason)
	case workReserved:
		delete(s.leases, w.lease.ID)
	}
	if s.source != nil {
		s.tellWorkers(svc.name)
	}
	s.gc(svc)
}

// byeWorkers sends every registered worker DISCONNECT (the broker
// stops), and returns how many it told. The workers stay registered: the
// state is not used after.
func (s *state) byeWorkers() int {
	for id := range s.workers {
		s.disconnect(id)
	}
	return len(s.workers)
}

// disconnect sends DISCONNECT to id.
func (s *state) disconnect(id string) {
	s.c.DisconnectsSent++
	s.count(s.send(id, mdp.WorkerCommand(mdp.Disconnect)))
}

// sendWorker sends frames to w and notes when. On errUnroutable and
// errWouldBlock the caller decides what becomes of w.
func (s *state) sendWorker(now time.Time, w *worker, frames [][]byte) error {
	err := s.send(w.id, frames)
	if err == nil {
		w.lastSent = now
	}
	s.count(err)
	return err
}

// sendClient sends a reply to a client. A body must have a frame: an empty
// one gets one empty frame.
func (s *state) sendClient(id, service string, body [][]byte) {
	if s.peering != nil && strings.HasPrefix(id, cloudRoutePrefix) {
		s.answerOrigin(id, true, body)
		return
	}
	if len(body) == 0 {
		body = [][]byte{{}}
	}
	err := s.send(id, s.clientReply(service, body))
	s.sent()
	s.count(err)
	s.noteSend(id, err)
	// Checked first: a client that does not read has every answer
	// dropped, and building the record would cost each one allocations.
	if err != nil && s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("reply to client dropped", "client", routeString(id), "service", service, "err", err)
	}
}

// count counts a failed send.
func (s *state) count(err error) {
	switch {
	case err == nil:
	case errors.Is(err, errUnroutable):
		s.c.Unroutable++
	case errors.Is(err, errWouldBlock):
		s.c.SendDropped++
	default:
		s.c.SendErrors++
	}
}

// service returns the named service, creating it.
func (s *state) service(name string) *service {
	svc := s.services[name]
	if svc == nil {
		svc = &service{name: name, idle: list.New()}
		s.services[name] = svc
	}
	return svc
}

// gc forgets a service with no workers and no queued requests, so that
// requests for random names cannot grow the table for ever.
func (s *state) gc(svc *service) {
	if svc.workers == 0 && svc.queue.len() == 0 && s.services[svc.name] == svc {
		delete(s.services, svc.name)
	}
}

// setIdle puts w at the back of its service's idle list.
func (s *state) setIdle(w *worker) {
	w.state, w.client, w.lease = workIdle, "", Lease{}
	if w.elem == nil {
		w.elem = w.svc.idle.PushBack(w)
	}
}
