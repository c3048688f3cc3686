package store_test

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/titanicmq/titanic/store"
)

func TestForkPoint(t *testing.T) {
	h := func(applied uint64, e ...uint64) store.History {
		var out store.History
		for i := 0; i < len(e); i += 2 {
			out.Epochs = append(out.Epochs, store.Epoch{Term: e[i], Start: e[i+1]})
		}
		out.Applied = applied
		return out
	}
	cases := []struct {
		name string
		a, b store.History
		want uint64
	}{
		{"same", h(10, 1, 1, 2, 5), h(10, 1, 1, 2, 5), 10},
		{"prefix", h(7, 1, 1, 2, 5), h(20, 1, 1, 2, 5, 4, 12), 7},
		{"forked in a shared term's tail", h(15, 1, 1, 2, 5, 3, 11), h(14, 1, 1, 2, 5, 4, 9), 8},
		{"forked at a term boundary", h(12, 1, 1, 3, 11), h(13, 1, 1, 4, 11), 10},
		{"deep: an old shared term, many terms since", h(1000, 1, 1, 5, 100, 7, 300, 9, 900), h(800, 1, 1, 5, 100, 6, 250, 8, 700), 249},
		{"nothing shared", h(5, 3, 1), h(5, 4, 1), 0},
		{"empty", h(0), h(9, 1, 1), 0},
	}
	// Raft's no-op at the start of a term is never applied: an epoch
	// ends where its last applied entry is, not where the next starts.
	withEnds := func(applied uint64, e ...store.Epoch) store.History {
		return store.History{Epochs: e, Applied: applied}
	}
	cases = append(cases, struct {
		name string
		a, b store.History
		want uint64
	}{"ends recorded",
		withEnds(90, store.Epoch{Term: 2, Start: 3, End: 45}, store.Epoch{Term: 3, Start: 48}),
		withEnds(80, store.Epoch{Term: 2, Start: 3, End: 43}, store.Epoch{Term: 4, Start: 47}), 43})
	for _, c := range cases {
		if got := c.a.ForkPoint(c.b); got != c.want {
			t.Errorf("%s: ForkPoint = %d, want %d", c.name, got, c.want)
		}
		if got := c.b.ForkPoint(c.a); got != c.want {
			t.Errorf("%s (swapped): ForkPoint = %d, want %d", c.name, got, c.want)
		}
	}
}

// The history holds every term, however many entries ago (the first
// release kept only the last 16,384), and an entry whose term is lower
// than the last applied one is a fork, not a new epoch.
func TestHistoryAtAnyDepth(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	var entries []store.Entry
	for i := uint64(1); i <= 20000; i++ {
		term := uint64(2)
		if i > 10 {
			term = 3
		}
		entries = append(entries, store.Entry{Index: i, Term: term})
	}
	for _, r := range s.ApplyLog(ctx, entries) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	h, err := s.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.Applied != 20000 || len(h.Epochs) != 2 || h.TermAt(5) != 2 || h.TermAt(11) != 3 || h.TermAt(20001) != 0 || h.Epochs[0].End != 10 {
		t.Fatalf("history = %+v", h)
	}
	// Index 3, 20,000 entries back, under another term.
	res := s.ApplyLog(ctx, []store.Entry{{Index: 3, Term: 4}})
	if !errors.Is(res[0].Err, store.ErrDiverged) {
		t.Fatalf("old entry under another term: %v, want ErrDiverged", res[0].Err)
	}
	// A next entry whose term goes backwards.
	res = s.ApplyLog(ctx, []store.Entry{{Index: 20001, Term: 2, Ops: []store.Op{submit(store.NewID(), "x")}}})
	if !errors.Is(res[0].Err, store.ErrDiverged) {
		t.Fatalf("term going backwards: %v, want ErrDiverged", res[0].Err)
	}
	if h2, _ := s.History(ctx); h2.Applied != 20000 {
		t.Fatalf("a diverged entry moved the applied index to %d", h2.Applied)
	}
}

// A node rolled back to the first release after this build made its
// epochs bucket applies entries that release records the old way (term/
// INDEX in the meta bucket); upgraded again, the store takes those terms
// into its history. They were ignored: the entries that release applied
// in a later term counted as the latest epoch's, raft's replay of them
// at start read as a divergence, and the node stopped for good (found by
// a reviewer of upgrades).
func TestHistoryTakesTermsTheFirstReleaseWrote(t *testing.T) {
	ctx := context.Background()
	s, path := newStore(t)
	for i := uint64(1); i <= 5; i++ {
		if r := s.ApplyLog(ctx, []store.Entry{{Index: i, Term: 2, Ops: []store.Op{submit(store.NewID(), "s")}}}); r[0].Err != nil {
			t.Fatal(r[0].Err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// What the first release does with entries 6 and 7 of term 3.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket([]byte("meta"))
		for _, i := range []uint64{6, 7} {
			if err := meta.Put(binary.BigEndian.AppendUint64([]byte("term/"), i), binary.AppendUvarint(nil, 3)); err != nil {
				return err
			}
		}
		return meta.Put([]byte("applied"), binary.BigEndian.AppendUint64(nil, 7))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, path)
	defer s.Close()
	h, err := s.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.TermAt(6); got != 3 {
		t.Fatalf("history %+v: term at 6 is %d, want 3 (recorded by the first release)", h, got)
	}
	// Raft replays what the store applied: the same entries, not a
	// divergence.
	for _, e := range []store.Entry{{Index: 6, Term: 3}, {Index: 7, Term: 3}, {Index: 4, Term: 2}} {
		if r := s.ApplyLog(ctx, []store.Entry{e}); !errors.Is(r[0].Err, store.ErrApplied) {
			t.Fatalf("replay of index %d term %d: %v, want ErrApplied", e.Index, e.Term, r[0].Err)
		}
	}
	// And the next entry is applied.
	if r := s.ApplyLog(ctx, []store.Entry{{Index: 8, Term: 3, Ops: []store.Op{submit(store.NewID(), "s")}}}); r[0].Err != nil {
		t.Fatalf("entry 8 after the replays: %v", r[0].Err)
	}
}
