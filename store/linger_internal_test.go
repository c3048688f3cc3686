package store

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// lingerFixture opens a store with linger and n pending tickets, and
// returns it with their IDs.
func lingerFixture(t *testing.T, linger time.Duration, n int) (*BoltStore, []ID) {
	t.Helper()
	s := openTemp(t, Options{Linger: linger})
	ids := make([]ID, n)
	ops := make([]Op, n)
	for i := range ops {
		ids[i] = NewID()
		ops[i] = Op{Kind: OpSubmit, ID: ids[i], Time: time.Now(), Service: "echo", Body: [][]byte{fmt.Appendf(nil, "job %d", i)}}
	}
	if _, err := s.Apply(context.Background(), ops); err != nil {
		t.Fatal(err)
	}
	return s, ids
}

// applyLazy hands a dispatch mark of each id to ApplyAsync (one call) and
// returns the channel its outcome comes on.
func applyLazy(s *BoltStore, ids ...ID) <-chan Done {
	ops := make([]Op, len(ids))
	for i, id := range ids {
		ops[i] = Op{Kind: OpDispatch, ID: id, Time: time.Now(), Worker: "w"}
	}
	ch := make(chan Done, 1)
	s.ApplyAsync(ops, func(d Done) { ch <- d })
	return ch
}

func awaitDone(t *testing.T, what string, ch <-chan Done, within time.Duration) Done {
	t.Helper()
	select {
	case d := <-ch:
		if d.Err != nil {
			t.Fatalf("%s: %v", what, d.Err)
		}
		return d
	case <-time.After(within):
		t.Fatalf("%s: not completed within %s", what, within)
	}
	return Done{}
}

// TestLingerJoinsNextEagerCommit: a dispatch mark (nobody waits on it)
// waits for company; a submit ends the wait and both go in one commit.
func TestLingerJoinsNextEagerCommit(t *testing.T) {
	s, ids := lingerFixture(t, time.Hour, 1)
	before := s.commits.Load()
	lazy := applyLazy(s, ids[0])
	if _, err := s.Apply(context.Background(), []Op{{Kind: OpSubmit, ID: NewID(), Time: time.Now(), Service: "echo", Body: [][]byte{[]byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	awaitDone(t, "the lingering dispatch mark", lazy, 5*time.Second)
	if got := s.commits.Load() - before; got != 1 {
		t.Fatalf("%d commits for a lingering mark and a submit, want 1", got)
	}
}

// TestLingerEnds: alone, lazy ops wait Options.Linger, not longer; and
// LingerOps of them commit without waiting.
func TestLingerEnds(t *testing.T) {
	const linger = 50 * time.Millisecond
	s, ids := lingerFixture(t, linger, 1)
	begin := time.Now()
	awaitDone(t, "a lone dispatch mark", applyLazy(s, ids[0]), 5*time.Second)
	if took := time.Since(begin); took < linger {
		t.Fatalf("a lone lazy op committed after %s, before the linger of %s", took, linger)
	}

	s, ids = lingerFixture(t, time.Hour, LingerOps)
	awaitDone(t, "LingerOps dispatch marks", applyLazy(s, ids...), 5*time.Second)
}

// TestLingerFlushedAtClose: a lingering op is committed, not dropped,
// when the store closes.
func TestLingerFlushedAtClose(t *testing.T) {
	s, ids := lingerFixture(t, time.Hour, 1)
	lazy := applyLazy(s, ids[0])
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	awaitDone(t, "a lingering mark at close", lazy, 5*time.Second)
}

// TestLingerOnlyForWorkersOps: a submit handed over with ApplyAsync is
// waited on (its client gets the ticket once it is durable): it does not
// linger.
func TestLingerOnlyForWorkersOps(t *testing.T) {
	s := openTemp(t, Options{Linger: time.Hour})
	ch := make(chan Done, 1)
	s.ApplyAsync([]Op{{Kind: OpSubmit, ID: NewID(), Time: time.Now(), Service: "echo", Body: [][]byte{[]byte("x")}}}, func(d Done) { ch <- d })
	awaitDone(t, "an async submit", ch, 5*time.Second)
	if lazyOps([]Op{{Kind: OpDispatch}, {Kind: OpClose}}) {
		t.Fatal("a batch holding a close counts as lazy")
	}
}
