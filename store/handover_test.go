package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/titanicmq/titanic/store"
)

// A handover's batches marked with an OpHandover are taken once: redone
// (from the fork point, in batches cut elsewhere), the ops taken before
// are left out (ErrHandedOver), so what the taker's clients did in
// between stays (a retry of the ticket the handover failed, a resume of
// the service it paused); the ops not taken yet are applied, and so are
// the ops of another call that share the transaction.
func TestHandoverTakenOnce(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	failed, adopted, later := store.NewID(), store.NewID(), store.NewID()
	mustApply(t, s, submit(failed, "s"))
	hid := store.ID{1, 2, 3}
	handover := []store.Op{
		{Kind: store.OpFail, ID: failed, Time: at(1), Reason: "failed on the peer"},
		{Kind: store.OpPause, Service: "s", Time: at(2)},
		{Kind: store.OpAdopt, ID: adopted, Time: at(3), Service: "s", Body: [][]byte{[]byte("a")}},
		{Kind: store.OpAdopt, ID: later, Time: at(4), Service: "s", Body: [][]byte{[]byte("b")}},
	}
	// The first try: its first batch (the fail and the pause) is taken,
	// and its answer lost.
	res := mustApply(t, s, append([]store.Op{store.HandoverMark(hid, 0, 2)}, handover[:2]...)...)
	if res[0].Existed || res[0].Duplicate {
		t.Fatalf("first mark of a handover: %+v", res[0])
	}
	// The taker's client retries the ticket, its operator resumes s.
	mustApply(t, s, store.Op{Kind: store.OpRetry, ID: failed, Time: at(5)}, store.Op{Kind: store.OpResume, Service: "s", Time: at(6)})
	// The redo, in batches of three and one, with another call's submit
	// in the same store call after the first.
	other := store.NewID()
	redo := append([]store.Op{store.HandoverMark(hid, 0, 3)}, handover[:3]...)
	redo = append(redo, submit(other, "s"))
	res, err := s.Apply(ctx, redo)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []error{nil, store.ErrHandedOver, store.ErrHandedOver, nil, nil} {
		if !errors.Is(res[i].Err, want) || want == nil && res[i].Err != nil {
			t.Fatalf("redo op %d (%s): %v, want %v", i, redo[i].Kind, res[i].Err, want)
		}
	}
	mustApply(t, s, store.HandoverMark(hid, 3, 1), handover[3])
	tk, err := s.Get(ctx, failed)
	if err != nil {
		t.Fatal(err)
	}
	if tk.State != store.StatePending {
		t.Fatalf("ticket retried on the taker after the handover failed it: %s after the redo, want pending", tk.State)
	}
	if paused, err := s.Paused(ctx); err != nil || len(paused) != 0 {
		t.Fatalf("service resumed on the taker after the handover paused it: paused %v (%v) after the redo", paused, err)
	}
	for _, id := range []store.ID{adopted, later, other} {
		if _, err := s.Get(ctx, id); err != nil {
			t.Fatalf("ticket %s not taken: %v", id, err)
		}
	}
	// Another handover (another fork) is taken whole.
	res = mustApply(t, s, store.HandoverMark(store.ID{4}, 0, 1), store.Op{Kind: store.OpPause, Service: "s", Time: at(7)})
	if res[1].Err != nil {
		t.Fatalf("another handover's pause: %v", res[1].Err)
	}
	// A mark that counts more ops than follow it covers none.
	res, err = s.Apply(ctx, []store.Op{store.HandoverMark(hid, 0, 2), {Kind: store.OpResume, Service: "s", Time: at(8)}})
	if err != nil || !errors.Is(res[0].Err, store.ErrInvalidOp) || res[1].Err != nil {
		t.Fatalf("a mark of more ops than follow it: %v %+v", err, res)
	}
}

// The name of a handover stays while the fork does not change, and
// changes once it holds more.
func TestHandoverIDFollowsTheFork(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	if r := s.ApplyLog(ctx, []store.Entry{{Index: 1, Term: 2, Shared: true}}); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	solo := func(index, term uint64) {
		t.Helper()
		if r := s.ApplyLog(ctx, []store.Entry{{Index: index, Term: term, Solo: true, Ops: []store.Op{submit(store.NewID(), "s")}}}); r[0].Err != nil {
			t.Fatal(r[0].Err)
		}
	}
	solo(2, 3)
	id := func(node string, fork uint64) store.ID {
		t.Helper()
		h, err := s.HandoverID(ctx, node, fork)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	a := id("backup", 1)
	if b := id("backup", 1); b != a {
		t.Fatalf("the same fork named %s, then %s", a, b)
	}
	if id("primary", 1) == a || id("backup", 0) == a {
		t.Fatal("another node's or another fork point's handover has the same name")
	}
	// An entry of no ops (an announcement after a restart) changes
	// nothing handed over: the same name.
	if r := s.ApplyLog(ctx, []store.Entry{{Index: 3, Term: 5, Solo: true}}); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	if b := id("backup", 1); b != a {
		t.Fatalf("an entry of no ops renamed the handover: %s, then %s", a, b)
	}
	solo(4, 5)
	if id("backup", 1) == a {
		t.Fatal("a fork that grew keeps its handover's name: a redo would leave out ops it never sent")
	}
}
