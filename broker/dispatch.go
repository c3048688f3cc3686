package broker

import (
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"time"

	"github.com/titanicmq/titanic/broker/mdp"
)

// enqueue queues a plain request for its service and dispatches.
func (s *state) enqueue(now time.Time, id string, m mdp.Message) {
	s.enqueueRoute(now, id, m.Service, m.Body)
}

// enqueueRoute queues a plain request for service with the route its
// answer takes (a client's ROUTER identity, or a peer's cloud route).
// It reports whether the request was queued (not dropped: queue full).
func (s *state) enqueueRoute(now time.Time, id, service string, body [][]byte) bool {
	svc := s.service(service)
	s.expire(now, svc)
	// The route is held as long as the body: a peer's carries its token.
	size := len(id) + bodyBytes(body)
	if svc.queue.len() >= s.cfg.MaxQueue || s.queuedBytes+size > s.cfg.MaxQueuedBytes {
		s.c.RequestsDropped++
		s.dropped++
		if now.Sub(s.lastDropLog) >= dropLogEvery {
			s.log.Warn("queue full: dropping requests", "service", svc.name,
				"max_queue", s.cfg.MaxQueue, "queued_bytes", s.queuedBytes, "max_queued_bytes", s.cfg.MaxQueuedBytes, "dropped", s.dropped)
			s.lastDropLog, s.dropped = now, 0
		}
		s.gc(svc) // a service made only for this request goes again
		return false
	}
	svc.queue.push(&pending{client: id, body: body, size: size, expires: now.Add(s.cfg.RequestExpiry)})
	s.queuedBytes += size
	s.dispatch(now, svc)
	s.gc(svc)
	return true
}

// bodyBytes is the size of a request body, plus a per-frame overhead so
// that floods of empty frames count too.
func bodyBytes(body [][]byte) int {
	n := 0
	for _, f := range body {
		n += len(f) + 16
	}
	return n
}

// expire drops the plain requests of svc that waited RequestExpiry. 7/MDP
// has no error reply: the client sees nothing and retries or gives up.
func (s *state) expire(now time.Time, svc *service) {
	for {
		p := svc.queue.peek()
		if p == nil || now.Before(p.expires) {
			return
		}
		svc.queue.pop()
		s.queuedBytes -= p.size
		s.c.RequestsExpired++
		if s.peering != nil && strings.HasPrefix(p.client, cloudRoutePrefix) {
			s.answerOrigin(p.client, false, [][]byte{[]byte("no worker within the request expiry")})
		}
		s.log.Debug("request expired", "service", svc.name, "client", routeString(p.client))
	}
}

// dispatch hands work to the idle workers of svc, the idle-longest first,
// alternating between the plain queue and the Source so that neither
// starves the other.
func (s *state) dispatch(now time.Time, svc *service) {
	for svc.idle.Len() > 0 {
		var ok bool
		if svc.jobFirst {
			ok = s.dispatchJob(now, svc) || s.dispatchPlain(now, svc)
		} else {
			ok = s.dispatchPlain(now, svc) || s.dispatchJob(now, svc)
		}
		if !ok {
			return
		}
	}
}

// takeIdle removes and returns the worker of svc idle longest.
func (s *state) takeIdle(svc *service) *worker {
	w := svc.idle.Remove(svc.idle.Front()).(*worker)
	w.elem = nil
	return w
}

// dispatchPlain sends the oldest plain request of svc to its idle-longest
// worker. It reports whether a worker was used up.
func (s *state) dispatchPlain(now time.Time, svc *service) bool {
	s.expire(now, svc)
	p := svc.queue.pop()
	if p == nil {
		return false
	}
	s.queuedBytes -= p.size
	w := s.takeIdle(svc)
	err := s.sendWorker(now, w, s.workerRequest([]byte(p.client), nonEmpty(p.body)))
	s.sent()
	if err != nil {
		// It never left: it goes back to the head for the next worker.
		svc.queue.pushFront(p)
		s.queuedBytes += p.size
		s.removeWorker(w, "send request: "+err.Error(), false)
		return true
	}
	w.state, w.client, w.given = workPlain, p.client, now
	s.c.RequestsDispatched++
	svc.jobFirst = true
	return true
}

// dispatchJob asks the Source for a durable job for svc and sends it to the
// idle-longest worker. It reports whether a worker was used up.
func (s *state) dispatchJob(now time.Time, svc *service) bool {
	if s.source == nil {
		return false
	}
	// The worker takeIdle will give the job to: the Source records it.
	name := svc.idle.Front().Value.(*worker).name
	job, ok := s.source.Next(svc.name, name)
	if !ok {
		return false
	}
	w := s.takeIdle(svc)
	s.nextLease++
	lease := Lease{ID: s.nextLease, Service: svc.name, Token: job.Token, Worker: name, Tag: job.Tag}
	err := s.sendWorker(now, w, s.workerRequest(job.Token, nonEmpty(job.Body)))
	s.sent()
	if err != nil {
		reason := "send request: " + err.Error()
		s.c.JobsUnsent++
		s.source.Unsent(lease, reason)
		s.removeWorker(w, reason, false)
		return true
	}
	w.state, w.lease, w.given = workLeased, lease, now
	s.leases[lease.ID] = w
	s.c.JobsDispatched++
	svc.jobFirst = false
	return true
}

