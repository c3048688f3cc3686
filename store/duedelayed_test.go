package store_test

import (
	"context"
	"testing"

	"github.com/titanicmq/titanic/store"
)

// DueDelayed counts, per service, the delayed tickets whose due time has
// passed (they wait for a worker) and not those still delayed, and gives
// the earliest due time among them.
func TestDueDelayedCountsOnlyTheDue(t *testing.T) {
	s, _ := newStore(t)
	for i, due := range []int{100, 200, 300, 400} {
		o := submit(store.NewID(), "later", []byte("b"))
		o.Time = at(i)
		o.Lifecycle = store.Lifecycle{Due: at(due)}
		mustApply(t, s, o)
	}
	mustApply(t, s, submit(store.NewID(), "plain", []byte("b")))
	got, err := s.DueDelayed(context.Background(), []string{"later", "plain", "unknown"}, at(250))
	if err != nil {
		t.Fatal(err)
	}
	if d := got["later"]; d.Due != 2 || !d.First.Equal(at(100)) {
		t.Errorf("later: %+v at %v, want 2 due, the first at %v", d, at(250), at(100))
	}
	for _, svc := range []string{"plain", "unknown"} {
		if d := got[svc]; d.Due != 0 || !d.First.IsZero() {
			t.Errorf("%s: %+v, want none due", svc, d)
		}
	}
}
