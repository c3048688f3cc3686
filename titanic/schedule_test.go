package titanic

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// fakeClock is a Config.Now the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(2_000_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// submitLC submits a ticket with a lifecycle (as the wire's options
// would) and waits until it is durable and queued.
func (h *harness) submitLC(service, body string, lc store.Lifecycle) string {
	h.t.Helper()
	done := make(chan store.Result, 1)
	err := h.svc.storeSubmit(submitReq{service: service, body: [][]byte{[]byte(body)}, lifecycle: lc}, func(res store.Result, err error) {
		if err != nil {
			h.t.Errorf("submit %s: %v", body, err)
		}
		done <- res
	})
	if err != nil {
		h.t.Fatalf("submit %s: %v", body, err)
	}
	select {
	case res := <-done:
		return res.ID.String()
	case <-time.After(wait):
		h.t.Fatalf("submit %s not durable within %s", body, wait)
	}
	return ""
}

// take dispatches n tickets of service, waiting for bodies the loader
// reads, and returns their bodies in order.
func (h *harness) take(service string, n int) string {
	h.t.Helper()
	var out []string
	for range n {
		_, job := h.next(service)
		out = append(out, string(job.Body[0]))
	}
	return strings.Join(out, " ")
}

// drain dispatches every ticket of service that Next gives now (bodies in
// memory), and returns their bodies in order.
func (h *harness) drain(service string) []string {
	var out []string
	for {
		job, ok := h.svc.Next(service, "w")
		if !ok {
			return out
		}
		out = append(out, string(job.Body[0]))
	}
}

func (h *harness) queueRow(service string) ServiceQueue {
	h.t.Helper()
	qs, err := h.svc.QueueStats(context.Background(), service)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, r := range qs.Services {
		if r.Service == service {
			return r
		}
	}
	return ServiceQueue{Service: service}
}

