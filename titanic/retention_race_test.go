package titanic

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// expiredHook runs hook after the store listed the expired tickets, before
// the sweep hands their closes over.
type expiredHook struct {
	*store.BoltStore
	hook func()
}

func (e *expiredHook) Expired(ctx context.Context, cutoff time.Time, limit int) ([]store.ID, error) {
	ids, err := e.BoltStore.Expired(ctx, cutoff, limit)
	if e.hook != nil {
		e.hook()
	}
	return ids, err
}

// failedBehindHook is a service (DoneTTL 1h, one attempt, on clk) whose
// store's Expired runs a hook, and a ticket of it that has failed.
func failedBehindHook(t *testing.T, clk *fakeClock) (*harness, *expiredHook, string) {
	t.Helper()
	var eh *expiredHook
	h := newHarnessOver(t, Config{DoneTTL: time.Hour, MaxAttempts: 1, Now: clk.Now}, "", func(st *store.BoltStore) store.Store {
		eh = &expiredHook{BoltStore: st}
		return eh
	})
	ticket := h.submit("echo", "x")
	lease, _ := h.next("echo")
	h.svc.Failed(lease, "boom")
	h.waitFailed(ticket)
	return h, eh, ticket
}

// A retry of a failed ticket between the retention sweep's listing and
// its closes (9/TSP's, on the broker's loop) is refused busy: answered
// 200, it was deleted by the close right after, pending again. A retry
// after the sweep finds the ticket deleted (400), as the sweep's close
// came first.
func TestRetryDuringSweepIsBusy(t *testing.T) {
	clk := newFakeClock()
	h, eh, ticket := failedBehindHook(t, clk)
	clk.add(2 * time.Hour)
	id := mustID(t, ticket)
	var during [][]byte
	calls := 0
	eh.hook = func() {
		if calls++; calls == 2 { // the listing under the gate (the first is a look)
			during = h.svc.ServeMDP(broker.Request{Service: tsp.SvcRetry, Body: [][]byte{[]byte(ticket)}})
		}
	}
	if n := h.svc.sweep(context.Background()); n != 1 {
		t.Fatalf("swept %d, want 1", n)
	}
	if !tsp.Is(during, tsp.CodeError, tsp.Busy) {
		t.Fatalf("titanic.retry during the sweep's listing = %q, want 500 busy", during)
	}
	h.submit("other", "barrier") // the sweep's close has completed
	if err := h.svc.Retry(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("retry after the sweep = %v, want ErrNotFound (deleted)", err)
	}
	if r := h.call(tsp.SvcReply, ticket); codeOf(r) != tsp.CodeUnknown {
		t.Fatalf("titanic.reply after the sweep = %q, want 400", r)
	}
}

// A sweep that finds nothing to delete does not hold retries up.
func TestSweepWithNothingExpiredLeavesRetries(t *testing.T) {
	h, eh, ticket := failedBehindHook(t, newFakeClock())
	var during [][]byte
	eh.hook = func() {
		during = h.svc.ServeMDP(broker.Request{Service: tsp.SvcRetry, Body: [][]byte{[]byte(ticket)}})
	}
	if n := h.svc.sweep(context.Background()); n != 0 {
		t.Fatalf("swept %d, want 0 (nothing is past its TTL)", n)
	}
	if during == nil {
		during = h.b.reply(t)
	}
	if codeOf(during) != tsp.CodeOK {
		t.Fatalf("titanic.retry during a sweep with nothing to delete = %q, want 200", during)
	}
}
