package titanic

import (
	"context"
	"errors"
	"testing"
	"time"

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

// A retry of a failed ticket between the retention sweep's listing and
// its closes is refused busy: answered 200, it was deleted by the close
// right after, pending again. A retry after the sweep finds the ticket
// deleted (400), as the sweep's close came first.
func TestRetryDuringSweepIsBusy(t *testing.T) {
	clk := newFakeClock()
	var eh *expiredHook
	h := newHarnessOver(t, Config{DoneTTL: time.Hour, MaxAttempts: 1, Now: clk.Now}, "", func(st *store.BoltStore) store.Store {
		eh = &expiredHook{BoltStore: st}
		return eh
	})
	ticket := h.submit("echo", "x")
	lease, _ := h.next("echo")
	h.svc.Failed(lease, "boom")
	h.waitFailed(ticket)
	clk.add(2 * time.Hour)
	id := mustID(t, ticket)
	var during error
	eh.hook = func() {
		eh.hook = nil
		during = h.svc.Retry(context.Background(), id)
	}
	if n := h.svc.sweep(context.Background()); n != 1 {
		t.Fatalf("swept %d, want 1", n)
	}
	if !errors.Is(during, ErrBusy) {
		t.Fatalf("retry during the sweep's listing = %v, want ErrBusy", during)
	}
	h.submit("other", "barrier") // the sweep's close has completed
	if err := h.svc.Retry(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("retry after the sweep = %v, want ErrNotFound (deleted)", err)
	}
	if r := h.call(tsp.SvcReply, ticket); codeOf(r) != tsp.CodeUnknown {
		t.Fatalf("titanic.reply after the sweep = %q, want 400", r)
	}
}