// waitFailed waits until ticket's lookup answers 500 failed and returns
// the reason.
func (h *harness) waitFailed(ticket string) string {
	h.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		r := h.call(tsp.SvcReply, ticket)
		if codeOf(r) == tsp.CodeError && strings.HasPrefix(string(r[1]), tsp.Failed.Text("")) {
			return strings.TrimPrefix(string(r[1]), tsp.Failed.Text(""))
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("ticket %s not failed within %s: %q", ticket, wait, r)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var prio = map[byte]store.Priority{'h': store.PriorityHigh, 'n': store.PriorityNormal, 'l': store.PriorityLow}

// While all three levels have work, every 7 dispatches give 4 to high, 2
// to normal and 1 to low; a level without work gives its turns to the
// others; within a level the order is FIFO.
func TestPriorityWeightedRoundRobin(t *testing.T) {
	h := newHarness(t, Config{}, "")
	for i := range 8 {
		for _, l := range "lnh" { // submitted low first: order is not arrival
			h.submitLC("s", fmt.Sprintf("%c%d", l, i), store.Lifecycle{Priority: prio[byte(l)]})
		}
	}
	got := strings.Join(h.drain("s"), " ")
	want := "h0 h1 h2 h3 n0 n1 l0 " +
		"h4 h5 h6 h7 n2 n3 l1 " +
		"n4 n5 l2 " + // high is empty: normal and low share the rounds 2:1
		"n6 n7 l3 " +
		"l4 l5 l6 l7"
	if got != want {
		t.Fatalf("dispatch order\n got %s\nwant %s", got, want)
	}

	// Only high and low: 4 to 1.
	for i := range 5 {
		h.submitLC("t", fmt.Sprintf("l%d", i), store.Lifecycle{Priority: store.PriorityLow})
		h.submitLC("t", fmt.Sprintf("h%d", i), store.Lifecycle{Priority: store.PriorityHigh})
	}
	if got, want := strings.Join(h.drain("t"), " "), "h0 h1 h2 h3 l0 h4 l1 l2 l3 l4"; got != want {
		t.Fatalf("high and low\n got %s\nwant %s", got, want)
	}
}

// A level whose head is gone (closed while queued) does not lose its turn.
func TestPriorityGoneDoesNotSpendTurn(t *testing.T) {
	h := newHarness(t, Config{}, "")
	var high []string
	for i := range 3 {
		high = append(high, h.submitLC("s", fmt.Sprintf("h%d", i), store.Lifecycle{Priority: store.PriorityHigh}))
	}
	h.submitLC("s", "n0", store.Lifecycle{})
	if r := h.call(tsp.SvcClose, high[0]); codeOf(r) != tsp.CodeOK {
		t.Fatalf("close = %q", r)
	}
	if got, want := strings.Join(h.drain("s"), " "), "h1 h2 n0"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// A delayed ticket waits out of the queue (counted as delayed, not
// pending), in (due, seq) order, and is dispatched once due: the
// schedule wakes the broker for its service.
func TestDelayedDispatchedWhenDue(t *testing.T) {
	clk := newFakeClock()
	h := newHarness(t, Config{Now: clk.Now}, "")
	now := clk.Now()
	late := h.submitLC("s", "late", store.Lifecycle{Due: now.Add(2 * time.Minute)})
	h.submitLC("s", "soon", store.Lifecycle{Due: now.Add(time.Minute)})
	h.submitLC("s", "now", store.Lifecycle{})
	if r := h.queueRow("s"); r.Pending != 1 || r.Delayed != 2 || r.InFlight != 0 {
		t.Fatalf("before due: %+v, want 1 pending, 2 delayed", r)
	}
	if got := strings.Join(h.drain("s"), " "); got != "now" {
		t.Fatalf("dispatched %q before anything was due, want only now", got)
	}
	if r := h.call(tsp.SvcStatus, late); codeOf(r) != tsp.CodeOK || string(r[1]) != "pending" {
		t.Fatalf("status of a delayed ticket = %q, want pending (9/TSP)", r)
	}
	for len(h.b.woke) > 0 {
		<-h.b.woke
	}
	clk.add(time.Minute)
	h.svc.runSchedule()
	select {
	case svc := <-h.b.woke:
		if svc != "s" {
			t.Fatalf("woke %q, want s", svc)
		}
	case <-time.After(wait):
		t.Fatal("the broker was not woken when a ticket came due")
	}
	if got := strings.Join(h.drain("s"), " "); got != "soon" {
		t.Fatalf("after a minute: dispatched %q, want soon", got)
	}
	if r := h.queueRow("s"); r.Delayed != 1 || r.Pending != 0 || r.InFlight != 2 {
		t.Fatalf("after a minute: %+v, want 1 delayed, 2 in flight", r)
	}
	clk.add(time.Minute)
	h.svc.runSchedule()
	// Due beyond the cache horizon: its body is read back now.
	if got := h.take("s", 1); got != "late" {
		t.Fatalf("after two minutes: dispatched %q, want late", got)
	}
}

// The schedule's goroutine needs no help: on the real clock a ticket due
// in a moment is dispatched once due, not before, and a ticket due
// earlier than every other wakes it from its sleep.
func TestScheduleLoopWakesForEarlierDue(t *testing.T) {
	h := newHarness(t, Config{}, "")
	h.submitLC("s", "hour", store.Lifecycle{Due: time.Now().Add(time.Hour)}) // the loop sleeps for an hour
	due := time.Now().Add(150 * time.Millisecond)
	h.submitLC("s", "soon", store.Lifecycle{Due: due})
	_, job := h.next("s")
	if at := time.Now(); at.Before(due) || string(job.Body[0]) != "soon" {
		t.Fatalf("dispatched %q at %s, due %s", job.Body[0], at.Format(time.StampMicro), due.Format(time.StampMicro))
	}
	if got := h.drain("s"); len(got) != 0 {
		t.Fatalf("dispatched %q an hour early", got)
	}
}

// A ticket not dispatched by its deadline fails as expired, whether it
// waited queued or delayed; a dispatched one does not expire; Next does
// not dispatch a ticket whose deadline passed before the schedule ran.
func TestDeadlineExpires(t *testing.T) {
	clk := newFakeClock()
	h := newHarness(t, Config{Now: clk.Now}, "")
	now := clk.Now()
	dl := now.Add(time.Minute)
	queued := h.submitLC("s", "queued", store.Lifecycle{Deadline: dl})
	delayed := h.submitLC("s", "delayed", store.Lifecycle{Due: now.Add(time.Hour), Deadline: dl})
	running := h.submitLC("r", "running", store.Lifecycle{Deadline: dl})
	lease, job := h.next("r")
	if string(job.Token) != running {
		t.Fatalf("dispatched %s, want %s", job.Token, running)
	}
	h.submitLC("s", "plain", store.Lifecycle{})

	clk.add(time.Minute)
	h.svc.runSchedule()
	want := "expired: not dispatched by " + dl.UTC().Format(time.RFC3339)
	for _, tk := range []string{queued, delayed} {
		if got := h.waitFailed(tk); got != want {
			t.Fatalf("reason = %q, want %q", got, want)
		}
	}
	if got := strings.Join(h.drain("s"), " "); got != "plain" {
		t.Fatalf("dispatched %q after the deadline, want only plain", got)
	}
	if r := h.queueRow("s"); r.Delayed != 0 || r.Pending != 0 {
		t.Fatalf("after expiry: %+v, want nothing pending or delayed", r)
	}
	h.complete(lease, running, "ok") // dispatched in time: not expired
	if st := h.svc.Stats(); st.DeadlineExpired != 2 {
		t.Fatalf("DeadlineExpired = %d, want 2", st.DeadlineExpired)
	}

	// The deadline passes and Next runs before the schedule does.
	late := h.submitLC("s", "late", store.Lifecycle{Deadline: clk.Now().Add(time.Second)})
	clk.add(time.Second)
	if got := h.drain("s"); len(got) != 0 {
		t.Fatalf("dispatched %q past its deadline", got)
	}
	if got := h.waitFailed(late); !strings.HasPrefix(got, ExpiredPrefix) {
		t.Fatalf("reason = %q, want expired", got)
	}
}

func TestBackoffBounds(t *testing.T) {
	p := store.RetryPolicy{Base: time.Second, Max: 10 * time.Second}
	for attempts, exp := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 80: 10 * time.Second} {
		for range 200 {
			if d := backoff(p, attempts); d < exp/2 || d > exp {
				t.Fatalf("backoff after %d attempts = %s, want in [%s, %s]", attempts, d, exp/2, exp)
			}
		}
	}
	if d := backoff(store.RetryPolicy{Base: -1, Max: time.Second}, 3); d != 0 {
		t.Fatalf("negative base: backoff %s, want 0", d)
	}
}

// A ticket's own policy beats its service's, which beats the broker's,
// field by field.
func TestRetryPolicyPrecedence(t *testing.T) {
	s := &Service{cfg: Config{MaxAttempts: 5, BackoffBase: time.Second, BackoffMax: time.Minute,
		ServiceRetry: map[string]store.RetryPolicy{"mail": {MaxAttempts: 9, Max: time.Hour}}}}
	s.cfg.fill()
	cases := []struct {
		service string
		own     store.RetryPolicy
		want    store.RetryPolicy
	}{
		{"other", store.RetryPolicy{}, store.RetryPolicy{MaxAttempts: 5, Base: time.Second, Max: time.Minute}},
		{"mail", store.RetryPolicy{}, store.RetryPolicy{MaxAttempts: 9, Base: time.Second, Max: time.Hour}},
		{"mail", store.RetryPolicy{MaxAttempts: 2, Base: time.Millisecond}, store.RetryPolicy{MaxAttempts: 2, Base: time.Millisecond, Max: time.Hour}},
	}
	for _, c := range cases {
		if got := s.retryPolicy(&entry{service: c.service, retry: c.own}); got != c.want {
			t.Errorf("%s %+v: %+v, want %+v", c.service, c.own, got, c.want)
		}
	}
}

// A failed attempt is retried after its backoff: delayed meanwhile (in the
// store too, so a restart keeps it), exponentially longer each time, and
// the ticket's own MaxAttempts ends it.
func TestFailedAttemptBacksOff(t *testing.T) {
	clk := newFakeClock()
	path := filepath.Join(t.TempDir(), "t.db")
	h := newHarness(t, Config{Now: clk.Now, BackoffBase: time.Second, BackoffMax: time.Minute}, path)
	ticket := h.submitLC("s", "x", store.Lifecycle{Retry: store.RetryPolicy{MaxAttempts: 3}})
	id := mustID(t, ticket)
	for attempt := 1; attempt <= 2; attempt++ {
		lease, _ := h.next("s")
		failedAt := clk.Now()
		h.svc.Failed(lease, fmt.Sprintf("boom %d", attempt))
		deadline := time.Now().Add(wait)
		for h.queueRow("s").Delayed != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("attempt %d: not delayed after its failure: %+v", attempt, h.queueRow("s"))
			}
			time.Sleep(5 * time.Millisecond)
		}
		tk, err := h.st.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		exp := time.Second << (attempt - 1)
		if d := tk.Due.Sub(failedAt); tk.State != store.StatePending || d < exp/2 || d > exp {
			t.Fatalf("attempt %d: stored %s due in %s, want pending due in [%s, %s]", attempt, tk.State, d, exp/2, exp)
		}
		if got := h.drain("s"); len(got) != 0 {
			t.Fatalf("attempt %d: redelivered at once, during its backoff", attempt)
		}
		if attempt == 2 {
			// A restart keeps the backoff: the ticket is delayed again.
			h.stop()
			h = newHarness(t, Config{Now: clk.Now, BackoffBase: time.Second, BackoffMax: time.Minute}, path)
			if r := h.queueRow("s"); r.Delayed != 1 || r.Pending != 0 {
				t.Fatalf("after a restart: %+v, want 1 delayed", r)
			}
		}
		clk.add(exp)
		h.svc.runSchedule()
	}
	lease, _ := h.next("s")
	h.svc.Failed(lease, "boom 3")
	if got := h.waitFailed(ticket); got != "attempt 3 of 3 failed: boom 3" {
		t.Fatalf("reason = %q", got)
	}
}

