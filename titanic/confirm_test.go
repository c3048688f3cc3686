package titanic

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// leaderStore is a replicated store as far as lookups can tell: the test
// decides whether leadership is confirmed, and may hold a round back.
type leaderStore struct {
	*store.BoltStore
	mu    sync.Mutex
	err   error
	calls int
	hold  chan struct{} // when set, a round waits for it to close
}

// Leadership makes the service see the store as replicated.
func (l *leaderStore) Leadership() store.Leadership { return l }

// Barrier has nothing to wait for: the data is all in the local store.
func (l *leaderStore) Barrier(context.Context) error { return nil }

func (l *leaderStore) ConfirmLeader(ctx context.Context) error {
	l.mu.Lock()
	l.calls++
	err, hold := l.err, l.hold
	l.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

func (l *leaderStore) set(err error, hold chan struct{}) {
	l.mu.Lock()
	l.err, l.hold = err, hold
	l.mu.Unlock()
}

func (l *leaderStore) rounds() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls
}

func newLeaderHarness(t *testing.T, cfg Config) (*harness, *leaderStore) {
	t.Helper()
	ls := &leaderStore{}
	h := newHarnessOver(t, cfg, "", func(st *store.BoltStore) store.Store {
		ls.BoltStore = st
		return ls
	})
	return h, ls
}

var errDeposed = errors.New("deposed")

// A node whose leadership cannot be confirmed answers every lookup that a
// deposed leader could get wrong with the not-active refusal, and still
// answers what is final.
func TestUnconfirmedLookupsRefused(t *testing.T) {
	// A short backoff: the ticket that fails uses up its attempts within
	// the harness's wait for each dispatch.
	h, ls := newLeaderHarness(t, Config{BackoffBase: time.Millisecond})
	done := h.submit("echo", "x")
	lease, _ := h.next("echo")
	h.complete(lease, done, "X")
	failed := h.submit("flaky", "y")
	lease, _ = h.next("flaky")
	for range DefaultConfig().MaxAttempts - 1 {
		h.svc.Failed(lease, "boom")
		lease, _ = h.next("flaky")
	}
	h.svc.Failed(lease, "boom")
	pending := h.submit("echo", "z")
	unknown := store.NewID().String()

	type lookup struct {
		service string
		body    []string
		leader  string // code when confirmed
		final   bool   // answered without a confirmation
	}
	lookups := []lookup{
		{tsp.SvcReply, []string{unknown}, tsp.CodeUnknown, false},
		{tsp.SvcReply, []string{pending}, tsp.CodePending, false},
		{tsp.SvcStatus, []string{unknown}, tsp.CodeUnknown, false},
		{tsp.SvcStatus, []string{pending}, tsp.CodeOK, false},
		{tsp.SvcList, []string{"", "", "", ""}, tsp.CodeOK, false},
		{tsp.SvcWait, []string{unknown, "1000"}, tsp.CodeUnknown, false},
		{tsp.SvcReply, []string{done}, tsp.CodeOK, true},
		{tsp.SvcReply, []string{failed}, tsp.CodeError, true},
		{tsp.SvcStatus, []string{done}, tsp.CodeOK, true},
		{tsp.SvcWait, []string{done, "1000"}, tsp.CodeOK, true},
		{tsp.SvcReply, []string{"nope"}, tsp.CodeUnknown, true}, // malformed
	}
	for _, l := range lookups {
		before := ls.rounds()
		if r := h.call(l.service, l.body...); codeOf(r) != l.leader {
			t.Fatalf("confirmed leader: %s %q = %q, want %s", l.service, l.body, r, l.leader)
		}
		if confirmed := ls.rounds() > before; confirmed == l.final {
			t.Fatalf("confirmed leader: %s %q asked for a confirmation: %v, want %v", l.service, l.body, confirmed, !l.final)
		}
	}

	ls.set(errDeposed, nil)
	for _, l := range lookups {
		r := h.call(l.service, l.body...)
		if l.final {
			if codeOf(r) != l.leader {
				t.Fatalf("unconfirmed: %s %q = %q, want %s (final answers need no confirmation)", l.service, l.body, r, l.leader)
			}
			continue
		}
		if codeOf(r) != tsp.CodeError || len(r) != 2 || string(r[1]) != string(tsp.NotActive) {
			t.Fatalf("unconfirmed: %s %q = %q, want [500 %s]", l.service, l.body, r, string(tsp.NotActive))
		}
	}
	// A wait that times out on a pending ticket would answer 300: refused
	// too.
	if r := h.call(tsp.SvcWait, pending, "20"); codeOf(r) != tsp.CodeError || string(r[1]) != string(tsp.NotActive) {
		t.Fatalf("unconfirmed: expired wait = %q, want [500 %s]", r, string(tsp.NotActive))
	}
	if st := h.svc.Stats(); st.Unconfirmed == 0 {
		t.Fatalf("stats count no unconfirmed lookup: %+v", st)
	}
	h.waitParked(0)
}

// One confirmation round serves every lookup that arrived while the
// previous one was in flight.
func TestConfirmationsBatched(t *testing.T) {
	h, ls := newLeaderHarness(t, Config{})
	hold := make(chan struct{})
	ls.set(nil, hold)
	const n = 50
	unknown := store.NewID().String()
	for range n {
		if r := h.svc.ServeMDP(broker.Request{Service: tsp.SvcReply, Body: [][]byte{[]byte(unknown)}}); r != nil {
			t.Fatalf("lookup answered at once: %q", r)
		}
	}
	// Every lookup waits for a round (the first is held) before it ends.
	deadline := time.Now().Add(wait)
	for h.svc.look.confirms.n.Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d lookups wait for a confirmation after %s, want %d", h.svc.look.confirms.n.Load(), wait, n)
		}
		time.Sleep(time.Millisecond)
	}
	close(hold)
	for range n {
		if r := h.b.reply(t); codeOf(r) != tsp.CodeUnknown {
			t.Fatalf("lookup = %q, want 400", r)
		}
	}
	if got := ls.rounds(); got > 2 {
		t.Fatalf("%d lookups took %d confirmation rounds, want at most 2 (one held, one for those that waited)", n, got)
	}
	// The last answer may reach the broker a moment before its lookup's
	// bookkeeping ends: idle must follow, within the bound.
	for deadline := time.Now().Add(wait); !h.svc.Idle(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("service not idle %s after every lookup was answered", wait)
		}
	}
}

// The refusal of an unconfirmed lookup is the configured one (a Binary
// Star active node's "not ready").
func TestUnconfirmedRefusalConfigured(t *testing.T) {
	notReady := replyText(tsp.CodeError, "not ready: taking over, retry")
	h, ls := newLeaderHarness(t, Config{Unconfirmed: func(string) [][]byte { return notReady }})
	ls.set(errDeposed, nil)
	if r := h.call(tsp.SvcReply, store.NewID().String()); codeOf(r) != tsp.CodeError || string(r[1]) != string(notReady[1]) {
		t.Fatalf("unconfirmed lookup = %q, want %q", r, notReady)
	}
}
