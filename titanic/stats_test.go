package titanic

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// finishes tells a test when the service has counted a ticket's end: it
// notes "done" and "failed" after its tallies.
type finishes chan tsp.Event

func (f finishes) Publish(e tsp.Event) {
	if e.State == "done" || e.State == "failed" {
		f <- e
	}
}

func (f finishes) await(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-f:
		case <-time.After(wait):
			t.Fatalf("a reply or failure was not recorded within %s", wait)
		}
	}
}

// queueOf returns service's line of titanic.stats, asked over MDP as a
// client would.
func queueOf(t *testing.T, h *harness, service string) ServiceQueue {
	t.Helper()
	r := h.call(tsp.SvcStats, "")
	if codeOf(r) != tsp.CodeOK || len(r) != 2 {
		t.Fatalf("titanic.stats = %q, want [200 json]", r)
	}
	var st QueueStats
	if err := json.Unmarshal(r[1], &st); err != nil {
		t.Fatalf("titanic.stats JSON %s: %v", r[1], err)
	}
	if st.WindowSeconds != RateWindow.Seconds() {
		t.Fatalf("window = %v, want %v", st.WindowSeconds, RateWindow.Seconds())
	}
	for _, q := range st.Services {
		if q.Service == service {
			return q
		}
	}
	return ServiceQueue{Service: service}
}

func wantQueue(t *testing.T, got ServiceQueue, pending, inFlight, done, failed int, submits, replies float64) {
	t.Helper()
	if got.Pending != pending || got.Delayed != 0 || got.InFlight != inFlight || got.Done != done || got.Failed != failed ||
		got.SubmitRate != submits || got.ReplyRate != replies {
		t.Fatalf("%s: pending %d delayed %d in flight %d done %d failed %d submits/s %v replies/s %v; want %d 0 %d %d %d %v %v",
			got.Service, got.Pending, got.Delayed, got.InFlight, got.Done, got.Failed, got.SubmitRate, got.ReplyRate,
			pending, inFlight, done, failed, submits, replies)
	}
}

// TestQueueStats: titanic.stats counts exactly what was submitted,
// dispatched, answered, failed and closed, per service; rates cover the
// last whole seconds of the window; after a restart the finished counts
// come back from the store and what was in flight counts the attempt the
// restart cut short.
func TestQueueStats(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	fin := make(finishes, 16)
	workers := func(context.Context) (map[string]WorkerCount, error) {
		return map[string]WorkerCount{"a": {Workers: 3, Idle: 1, Busy: 2}}, nil
	}
	cfg := Config{MaxAttempts: 1, Now: clock, Notifier: fin, Workers: workers}
	h := newHarness(t, cfg, "")

	var tickets []string
	for i := range 6 {
		tickets = append(tickets, h.submit("a", fmt.Sprint("a", i)))
	}
	h.submit("b", "b0")
	h.submit("b", "b1")
	// A resend of a keyed submit makes no new ticket.
	for range 2 {
		if r := h.call(tsp.SvcSubmit, "k", "b", "b2"); codeOf(r) != tsp.CodeOK {
			t.Fatalf("keyed submit: %q", r)
		}
	}
	var leases []broker.Lease
	for i := range 4 {
		l, job := h.next("a")
		if string(job.Token) != tickets[i] {
			t.Fatalf("dispatch %d: %s, want %s", i, job.Token, tickets[i])
		}
		leases = append(leases, l)
	}
	wantQueue(t, queueOf(t, h, "a"), 2, 4, 0, 0, 0, 0)

	h.svc.Completed(leases[0], [][]byte{[]byte("r0")})
	h.svc.Completed(leases[1], [][]byte{[]byte("r1")})
	h.svc.Failed(leases[2], "boom") // MaxAttempts 1: failed for good
	fin.await(t, 3)
	// The fourth stays with its worker.
	a := queueOf(t, h, "a")
	wantQueue(t, a, 2, 1, 2, 1, 0, 0)
	if a.Workers != 3 || a.Idle == nil || *a.Idle != 1 || a.Busy == nil || *a.Busy != 2 {
		t.Fatalf("a's workers = %d idle %v busy %v, want 3 1 2", a.Workers, a.Idle, a.Busy)
	}
	wantQueue(t, queueOf(t, h, "b"), 3, 0, 0, 0, 0, 0)

	// Rates count whole seconds: a second later, the window holds the
	// 6 and 3 submits and the 2 replies.
	advance(time.Second)
	wantQueue(t, queueOf(t, h, "a"), 2, 1, 2, 1, 0.6, 0.2)
	wantQueue(t, queueOf(t, h, "b"), 3, 0, 0, 0, 0.3, 0)
	advance(RateWindow)
	wantQueue(t, queueOf(t, h, "a"), 2, 1, 2, 1, 0, 0)

	// Closing a done ticket and a pending one uncounts them.
	for _, tk := range []string{tickets[0], tickets[5]} {
		if r := h.call(tsp.SvcClose, tk); codeOf(r) != tsp.CodeOK {
			t.Fatalf("close: %q", r)
		}
	}
	wantQueue(t, queueOf(t, h, "a"), 1, 1, 1, 1, 0, 0)
	if r := h.call(tsp.SvcStats, "b"); codeOf(r) != tsp.CodeOK || string(r[1]) == "" {
		t.Fatalf("titanic.stats b = %q", r)
	} else if q := queueOf(t, h, "b"); q.Pending != 3 {
		t.Fatalf("b pending %d, want 3", q.Pending)
	}
	if r := h.call(tsp.SvcStats, "a", "b"); codeOf(r) != tsp.CodeUnknown {
		t.Fatalf("titanic.stats with 2 frames = %q, want 400", r)
	}

	// A restart: the finished counts come from the store; the ticket that
	// was in flight had its only attempt cut short by the restart: it
	// failed for good (MaxAttempts 1).
	h.stop()
	h = newHarness(t, Config{MaxAttempts: 1, Now: clock}, h.path)
	a = queueOf(t, h, "a")
	wantQueue(t, a, 1, 0, 1, 2, 0, 0)
	if a.Idle != nil || a.Busy != nil {
		t.Fatalf("without Config.Workers idle and busy should be unknown, got %v %v", a.Idle, a.Busy)
	}
	wantQueue(t, queueOf(t, h, "b"), 3, 0, 0, 0, 0, 0)
	if got := h.svc.Stats().Lookups; got != 0 {
		t.Fatalf("titanic.stats counted %d lookups, want 0", got)
	}
}