// After a restart the queues hold what they held: priorities, delays and
// deadlines, from the store.
func TestRecoverLifecycle(t *testing.T) {
	clk := newFakeClock()
	path := filepath.Join(t.TempDir(), "t.db")
	h := newHarness(t, Config{Now: clk.Now}, path)
	now := clk.Now()
	h.submitLC("s", "n0", store.Lifecycle{})
	h.submitLC("s", "l0", store.Lifecycle{Priority: store.PriorityLow})
	h.submitLC("s", "h0", store.Lifecycle{Priority: store.PriorityHigh})
	h.submitLC("s", "d0", store.Lifecycle{Due: now.Add(time.Minute), Priority: store.PriorityHigh})
	exp := h.submitLC("s", "x0", store.Lifecycle{Due: now.Add(time.Hour), Deadline: now.Add(2 * time.Minute)})
	h.stop()

	h = newHarness(t, Config{Now: clk.Now}, path)
	if r := h.queueRow("s"); r.Pending != 3 || r.Delayed != 2 {
		t.Fatalf("after a restart: %+v, want 3 pending, 2 delayed", r)
	}
	if got, want := h.take("s", 3), "h0 n0 l0"; got != want {
		t.Fatalf("after a restart: %s, want %s", got, want)
	}
	if got := h.drain("s"); len(got) != 0 {
		t.Fatalf("after a restart: dispatched %q before due", got)
	}
	clk.add(time.Minute)
	h.svc.runSchedule()
	if got := h.take("s", 1); got != "d0" {
		t.Fatalf("after a minute: %q, want d0", got)
	}
	clk.add(time.Minute)
	h.svc.runSchedule()
	if got := h.waitFailed(exp); !strings.HasPrefix(got, ExpiredPrefix) {
		t.Fatalf("reason = %q, want expired", got)
	}
}

