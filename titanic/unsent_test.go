package titanic

import (
	"strings"
	"testing"

	"github.com/titanicmq/titanic/store"
)

// A job whose send to its worker failed at once (the worker was gone, or
// its queue full) never reached anyone: it costs no attempt. With
// max_attempts 1 it failed for good on the first worker that vanished
// between its READY and the dispatch; now it goes back to its queue and
// the next worker's attempt is its first.
func TestUnsentJobCostsNoAttempt(t *testing.T) {
	h := newHarness(t, Config{BackoffBase: -1, MaxAttempts: 1}, "")
	ticket := h.submit("s", "x")
	lost, job := h.next("s")
	if string(job.Token) != ticket {
		t.Fatalf("dispatched %s, want %s", job.Token, ticket)
	}
	h.svc.Unsent(lost, "send request: peer unreachable")
	cur, job := h.next("s")
	if string(job.Token) != ticket {
		t.Fatalf("dispatched %s after the unsent one, want %s", job.Token, ticket)
	}
	h.submit("other", "barrier") // the dispatch marks are durable
	id, _ := store.ParseID(ticket)
	tk, err := h.st.Get(t.Context(), id)
	if err != nil || tk.State != store.StateDispatched || tk.Attempts != 1 {
		t.Fatalf("stored ticket %+v (%v): want dispatched, attempt 1 (the unsent dispatch not counted)", tk, err)
	}
	if got := h.svc.Stats().Unsent; got != 1 {
		t.Fatalf("Stats.Unsent = %d, want 1", got)
	}
	// Its one real attempt fails: that one counts.
	h.svc.Failed(cur, "exit 3")
	if reason := h.waitFailed(ticket); !strings.Contains(reason, "attempt 1 of 1") {
		t.Fatalf("failed with %q, want attempt 1 of 1", reason)
	}
}

// olderCluster is a store of a cluster with a member that cannot read
// OpUndispatch yet: it refuses that op alone, as a replicated store does.
type olderCluster struct{ store.Store }

func (o *olderCluster) ApplyAsync(ops []store.Op, done func(store.Done)) {
	var keep []store.Op
	var at []int
	for i := range ops {
		if ops[i].Kind != store.OpUndispatch {
			keep, at = append(keep, ops[i]), append(at, i)
		}
	}
	o.Store.ApplyAsync(keep, func(d store.Done) {
		res := make([]store.Result, len(ops))
		for i := range ops {
			if ops[i].Kind == store.OpUndispatch {
				res[i] = store.Result{ID: ops[i].ID, Err: &store.ClusterVersionError{Kind: store.OpUndispatch, Need: 4, Have: 3}}
			}
		}
		for j, i := range at {
			if j < len(d.Results) {
				res[i] = d.Results[j]
			}
		}
		d.Results = res
		done(d)
	})
}

// A cluster that cannot take a dispatch back yet counts the unsent
// attempt, as before the op existed, and the ticket still goes on: it is
// requeued (attempts left) or failed (none left), never stuck dispatched.
func TestUnsentOnOlderClusterCountsTheAttempt(t *testing.T) {
	h := newHarnessOver(t, Config{BackoffBase: -1, MaxAttempts: 2}, "", func(st *store.BoltStore) store.Store {
		return &olderCluster{Store: st}
	})
	ticket := h.submit("s", "x")
	lost, _ := h.next("s")
	h.svc.Unsent(lost, "send request: peer unreachable")
	cur, job := h.next("s")
	if string(job.Token) != ticket {
		t.Fatalf("dispatched %s after the unsent one, want %s", job.Token, ticket)
	}
	h.svc.Failed(cur, "exit 3")
	if reason := h.waitFailed(ticket); !strings.Contains(reason, "attempt 2 of 2") {
		t.Fatalf("failed with %q, want attempt 2 of 2 (the unsent one counted)", reason)
	}
}
