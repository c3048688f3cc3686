package titanic

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestWorkersOfGoneServicesForgotten: the broker tells the Source how
// many workers serve a service each time one registers or leaves, and,
// with peering, each time a peer's state starts or stops naming a service.
// Service names come from the network (a worker's READY, every service a
// peer's state lists), so the dispatcher must forget a name whose count
// went back to 0 with no ticket, or its memory grows with every distinct
// name for the life of the process.
func TestWorkersOfGoneServicesForgotten(t *testing.T) {
	h := newHarness(t, Config{}, "")
	const names = 20000
	for i := range names {
		svc := fmt.Sprintf("peer-advertised-%d", i)
		h.svc.Workers(svc, 1) // a peer's state names it
		h.svc.Workers(svc, 0) // the next one does not
	}
	h.svc.d.mu.Lock()
	w, idle := len(h.svc.d.workers), len(h.svc.d.idleSince)
	h.svc.d.mu.Unlock()
	if w > 100 || idle > 100 {
		t.Fatalf("after %d services came and went (no ticket for any), the dispatcher still holds %d worker counts and %d idle-since times", names, w, idle)
	}
}

// TestNoWorkerTimeoutCountsFromLastWorkerLeaving: forgetting services
// with no worker must not forget when a service with tickets lost its
// last worker: the no-worker timeout of a ticket queued before counts
// from then, not from its queueing.
func TestNoWorkerTimeoutCountsFromLastWorkerLeaving(t *testing.T) {
	var mu sync.Mutex
	t1 := time.Unix(1_000_000, 0)
	now := t1
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h := newHarness(t, Config{NoWorkerTimeout: time.Minute, Now: clock}, "")
	h.svc.Workers("svc", 1)
	h.submit("svc", "x")
	deadline := time.Now().Add(wait)
	for {
		h.svc.d.mu.Lock()
		q := h.svc.d.queues["svc"]
		n := 0
		if q != nil {
			n = q.len()
		}
		h.svc.d.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ticket is not queued within %s", wait)
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	now = t1.Add(50 * time.Second)
	mu.Unlock()
	h.svc.Workers("svc", 0)
	// 100 s queued, 50 s without a worker.
	if fx := h.svc.d.reap(t1.Add(100 * time.Second)); len(fx.fail) != 0 {
		t.Fatalf("a ticket queued 100 s, its service without a worker for 50 s, failed for want of a worker (timeout 1 min): %q", fx.fail[0].reason)
	}
	if fx := h.svc.d.reap(t1.Add(111 * time.Second)); len(fx.fail) != 1 {
		t.Fatalf("61 s after the service's last worker left, %d tickets failed for want of a worker, want 1", len(fx.fail))
	}
}
