package store_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/titanicmq/titanic/store"
)

// ApplyAt applies each log index once, across reopen and restore, so a
// replicated log can be replayed over the durable store.
func TestApplyAtOnce(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "r.db")
	s := mustOpen(t, path)
	a, b := store.NewID(), store.NewID()
	if _, err := s.ApplyAt(ctx, 0, []store.Op{submit(a, "x")}); !errors.Is(err, store.ErrInvalidOp) {
		t.Fatalf("index 0: %v", err)
	}
	res, err := s.ApplyAt(ctx, 5, []store.Op{submit(a, "x")})
	if err != nil || len(res) != 1 || res[0].Err != nil {
		t.Fatalf("ApplyAt 5 = %+v, %v", res, err)
	}
	for _, idx := range []uint64{5, 4, 1} {
		if _, err := s.ApplyAt(ctx, idx, []store.Op{submit(b, "x")}); !errors.Is(err, store.ErrApplied) {
			t.Fatalf("replay of index %d: %v, want ErrApplied", idx, err)
		}
	}
	if n, err := s.AppliedIndex(ctx); err != nil || n != 5 {
		t.Fatalf("AppliedIndex = %d, %v", n, err)
	}
	var snap bytes.Buffer
	if _, err := s.Snapshot(ctx, &snap); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplyAt(ctx, 6, []store.Op{submit(b, "x")}); err != nil {
		t.Fatal(err)
	}
	// Plain Apply does not move the index.
	mustApply(t, s, op(store.OpDispatch, a))
	if n, _ := s.AppliedIndex(ctx); n != 6 {
		t.Fatalf("AppliedIndex after Apply = %d, want 6", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, path)
	if n, _ := s.AppliedIndex(ctx); n != 6 {
		t.Fatalf("AppliedIndex after reopen = %d, want 6", n)
	}
	if _, err := s.ApplyAt(ctx, 6, []store.Op{submit(store.NewID(), "x")}); !errors.Is(err, store.ErrApplied) {
		t.Fatalf("replay after reopen: %v", err)
	}
	// A restore brings its own index back: entry 6 applies again.
	if err := s.Restore(ctx, &snap); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.AppliedIndex(ctx); n != 5 {
		t.Fatalf("AppliedIndex after restore = %d, want 5", n)
	}
	if _, err := s.Get(ctx, b); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ticket of entry 6 after restore of the snapshot at 5: %v", err)
	}
	if _, err := s.ApplyAt(ctx, 6, []store.Op{submit(b, "x")}); err != nil {
		t.Fatalf("entry 6 after restore: %v", err)
	}
	if _, err := s.Get(ctx, b); err != nil {
		t.Fatal(err)
	}
}

// Concurrent ApplyAt calls may share a commit; each index is still
// applied once, in order.
func TestApplyAtConcurrent(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	errs := make(chan error, 100)
	for i := 1; i <= 100; i++ {
		go func() {
			_, err := s.ApplyAt(ctx, uint64(i), []store.Op{submit(store.NewID(), "x")})
			errs <- err
		}()
	}
	applied := 0
	for range 100 {
		switch err := <-errs; {
		case err == nil:
			applied++
		case errors.Is(err, store.ErrApplied):
		default:
			t.Fatal(err)
		}
	}
	// Out-of-order arrival skips lower indexes (the caller must send them
	// in order); what is applied is consistent with the index.
	n, _ := s.AppliedIndex(ctx)
	st, _ := s.Stats(ctx)
	if applied == 0 || n != 100 || st.Services["x"].Pending != applied {
		t.Fatalf("applied %d, index %d, pending %d", applied, n, st.Services["x"].Pending)
	}
}

// An entry replayed at an index the store applied under another term is
// reported, not silently skipped: the log under the store was replaced.
func TestApplyLogDiverged(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	res := s.ApplyLog(ctx, []store.Entry{{Index: 1, Term: 2, Ops: []store.Op{submit(store.NewID(), "x")}}, {Index: 2, Term: 2, Ops: []store.Op{submit(store.NewID(), "x")}}})
	for _, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	// The same entries again (a restart replaying its log): skipped.
	res = s.ApplyLog(ctx, []store.Entry{{Index: 2, Term: 2, Ops: []store.Op{submit(store.NewID(), "x")}}})
	if !errors.Is(res[0].Err, store.ErrApplied) || errors.Is(res[0].Err, store.ErrDiverged) {
		t.Fatalf("replay: %v", res[0].Err)
	}
	// Index 2 of another term: diverged.
	res = s.ApplyLog(ctx, []store.Entry{{Index: 2, Term: 3, Ops: []store.Op{submit(store.NewID(), "y")}}})
	if !errors.Is(res[0].Err, store.ErrDiverged) {
		t.Fatalf("rewritten log: %v, want ErrDiverged", res[0].Err)
	}
	if st, _ := s.Stats(ctx); st.Services["x"].Pending != 2 || st.Services["y"].Pending != 0 {
		t.Fatalf("store changed: %+v", st.Services)
	}
}
