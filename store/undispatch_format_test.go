package store_test

import (
	"context"
	"testing"

	"github.com/titanicmq/titanic/store"
)

// An unsent dispatch taken back (OpUndispatch: a worker gone as the job
// was sent) is no feature an operator chose, and it writes only what the
// first release reads: applied locally, it must not move a single node's
// store to format 2 and so end a rollback to v0.1.0 (README, Rolling
// back); it did (found by a reviewer of the day's changes). It is applied:
// the attempt is given back.
func TestUndispatchKeepsFormat1(t *testing.T) {
	s, _ := newStore(t)
	id := store.NewID()
	mustApply(t, s, submit(id, "echo"), op(store.OpDispatch, id))
	if s.NewerFormat() {
		t.Fatal("precondition: format 2 already")
	}
	res, err := s.Apply(context.Background(), []store.Op{{Kind: store.OpUndispatch, ID: id, Time: at(3)}})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Err != nil || res[0].State != store.StatePending || res[0].Attempts != 0 {
		t.Fatalf("undispatch: %+v", res[0])
	}
	if s.NewerFormat() {
		t.Fatalf("an undispatch moved a single node's store to format 2 (v0.1.0 now refuses it); result %+v", res[0])
	}
}
