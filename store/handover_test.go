package store_test

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
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

// A keyed handover (HandoverKeyedMark) whose fork grew between two tries
// keeps its name (HandoverName: the yielding node and its fork point),
// and the redo takes what is new alone. Here the first try's first two
// batches were taken (the fail of a ticket both sides held, an adoption)
// and the taker's client retried the ticket; then the yielding node
// served alone again: it took a ticket in and closed it (ForkOps hands
// nothing of it over, so by position every later op would have moved),
// took another in, and answered the adopted one. By position, that fork
// was another handover (its last change is in the name), taken whole:
// its fail undid the retry.
func TestKeyedHandoverOfGrownFork(t *testing.T) {
	ctx := context.Background()
	y, _ := newStore(t)
	taker, _ := newStore(t)
	shared, a, c, d := store.NewID(), store.NewID(), store.NewID(), store.NewID()
	log := func(es ...store.Entry) { t.Helper(); mustApplyLog(t, y, es...) }
	log(store.Entry{Index: 1, Term: 2, Shared: true, Ops: []store.Op{submit(shared, "s")}})
	mustApply(t, taker, submit(shared, "s"))
	log(store.Entry{Index: 2, Term: 3, Solo: true, Ops: []store.Op{{Kind: store.OpFail, ID: shared, Time: at(1), Reason: "failed on the yielder"}}},
		store.Entry{Index: 3, Term: 3, Solo: true, Ops: []store.Op{submit(a, "s", []byte("a"))}},
		store.Entry{Index: 4, Term: 3, Solo: true, Ops: []store.Op{{Kind: store.OpPause, Service: "p", Time: at(2)}}})
	name := store.HandoverName("backup", 1)
	handover := func() [][]store.Op {
		t.Helper()
		var batches [][]store.Op
		// One ticket per batch.
		err := y.HandoverOps(ctx, 1, 1, func(ops []store.Op, keys []store.HandoverKey) error {
			if len(keys) != len(ops) {
				t.Fatalf("%d keys for %d ops", len(keys), len(ops))
			}
			batches = append(batches, append([]store.Op{store.HandoverKeyedMark(name, keys)}, ops...))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return batches
	}
	first := handover()
	if len(first) != 3 || first[0][1].Kind != store.OpFail || first[1][1].Kind != store.OpAdopt || first[2][1].Kind != store.OpPause {
		t.Fatalf("the first try's batches: %v", first)
	}
	mustApply(t, taker, first[0]...)
	mustApply(t, taker, first[1]...)
	mustApply(t, taker, store.Op{Kind: store.OpRetry, ID: shared, Time: at(3)})

	log(store.Entry{Index: 5, Term: 4, Solo: true, Ops: []store.Op{submit(c, "s")}},
		store.Entry{Index: 6, Term: 4, Solo: true, Ops: []store.Op{{Kind: store.OpClose, ID: c, Time: at(4)}}},
		store.Entry{Index: 7, Term: 4, Solo: true, Ops: []store.Op{submit(d, "s", []byte("d"))}},
		store.Entry{Index: 8, Term: 4, Solo: true, Ops: []store.Op{{Kind: store.OpReply, ID: a, Time: at(5), Reply: [][]byte{[]byte("done")}}}})
	if store.HandoverName("backup", 1) != name {
		t.Fatal("the name of a handover changed")
	}
	var kinds []string
	for _, batch := range handover() {
		res, err := taker.Apply(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		for i, op := range batch[1:] {
			what := op.Kind.String()
			switch {
			case errors.Is(res[i+1].Err, store.ErrHandedOver):
				what += " left out"
			case res[i+1].Err != nil:
				t.Fatalf("redo: %s %s: %v", op.Kind, op.ID, res[i+1].Err)
			}
			kinds = append(kinds, what)
		}
	}
	// The fail taken before is left out; the pause, never taken, and the
	// tickets changed since (a answered, d taken in) are taken.
	if want := "fail left out, pause, adopt, adopt, reply"; strings.Join(kinds, ", ") != want {
		t.Fatalf("the redo of the grown fork: %s, want %s", strings.Join(kinds, ", "), want)
	}
	if tk, err := taker.Get(ctx, shared); err != nil || tk.State != store.StatePending {
		t.Fatalf("the ticket the taker's client retried after the first try failed it: %v (%v) after the redo, want pending", tk.State, err)
	}
	if tk, err := taker.Get(ctx, a); err != nil || tk.State != store.StateDone {
		t.Fatalf("the ticket answered on the yielder after the first try: %v (%v), want done", tk.State, err)
	}
	if _, err := taker.Get(ctx, d); err != nil {
		t.Fatalf("the ticket the yielder took in after the first try: %v", err)
	}
	if _, err := taker.Get(ctx, c); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a ticket created and closed on the yielder: %v", err)
	}
	// Taken whole: a third try takes nothing.
	for _, batch := range handover() {
		res := mustApplyLeftOut(t, taker, batch)
		if !res[0].Duplicate {
			t.Fatalf("a batch taken before: its mark %+v, want a duplicate", res[0])
		}
	}
}

// mustApplyLeftOut applies a marked batch whose every op was taken
// before.
func mustApplyLeftOut(t *testing.T, s store.Store, batch []store.Op) []store.Result {
	t.Helper()
	res, err := s.Apply(context.Background(), batch)
	if err != nil || res[0].Err != nil {
		t.Fatalf("apply: %v %+v", err, res)
	}
	for i, r := range res[1:] {
		if !errors.Is(r.Err, store.ErrHandedOver) {
			t.Fatalf("op %d (%s) of a batch taken before: %v, want ErrHandedOver", i+1, batch[i+1].Kind, r.Err)
		}
	}
	return res
}

// A keyed mark says what it holds by its highest key only while its keys
// rise (HandoverOps emits them so): one whose keys do not, or that has
// more keys than ops after it, covers nothing; its ops are applied as an
// unmarked handover's, and nothing is recorded as taken.
func TestKeyedHandoverMarkChecked(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	key := func(index uint64, ord int) store.HandoverKey {
		var k store.HandoverKey
		binary.BigEndian.PutUint64(k[:], index)
		binary.BigEndian.PutUint32(k[12:], uint32(ord))
		return k
	}
	name := store.HandoverName("backup", 7)
	pause := store.Op{Kind: store.OpPause, Service: "s", Time: at(1)}
	resume := store.Op{Kind: store.OpResume, Service: "s", Time: at(2)}
	for _, mark := range []store.Op{
		store.HandoverKeyedMark(name, []store.HandoverKey{key(9, 0), key(8, 0)}),
		store.HandoverKeyedMark(name, []store.HandoverKey{key(9, 0), key(9, 0)}),
		store.HandoverKeyedMark(name, []store.HandoverKey{key(8, 0), key(9, 0), key(10, 0)}),
	} {
		res, err := s.Apply(ctx, []store.Op{mark, pause, resume})
		if err != nil || !errors.Is(res[0].Err, store.ErrInvalidOp) || res[1].Err != nil || res[2].Err != nil {
			t.Fatalf("a mark that does not fit its ops: %v %+v", err, res)
		}
	}
	// Nothing recorded: a good mark of the same keys takes its ops.
	res := mustApply(t, s, store.HandoverKeyedMark(name, []store.HandoverKey{key(8, 0), key(9, 0)}), pause, resume)
	if res[0].Existed || res[0].Duplicate {
		t.Fatalf("the first good mark of the handover: %+v", res[0])
	}
	if mark := store.HandoverKeyedMark(name, []store.HandoverKey{key(8, 0)}); mark.Version() != store.HandoverKeyVersion {
		t.Fatalf("a keyed mark needs ops record version %d, want %d", mark.Version(), store.HandoverKeyVersion)
	}
	if mark := store.HandoverMark(name, 0, 1); mark.Version() != store.HandoverMarkVersion {
		t.Fatalf("a position mark needs ops record version %d, want %d", mark.Version(), store.HandoverMarkVersion)
	}
}

// The handovers taken are forgotten at the first entry both nodes of the
// pair committed (Entry Shared): a handover's yielding node joins the
// taker's raft only once it handed everything over and set its fork
// aside, so no redo can come after it. Until then, over entries of the
// taker alone, they are kept: a late redo takes nothing twice.
func TestHandoversForgottenOnceShared(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	var k store.HandoverKey
	k[7] = 3
	marked := []store.Op{store.HandoverKeyedMark(store.HandoverName("backup", 1), []store.HandoverKey{k}), {Kind: store.OpPause, Service: "s", Time: at(1)}}
	apply := func(e store.Entry) []store.Result {
		t.Helper()
		r := s.ApplyLog(ctx, []store.Entry{e})
		if r[0].Err != nil {
			t.Fatalf("entry %d: %v", e.Index, r[0].Err)
		}
		return r[0].Results
	}
	apply(store.Entry{Index: 1, Term: 2, Shared: true})
	if res := apply(store.Entry{Index: 2, Term: 3, Solo: true, Ops: marked}); res[1].Err != nil {
		t.Fatalf("the handover: %v", res[1].Err)
	}
	apply(store.Entry{Index: 3, Term: 3, Solo: true, Ops: []store.Op{{Kind: store.OpResume, Service: "s", Time: at(2)}}})
	if res := apply(store.Entry{Index: 4, Term: 4, Solo: true, Ops: marked}); !errors.Is(res[1].Err, store.ErrHandedOver) {
		t.Fatalf("a redo while the taker is alone: %v, want ErrHandedOver", res[1].Err)
	}
	if n := handoversKept(t, s); n != 1 {
		t.Fatalf("%d handovers kept while the taker is alone, want 1", n)
	}
	apply(store.Entry{Index: 5, Term: 5, Shared: true, Ops: []store.Op{submit(store.NewID(), "s")}})
	if n := handoversKept(t, s); n != 0 {
		t.Fatalf("%d handovers kept after an entry both nodes committed, want 0", n)
	}
	// A mark in a shared entry is of a handover still going on: kept.
	apply(store.Entry{Index: 6, Term: 5, Shared: true, Ops: marked})
	if n := handoversKept(t, s); n != 1 {
		t.Fatalf("%d handovers kept after a shared entry that holds a mark, want 1", n)
	}
}

func handoversKept(t *testing.T, s *store.BoltStore) int {
	t.Helper()
	n, err := store.HandoversKept(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A ticket the yielding node took in alone, handed over by a try cut
// short, and closed by its client before the redo is closed on the
// taker: ForkOps handed nothing over for a ticket created and closed
// after the fork, and the adoption of the first try stood (the ticket ran
// there again). A try halts the yielding node's raft, which appends again
// only in a later term: a ticket created and closed under different terms
// is closed on the taker, one created and closed in one term (most of a
// split's) still carries nothing.
func TestCloseOfTicketHandedOverBeforeGrowth(t *testing.T) {
	ctx := context.Background()
	y, _ := newStore(t)
	taker, _ := newStore(t)
	x, z := store.NewID(), store.NewID()
	log := func(es ...store.Entry) { t.Helper(); mustApplyLog(t, y, es...) }
	log(store.Entry{Index: 1, Term: 2, Shared: true},
		store.Entry{Index: 2, Term: 3, Solo: true, Ops: []store.Op{submit(x, "s", []byte("x"))}},
		store.Entry{Index: 3, Term: 3, Solo: true, Ops: []store.Op{submit(z, "s", []byte("z"))}},
		store.Entry{Index: 4, Term: 3, Solo: true, Ops: []store.Op{{Kind: store.OpClose, ID: z, Time: at(1)}}})
	name := store.HandoverName("backup", 1)
	handover := func() (marked []store.Op, kinds []string) {
		t.Helper()
		err := y.HandoverOps(ctx, 1, 1<<20, func(ops []store.Op, keys []store.HandoverKey) error {
			marked = append(append(marked, store.HandoverKeyedMark(name, keys)), ops...)
			for _, op := range ops {
				kinds = append(kinds, op.Kind.String())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return marked, kinds
	}
	first, kinds := handover()
	if strings.Join(kinds, ", ") != "adopt" {
		t.Fatalf("the first try: %v, want the adoption of x alone", kinds)
	}
	mustApply(t, taker, first...)
	// The yielding node serves again, in a later term: x's client closes it.
	log(store.Entry{Index: 5, Term: 4, Solo: true, Ops: []store.Op{{Kind: store.OpClose, ID: x, Time: at(2)}}})
	redo, kinds := handover()
	if strings.Join(kinds, ", ") != "close" {
		t.Fatalf("the redo: %v, want the close of x alone", kinds)
	}
	mustApply(t, taker, redo...)
	if _, err := taker.Get(ctx, x); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ticket x, handed over by the first try and closed on the yielding node before the redo: %v on the taker, want it closed", err)
	}
}

// mustApplyLog applies log entries to s and fails the test on any
// entry's error.
func mustApplyLog(t *testing.T, s *store.BoltStore, es ...store.Entry) {
	t.Helper()
	for i, r := range s.ApplyLog(context.Background(), es) {
		if r.Err != nil {
			t.Fatalf("entry %d: %v", es[i].Index, r.Err)
		}
	}
}
