package store_test

import (
	"context"
	"sync"
	"testing"

	"github.com/titanicmq/titanic/store"
)

// TestGroupCommit runs 64 concurrent Apply loops: each commit (one fsync)
// must serve many calls, and every call must have been applied.
func TestGroupCommit(t *testing.T) {
	const (
		writers = 64
		each    = 40
	)
	s, _ := newStore(t)
	ctx := context.Background()
	before, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				o := submit(store.NewID(), "svc", []byte{byte(w), byte(i)})
				res, err := s.Apply(ctx, []store.Op{o})
				if err == nil {
					err = res[0].Err
				}
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	after, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	applies := after.Applies - before.Applies
	commits := after.Commits - before.Commits
	t.Logf("%d Apply calls in %d commits (%.1f per commit)", applies, commits, float64(applies)/float64(commits))
	if applies != writers*each {
		t.Fatalf("%d Apply calls answered, want %d", applies, writers*each)
	}
	// With 64 callers and an fsync per commit, all but a handful of calls
	// find a commit in progress and join the next one; one commit per
	// call would mean group commit is broken.
	if commits*4 > applies {
		t.Fatalf("%d commits for %d Apply calls: group commit is not grouping", commits, applies)
	}
	if got := after.Services["svc"].Pending; got != writers*each {
		t.Fatalf("%d pending tickets, want %d", got, writers*each)
	}
}
