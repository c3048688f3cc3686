package titanic

import (
	"fmt"
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
// else (lookups, replies, closes, which free space) goes on.

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
	if l.clients == nil {
		l.clients = make(map[broker.Client]*clientState)
	}
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
		return replyText(tsp.CodeError, tsp.Busy.Text(fmt.Sprintf("%d requests in flight", st.inflight)))
	}
	if submit && s.cfg.SubmitRate > 0 {
		st.tokens = min(s.burst(), st.tokens+now.Sub(st.refilled).Seconds()*s.cfg.SubmitRate)
		st.refilled = now
		if st.tokens < 1 {
			s.stats.busy.Add(1)
			return replyText(tsp.CodeError, tsp.Busy.Text(fmt.Sprintf("over %g submits/s", s.cfg.SubmitRate)))
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
