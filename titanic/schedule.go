package titanic

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/titanicmq/titanic/store"
)

// The schedule: tickets that wait for a time rather than for a worker.
//
// A pending ticket whose Due is in the future (a delayed or scheduled
// submit, or a retry's backoff) waits in the delay heap, ordered by (Due,
// Seq), not in its service's fifos; a ticket with a Deadline that was
// never dispatched is also in the deadline heap. Both heaps are shared by
// every service and kept by position (entry.duePos, entry.deadlinePos),
// so that adding, removing (dispatch, close, cancel) and taking the
// earliest are O(log n) and nothing is ever scanned. One goroutine
// (schedLoop) sleeps until the earliest time of either heap, woken
// earlier when a push puts an earlier time on top; it then moves the due
// tickets into their fifos (and wakes the broker for their services) and
// fails the expired ones.

// entryHeap is a binary min-heap of entries that records each entry's
// position in it (pos), so that an entry can be removed from the middle.
type entryHeap struct {
	items []*entry
	less  func(a, b *entry) bool
	pos   func(e *entry) *int // position+1; 0: not in the heap
}

func newDueHeap() entryHeap {
	return entryHeap{
		less: func(a, b *entry) bool {
			if !a.due.Equal(b.due) {
				return a.due.Before(b.due)
			}
			return a.seq < b.seq
		},
		pos: func(e *entry) *int { return &e.duePos },
	}
}

func newDeadlineHeap() entryHeap {
	return entryHeap{
		less: func(a, b *entry) bool {
			if !a.deadline.Equal(b.deadline) {
				return a.deadline.Before(b.deadline)
			}
			return a.seq < b.seq
		},
		pos: func(e *entry) *int { return &e.deadlinePos },
	}
}

func (h *entryHeap) len() int { return len(h.items) }

func (h *entryHeap) top() *entry {
	if len(h.items) == 0 {
		return nil
	}
	return h.items[0]
}

func (h *entryHeap) swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	*h.pos(h.items[i]) = i + 1
	*h.pos(h.items[j]) = j + 1
}

func (h *entryHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(h.items[i], h.items[p]) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h *entryHeap) down(i int) {
	n := len(h.items)
	for {
		l, m := 2*i+1, i
		if l < n && h.less(h.items[l], h.items[m]) {
			m = l
		}
		if l+1 < n && h.less(h.items[l+1], h.items[m]) {
			m = l + 1
		}
		if m == i {
			return
		}
		h.swap(i, m)
		i = m
	}
}

// push adds e and reports whether it is now the earliest.
func (h *entryHeap) push(e *entry) bool {
	h.items = append(h.items, e)
	i := len(h.items) - 1
	*h.pos(e) = i + 1
	h.up(i)
	return *h.pos(e) == 1
}

// remove takes e out of the heap; an entry not in it is left alone.
func (h *entryHeap) remove(e *entry) {
	p := *h.pos(e)
	if p == 0 {
		return
	}
	i, n := p-1, len(h.items)-1
	if i != n {
		h.swap(i, n)
	}
	h.items[n] = nil
	h.items = h.items[:n]
	*h.pos(e) = 0
	if i < n {
		h.down(i)
		h.up(i)
	}
}

// kickSchedule tells schedLoop that an earlier time is on top of a heap.
// It never blocks: a pending kick already makes the loop look again.
func (s *Service) kickSchedule() {
	select {
	case s.schedKick <- struct{}{}:
	default:
	}
}

// placeLocked puts a pending entry where it waits: the delay heap while
// its due time is in the future, else its level's fifo; and in the
// deadline heap when it has a deadline. It reports whether the entry went
// to a fifo (the broker should be woken for its service). Callers hold
// s.mu.
func (s *Service) placeLocked(e *entry, now time.Time) bool {
	q := s.queue(e.service)
	kick := false
	if !e.deadline.IsZero() && e.deadlinePos == 0 {
		kick = s.deadlines.push(e)
	}
	ready := !e.due.After(now)
	if ready {
		q.push(e)
	} else {
		q.delayed++
		q.dwin.saw(delayedKey(e.due, e.seq))
		kick = s.delays.push(e) || kick
	}
	if kick {
		s.kickSchedule()
	}
	return ready
}

// unscheduleLocked takes e out of both heaps. It reports whether e was in
// the delay heap (and so in no fifo). Callers hold s.mu.
func (s *Service) unscheduleLocked(e *entry) bool {
	s.deadlines.remove(e)
	if e.duePos == 0 {
		return false
	}
	s.delays.remove(e)
	if q := s.queues[e.service]; q != nil {
		q.delayed--
	}
	return true
}

