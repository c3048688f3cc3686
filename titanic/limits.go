package titanic

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// Self-defence. A client (one connection: one ROUTER identity) may have at
// most PerClientInflight requests waiting for an answer and may submit at
// most SubmitRate tickets per second (bursts of as many); beyond either it
// gets "500 busy, retry later" at once instead of being queued. Bodies are
// bounded by MaxBody (400: resending cannot help). While the data file
// holds Quota bytes or more, submits are refused with 500 and everything
// else (lookups, replies, closes, which free space) goes on. A client
// that does not read its answers (the broker's Request.Unread) has its
// submits refused with busy: their tickets would be committed for nobody.

// clientState is what the limits track per client.
type clientState struct {
	inflight int
	tokens   float64
	refilled time.Time
}

// limiter tracks per-client in-flight requests and submit tokens.
type limiter struct {
	mu      sync.Mutex
	clients map[broker.Client]*clientState
	// The refusals, built once: a flood is refused tens of thousands of
	// times a second, and formatting each would cost the broker loop
	// allocations (and the garbage collector) for the same frames. The
	// frames are shared: nothing writes into an answer, and an appended
	// key gets a new slice (their capacity ends at their length).
	refuseInflight, refuseRate, refuseUnread [][]byte
}

// init makes the map and the refusals on first use; l.mu is held.
func (l *limiter) init(cfg Config) {
	if l.clients != nil {
		return
	}
	l.clients = make(map[broker.Client]*clientState)
	// The inflight count refused is always the limit: admit is the only
	// way up and refuses at it.
	l.refuseInflight = slices.Clip(replyText(tsp.CodeError, tsp.Busy.Text(fmt.Sprintf("%d requests in flight", cfg.PerClientInflight))))
	l.refuseRate = slices.Clip(replyText(tsp.CodeError, tsp.Busy.Text(fmt.Sprintf("over %g submits/s", cfg.SubmitRate))))
	l.refuseUnread = slices.Clip(replyText(tsp.CodeError, tsp.Busy.Text(unreadRefusal)))
}

// unreadRefusal is the text refusing a submit from a client that does not
// read its answers.
const unreadRefusal = "answers not read"

// refuseUnread refuses a submit from a client whose answers the broker
// cannot queue (broker.Request.Unread: its pipe is full). Its ticket would
// be committed, at the cost of every other client's commits, and its
// answer dropped: a ticket nobody knows of. The refusal reaches the client
// once it reads again, and its next submit is served. It returns nil for
// any other client.
func (s *Service) refuseUnread(req broker.Request) [][]byte {
	if !req.Unread {
		return nil
	}
	s.stats.busy.Add(1)
	l := &s.limits
	l.mu.Lock()
	defer l.mu.Unlock()
	l.init(s.cfg)
	return l.refuseUnread
}

// maxTrackedClients bounds the limiter's map; past it new clients are
// refused until idle ones are pruned (a flood of connections).
const maxTrackedClients = 100_000

// admit counts a request of c that will be answered later; submit also
// takes a token. It returns the refusal, or nil.
func (s *Service) admit(c broker.Client, submit bool) [][]byte {
	l := &s.limits
	now := s.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.init(s.cfg)
	st := l.clients[c]
	if st == nil {
		if len(l.clients) >= maxTrackedClients {
			s.stats.busy.Add(1)
			return busyReply()
		}
		st = &clientState{tokens: s.burst(), refilled: now}
		l.clients[c] = st
	}
	if s.cfg.PerClientInflight > 0 && st.inflight >= s.cfg.PerClientInflight {
		s.stats.busy.Add(1)
		return l.refuseInflight
	}
	if submit && s.cfg.SubmitRate > 0 {
		st.tokens = min(s.burst(), st.tokens+now.Sub(st.refilled).Seconds()*s.cfg.SubmitRate)
		st.refilled = now
		if st.tokens < 1 {
			s.stats.busy.Add(1)
			return l.refuseRate
		}
		st.tokens--
	}
	st.inflight++
	return nil
}

func (s *Service) burst() float64 {
	if s.cfg.SubmitBurst > 0 {
		return float64(s.cfg.SubmitBurst)
	}
	return max(1, s.cfg.SubmitRate)
}

// release undoes admit for a request that was answered at once.
func (s *Service) release(c broker.Client) {
	l := &s.limits
	l.mu.Lock()
	if st := l.clients[c]; st != nil && st.inflight > 0 {
		st.inflight--
	}
	l.mu.Unlock()
}

// answer sends a deferred answer to c and counts it out of c's in-flight
// requests.
func (s *Service) answer(c broker.Client, service string, body [][]byte) {
	s.release(c)
	s.b.Reply(c, service, body)
}

// pruneClients forgets clients with nothing in flight whose submit bucket
// has refilled, so that the map follows the active clients.
func (s *Service) pruneClients() {
	l := &s.limits
	now := s.cfg.Now()
	full := time.Duration(float64(time.Second) * s.burst() / max(s.cfg.SubmitRate, 1))
	l.mu.Lock()
	for c, st := range l.clients {
		if st.inflight == 0 && now.Sub(st.refilled) >= full {
			delete(l.clients, c)
		}
	}
	l.mu.Unlock()
}

// refreshUsage records the store's used bytes for the quota check.
func (s *Service) refreshUsage() {
	if s.cfg.Quota <= 0 {
		return
	}
	if us, err := s.st.Usage(); err == nil {
		s.used.Store(us.Used())
	}
}

// overQuota reports the refusal of a submit while the store is full.
func (s *Service) overQuota() [][]byte {
	if s.cfg.Quota > 0 && s.used.Load() >= s.cfg.Quota {
		s.stats.busy.Add(1)
		return replyText(tsp.CodeError, fmt.Sprintf("store full: %d of %d bytes used; retry later", s.used.Load(), s.cfg.Quota))
	}
	return nil
}