// nonEmpty returns body, or one empty frame when body has none: 7/MDP
// messages carry at least one body frame.
func nonEmpty(body [][]byte) [][]byte {
	if len(body) == 0 {
		return [][]byte{{}}
	}
	return body
}

// tick runs the timers: worker expiry, heartbeats, plain request expiry.
// The loop calls it a few times per heartbeat interval.
func (s *state) tick(now time.Time) {
	s.peerTick(now)
	s.unreadTick(now)
	if s.gate != nil && !s.gate.Active() {
		// Not the active node: send every worker to the one that is.
		for _, w := range s.workers {
			s.removeWorker(w, "broker not active", true)
		}
	}
	expiry := s.cfg.HeartbeatInterval * time.Duration(s.cfg.HeartbeatLiveness)
	for _, w := range s.workers {
		silent := now.Sub(w.lastRecv)
		switch {
		case w.busy() && !w.beatsWhileBusy:
			if silent > s.cfg.LeaseTimeout {
				s.c.LeasesExpired++
				s.removeWorker(w, fmt.Sprintf("lease timeout: busy worker silent for %s", silent.Round(time.Millisecond)), true)
				continue
			}
		case silent > expiry:
			s.c.WorkersExpired++
			s.removeWorker(w, fmt.Sprintf("worker expired: silent for %s (%d heartbeats of %s: a worker must beat at the broker's --heartbeat)",
				silent.Round(time.Millisecond), s.cfg.HeartbeatLiveness, s.cfg.HeartbeatInterval), true)
			continue
		}
		if now.Sub(w.lastSent) >= s.cfg.HeartbeatInterval {
			err := s.sendWorker(now, w, mdp.WorkerCommand(mdp.Heartbeat))
			if errors.Is(err, errUnroutable) {
				reason := "worker unreachable"
				if w.busy() {
					// libzmq closes a connection that sends a frame over
					// ZMQ_MAXMSGSIZE: a worker's too large reply, most
					// likely, when it happens mid-job.
					reason = fmt.Sprintf("worker unreachable while it ran the job: its connection closed (a worker that sends a frame over limits.max_message_size, %d bytes, a reply say, is cut off; or it died)", s.cfg.MaxMsgSize)
				}
				s.removeWorker(w, reason, false)
			}
		}
	}
	for _, svc := range s.services {
		s.expire(now, svc)
		s.gc(svc)
	}
}

// reply sends a Handler's deferred answer (Broker.Reply).
func (s *state) reply(c Client, service string, body [][]byte) {
	s.c.HandlerReplies++
	s.sendClient(c.id, service, body)
}

// release frees the worker that holds a completed lease (Broker.Release).
// An unknown, expired or not yet completed lease is ignored.
func (s *state) release(now time.Time, id uint64) {
	w := s.leases[id]
	if w == nil || w.state != workReserved || w.lease.ID != id {
		return
	}
	delete(s.leases, id)
	s.setIdle(w)
	s.dispatch(now, w.svc)
}

// wake dispatches to the idle workers of service (Broker.Wake).
func (s *state) wake(now time.Time, service string) {
	if svc := s.services[service]; svc != nil {
		s.dispatch(now, svc)
	}
	s.cloudDispatch(now, service)
}

// snapshot returns the broker's Stats.
func (s *state) snapshot() Stats {
	st := Stats{Workers: len(s.workers), Leases: len(s.leases), Counters: s.c}
	st.Services = make([]ServiceStats, 0, len(s.services))
	for _, svc := range s.services {
		st.Services = append(st.Services, ServiceStats{
			Name:    svc.name,
			Workers: svc.workers,
			Idle:    svc.idle.Len(),
			Busy:    svc.workers - svc.idle.Len(),
			Queued:  svc.queue.len(),
		})
	}
	sort.Slice(st.Services, func(i, j int) bool { return st.Services[i].Name < st.Services[j].Name })
	if s.peering != nil {
		for _, p := range s.peering.peers {
			st.Peers = append(st.Peers, PeerStats{Name: p.name, Cloud: p.cfg.Cloud, State: p.cfg.State, Alive: p.alive, Spare: maps.Clone(p.spare), Reserved: maps.Clone(p.reserved)})
		}
		sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].Name < st.Peers[j].Name })
	}
	return st
}

// fifo is a queue of plain requests.
type fifo struct {
	items []*pending
	head  int
}

func (q *fifo) len() int { return len(q.items) - q.head }

func (q *fifo) push(p *pending) { q.items = append(q.items, p) }

func (q *fifo) peek() *pending {
	if q.len() == 0 {
		return nil
	}
	return q.items[q.head]
}

func (q *fifo) pop() *pending {
	p := q.peek()
	if p == nil {
		return nil
	}
	q.items[q.head] = nil
	q.head++
	switch {
	case q.head == len(q.items):
		q.items, q.head = q.items[:0], 0
	case q.head > 64 && q.head > len(q.items)/2:
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	return p
}

func (q *fifo) pushFront(p *pending) {
	if q.head > 0 {
		q.head--
		q.items[q.head] = p
		return
	}
	q.items = append([]*pending{p}, q.items...)
}