// A cancelled delayed ticket leaves the schedule: it is not counted, not
// woken for, never dispatched.
func TestCancelDelayed(t *testing.T) {
	clk := newFakeClock()
	h := newHarness(t, Config{Now: clk.Now}, "")
	tk := h.submitLC("s", "d", store.Lifecycle{Due: clk.Now().Add(time.Minute), Deadline: clk.Now().Add(time.Hour)})
	if err := h.svc.Cancel(context.Background(), mustID(t, tk), "no"); err != nil {
		t.Fatal(err)
	}
	if r := h.queueRow("s"); r.Delayed != 0 || r.Pending != 0 || r.InFlight != 0 {
		t.Fatalf("after cancel: %+v", r)
	}
	h.svc.d.mu.Lock()
	nd, ndl := h.svc.d.delays.len(), h.svc.d.deadlines.len()
	h.svc.d.mu.Unlock()
	if nd != 0 || ndl != 0 {
		t.Fatalf("heaps hold %d delayed, %d deadlines after cancel", nd, ndl)
	}
	clk.add(2 * time.Hour)
	h.svc.runSchedule()
	if got := h.drain("s"); len(got) != 0 {
		t.Fatalf("dispatched a cancelled ticket: %q", got)
	}
}

// The heap keeps its order through removals from the middle.
func TestEntryHeapRemove(t *testing.T) {
	h := newDueHeap()
	base := time.Unix(0, 0)
	var es []*entry
	for i := range 200 {
		e := &entry{seq: uint64(i), due: base.Add(time.Duration((i*7919)%200) * time.Second)}
		es = append(es, e)
		h.push(e)
	}
	for i := 0; i < 200; i += 3 {
		h.remove(es[i])
		if es[i].duePos != 0 {
			t.Fatal("removed entry keeps a position")
		}
	}
	var last time.Time
	n := 0
	for e := h.top(); e != nil; e = h.top() {
		if e.due.Before(last) {
			t.Fatalf("out of order: %s after %s", e.due, last)
		}
		if e.seq%3 == 0 {
			t.Fatalf("removed entry %d popped", e.seq)
		}
		last = e.due
		h.remove(e)
		n++
	}
	if n != 200-67 {
		t.Fatalf("popped %d, want %d", n, 200-67)
	}
}

// A failed ticket given another round (titanic.retry) keeps its priority.
func TestRetryKeepsPriority(t *testing.T) {
	h := newHarness(t, Config{}, "")
	tk := h.submitLC("s", "h", store.Lifecycle{Priority: store.PriorityHigh, Retry: store.RetryPolicy{MaxAttempts: 1}})
	lease, _ := h.next("s")
	h.svc.Failed(lease, "boom")
	h.waitFailed(tk)
	h.submitLC("s", "n", store.Lifecycle{})
	if err := h.svc.Retry(context.Background(), mustID(t, tk)); err != nil {
		t.Fatal(err)
	}
	if got := h.take("s", 2); got != "h n" {
		t.Fatalf("after the retry: %s, want h n (the retried ticket is high)", got)
	}
}
