package titanic

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// lostLeadership is a store whose commits fail as a replica's do once it
// is no longer the raft leader (nothing stored), while lost is set.
type lostLeadership struct {
	*store.BoltStore
	lost atomic.Bool
}

func (l *lostLeadership) ApplyAsync(ops []store.Op, done func(store.Done)) {
	if l.lost.Load() {
		go done(store.Done{Err: fmt.Errorf("raft apply: %w", store.ErrNotLeader), Last: true})
		return
	}
	l.BoltStore.ApplyAsync(ops, done)
}

// A mutation refused because the node lost raft leadership before it
// was stored is answered "not active", which clients resend to the node
// that serves; it was a plain "500 not stored: not the raft leader",
// on which the Go client gave up (a pair test's submit failed that way
// when leadership moved under load). It has the gate's shape, without
// the key a titanic.submit answer otherwise echoes.
func TestNotLeaderAnsweredNotActive(t *testing.T) {
	var st *lostLeadership
	h := newHarnessOver(t, Config{}, "", func(b *store.BoltStore) store.Store {
		st = &lostLeadership{BoltStore: b}
		return st
	})
	r := h.call(tsp.SvcRequest, "svc", "x")
	if codeOf(r) != tsp.CodeOK {
		t.Fatalf("submit = %q", r)
	}
	ticket := string(r[1])
	st.lost.Store(true)
	for _, c := range []struct {
		what string
		req  []string
	}{
		{"submit", []string{tsp.SvcRequest, "svc", "y"}},
		{"keyed submit", []string{tsp.SvcSubmit, "k1", "svc", "z"}},
		{"close", []string{tsp.SvcClose, ticket}},
		{"cancel", []string{tsp.SvcCancel, ticket}},
	} {
		got := h.call(c.req[0], c.req[1:]...)
		// Two frames, as the broker's gate refuses: a keyed submit's
		// refusal echoing its key was taken by the Go client's pipeline
		// and its plain calls for that submit's own failure, not the
		// node's (TestPairCompactPassive failed on it).
		if !tsp.Is(got, tsp.CodeError, tsp.NotActive) || len(got) != 2 {
			t.Errorf("%s on a node that lost leadership = %q, want 500 %q in two frames, as the gate's", c.what, got, tsp.NotActive)
		}
	}
}