// schedLoop runs the schedule until ctx ends: it sleeps until the earliest
// due time or deadline, or until a kick says an earlier one arrived.
func (s *Service) schedLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next, ok := s.runSchedule()
		timer.Stop()
		if ok {
			timer.Reset(max(next.Sub(s.cfg.Now()), 0))
		}
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-s.schedKick:
		}
	}
}

// runSchedule moves the tickets that came due into their fifos, waking the
// broker for their services, and fails those whose deadline passed before
// their dispatch. It returns the earliest time left in either heap (ok
// false: both are empty).
func (s *Service) runSchedule() (next time.Time, ok bool) {
	now := s.cfg.Now()
	var wake []string
	var expired []*entry
	s.mu.Lock()
	for e := s.deadlines.top(); e != nil && !e.deadline.After(now); e = s.deadlines.top() {
		// Still pending (dispatch takes an entry out of this heap): it
		// fails. Out of its queue now, so that it is not dispatched while
		// the failure commits.
		if !s.unscheduleLocked(e) {
			e.gone = true // skipped where it is linked in its fifo
			s.gone[e.service]++
		}
		e.leased, e.failing = true, true
		expired = append(expired, e)
	}
	for e := s.delays.top(); e != nil && !e.due.After(now); e = s.delays.top() {
		s.delays.remove(e)
		q := s.queue(e.service)
		q.delayed--
		// The no-worker timeout counts from when it could first run.
		e.queued = now
		q.push(e)
		if len(wake) == 0 || wake[len(wake)-1] != e.service {
			wake = append(wake, e.service)
		}
		if !q.dwin.all && q.delayed <= s.windowSize()/2 {
			s.requestLoadLocked(e.service) // read the next delayed ones
		}
	}
	for _, h := range []*entryHeap{&s.delays, &s.deadlines} {
		if e := h.top(); e != nil {
			t := e.due
			if h == &s.deadlines {
				t = e.deadline
			}
			if !ok || t.Before(next) {
				next, ok = t, true
			}
		}
	}
	s.mu.Unlock()
	woken := make(map[string]bool, len(wake))
	for _, svc := range wake {
		if !woken[svc] {
			woken[svc] = true
			s.b.Wake(svc)
		}
	}
	for _, e := range expired {
		s.stats.deadlineExpired.Add(1)
		s.fail(e, expiredReason(e.deadline))
	}
	return next, ok
}

// ExpiredPrefix starts the reason of a ticket that was not dispatched by
// its deadline.
const ExpiredPrefix = "expired: "

func expiredReason(deadline time.Time) string {
	return ExpiredPrefix + "not dispatched by " + deadline.UTC().Format(time.RFC3339)
}

// retryPolicy is the policy of e's ticket, field by field: the ticket's
// own (store.Lifecycle.Retry), else its service's (Config.ServiceRetry),
// else the broker's (Config.MaxAttempts, BackoffBase, BackoffMax).
func (s *Service) retryPolicy(e *entry) store.RetryPolicy {
	p := e.retry
	svc := s.cfg.ServiceRetry[e.service]
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = svc.MaxAttempts
	}
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = s.cfg.MaxAttempts
	}
	if p.Base == 0 {
		p.Base = svc.Base
	}
	if p.Base == 0 {
		p.Base = s.cfg.BackoffBase
	}
	if p.Max == 0 {
		p.Max = svc.Max
	}
	if p.Max == 0 {
		p.Max = s.cfg.BackoffMax
	}
	return p
}

// backoff is the pause before the attempt after attempts failed ones:
// exponential, base * 2^(attempts-1), capped at max, with equal jitter
// (uniform in [d/2, d]): at least half the exponential pause, so that a
// failing job never burns its attempts at once, and spread, so that jobs
// failed together by one outage do not all come back at once. A base of
// zero or less means no pause.
func backoff(p store.RetryPolicy, attempts int) time.Duration {
	if p.Base <= 0 {
		return 0
	}
	d := p.Max
	if n := attempts - 1; n >= 0 && n < 62 {
		if b := p.Base << n; b>>n == p.Base && (p.Max <= 0 || b < p.Max) {
			d = b
		}
	}
	if d <= 0 {
		return 0
	}
	half := d / 2
	return half + rand.N(d-half+1)
}
