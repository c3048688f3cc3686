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
// fails the expired ones. It looks at a third heap too: the deadlines of
// tickets that wait on disk, past their windows (the deadline window,
// window.go), so that those expire at their deadline as well.

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
// to a fifo (the broker should be woken for its service), and whether an
// earlier time is now at the top of a heap (the schedule should look
// again). Callers hold d.mu.
func (d *dispatcher) placeLocked(e *entry, now time.Time) (ready, kick bool) {
	q := d.queue(e.service, now)
	if !e.deadline.IsZero() && e.deadlinePos == 0 {
		kick = d.deadlines.push(e)
	}
	ready = !e.due.After(now)
	if ready {
		q.push(e)
	} else {
		q.delayed++
		q.dwin.saw(delayedKey(e.due, e.seq))
		kick = d.delays.push(e) || kick
	}
	return ready, kick
}

// unscheduleLocked takes e out of both heaps. It reports whether e was in
// the delay heap (and so in no fifo). Callers hold d.mu.
func (d *dispatcher) unscheduleLocked(e *entry) bool {
	d.deadlines.remove(e)
	if e.duePos == 0 {
		return false
	}
	d.delays.remove(e)
	if q := d.queues[e.service]; q != nil {
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
	fx, next, ok := s.d.schedule(s.cfg.Now())
	s.apply(fx)
	return next, ok
}

// schedule moves the tickets due by now into their fifos (fx.wake names
// their services) and takes out those whose deadline passed before their
// dispatch, to fail: in memory, or waiting on disk (watched). It returns the earliest time left in either heap (ok
// false: both are empty): the schedule looks again then.
func (d *dispatcher) schedule(now time.Time) (fx effects, next time.Time, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for e := d.deadlines.top(); e != nil && !e.deadline.After(now); e = d.deadlines.top() {
		// Still pending (dispatch takes an entry out of this heap): it
		// fails. Out of its queue now, so that it is not dispatched while
		// the failure commits.
		if !d.unscheduleLocked(e) {
			e.gone = true // skipped where it is linked in its fifo
			d.gone[e.service]++
		}
		e.leased, e.failing = true, true
		fx.fail = append(fx.fail, verdict{e: e, reason: expiredReason(e.deadline), expired: true})
	}
	// Then those that wait on disk (window.go).
	d.expireWatchedLocked(now, &fx)
	for e := d.delays.top(); e != nil && !e.due.After(now); e = d.delays.top() {
		d.delays.remove(e)
		q := d.queue(e.service, now)
		q.delayed--
		// The no-worker timeout counts from when it could first run.
		e.queued = now
		q.push(e)
		fx.wakeService(e.service)
		if !q.dwin.all && q.delayed <= d.cfg.window/2 {
			fx.loadService(e.service) // read the next delayed ones
		}
	}
	for _, h := range []*entryHeap{&d.delays, &d.deadlines, &d.diskDeadlines} {
		if e := h.top(); e != nil {
			t := e.deadline
			if h == &d.delays {
				t = e.due
			}
			if !ok || t.Before(next) {
				next, ok = t, true
			}
		}
	}
	return fx, next, ok
}

// ExpiredPrefix starts the reason of a ticket that was not dispatched by
// its deadline.
const ExpiredPrefix = "expired: "

func expiredReason(deadline time.Time) string {
	return ExpiredPrefix + "not dispatched by " + deadline.UTC().Format(time.RFC3339)
}

// retryConfig is the broker's and the services' retry policies
// (Config.MaxAttempts, BackoffBase, BackoffMax, ServiceRetry).
type retryConfig struct {
	maxAttempts int
	base, max   time.Duration
	service     map[string]store.RetryPolicy
}

func (c *Config) retryConfig() retryConfig {
	return retryConfig{maxAttempts: c.MaxAttempts, base: c.BackoffBase, max: c.BackoffMax, service: c.ServiceRetry}
}

// retryPolicy is the policy of e's ticket (see retryConfig.policy).
func (s *Service) retryPolicy(e *entry) store.RetryPolicy {
	c := s.cfg.retryConfig()
	return c.policy(e)
}

// policy is the policy of e's ticket, field by field: the ticket's own
// (store.Lifecycle.Retry), else its service's (Config.ServiceRetry),
// else the broker's (Config.MaxAttempts, BackoffBase, BackoffMax).
func (c *retryConfig) policy(e *entry) store.RetryPolicy {
	p := e.retry
	svc := c.service[e.service]
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = svc.MaxAttempts
	}
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = c.maxAttempts
	}
	if p.Base == 0 {
		p.Base = svc.Base
	}
	if p.Base == 0 {
		p.Base = c.base
	}
	if p.Max == 0 {
		p.Max = svc.Max
	}
	if p.Max == 0 {
		p.Max = c.max
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
	return backoffWith(p, attempts, rand.N[time.Duration])
}

// backoffWith is backoff with jitter(n) uniform in [0, n).
func backoffWith(p store.RetryPolicy, attempts int, jitter func(time.Duration) time.Duration) time.Duration {
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
	return half + jitter(d-half+1)
}
