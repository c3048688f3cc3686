package store_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/titanicmq/titanic/store"
)

// The side of a split brain that yields hands over what it did alone;
// the other side takes it in idempotently: tickets minted alone are
// adopted with their id, body and answer, answers to older tickets are
// recorded unless one already won, closes delete, and a ticket the
// receiving side closed stays closed.
func TestForkOpsMerge(t *testing.T) {
	ctx := context.Background()
	loser, _ := newStore(t)
	winner, _ := newStore(t)
	var (
		idx  uint64
		term uint64 = 2
	)
	// apply applies ops as one log entry on both or one store.
	apply := func(solo bool, ops []store.Op, to ...*store.BoltStore) {
		t.Helper()
		idx++
		for _, s := range to {
			res := s.ApplyLog(ctx, []store.Entry{{Index: idx, Term: term, Ops: ops, Solo: solo}})
			if res[0].Err != nil {
				t.Fatal(res[0].Err)
			}
		}
	}
	shared := []store.ID{store.NewID(), store.NewID(), store.NewID(), store.NewID()}
	for _, id := range shared {
		apply(false, []store.Op{submit(id, "s")}, loser, winner)
	}
	// A shared configuration entry prunes the journal before it.
	idx++
	for _, s := range []*store.BoltStore{loser, winner} {
		if r := s.ApplyLog(ctx, []store.Entry{{Index: idx, Term: term, Shared: true}}); r[0].Err != nil {
			t.Fatal(r[0].Err)
		}
	}
	fork := idx
	// The split: each side alone, in its own term.
	term = 3
	minted := store.NewID()
	mintedClosed := store.NewID()
	keyed := store.NewID()
	apply(true, []store.Op{
		submit(minted, "s", []byte("alone")),
		{Kind: store.OpSubmit, ID: keyed, Service: "s", IdemKey: "k", Body: [][]byte{[]byte("k-loser")}, Time: at(1)},
		submit(mintedClosed, "s"),
	}, loser)
	apply(true, []store.Op{
		{Kind: store.OpReply, ID: minted, Reply: [][]byte{[]byte("r-minted")}},
		{Kind: store.OpReply, ID: shared[0], Reply: [][]byte{[]byte("r0-loser")}},
		{Kind: store.OpReply, ID: shared[1], Reply: [][]byte{[]byte("r1-loser")}},
		{Kind: store.OpClose, ID: shared[2]},
		{Kind: store.OpReply, ID: mintedClosed},
		{Kind: store.OpClose, ID: mintedClosed},
		{Kind: store.OpReply, ID: shared[3], Reply: [][]byte{[]byte("r3-loser")}},
	}, loser)
	// Meanwhile the winner answered shared[0] first, closed shared[3],
	// and took a keyed resend of the same request before the loser did.
	idx = fork
	term = 4
	winnerKeyed := store.NewID()
	apply(true, []store.Op{
		{Kind: store.OpReply, ID: shared[0], Reply: [][]byte{[]byte("r0-winner")}},
		{Kind: store.OpClose, ID: shared[3]},
		{Kind: store.OpSubmit, ID: winnerKeyed, Service: "s", IdemKey: "k", Body: [][]byte{[]byte("k-winner")}, Time: at(2)},
	}, winner)

	lh, _ := loser.History(ctx)
	wh, _ := winner.History(ctx)
	if got := lh.ForkPoint(wh); got != fork {
		t.Fatalf("fork point %d, want %d", got, fork)
	}
	var ops []store.Op
	err := loser.ForkOps(ctx, fork, 1<<20, func(b []store.Op) error { ops = append(ops, b...); return nil })
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, op := range ops {
		kinds = append(kinds, op.Kind.String()+" "+op.ID.String()[:4])
	}
	t.Logf("fork ops: %v", kinds)
	// Through the log, as the winner would take them, twice (a
	// handover retried after a lost answer changes nothing).
	for range 2 {
		idx++
		if r := winner.ApplyLog(ctx, []store.Entry{{Index: idx, Term: term, Ops: ops}}); r[0].Err != nil {
			t.Fatal(r[0].Err)
		}
	}
	reply := func(id store.ID) string {
		t.Helper()
		_, rep, err := winner.Reply(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return "not found"
		}
		if err != nil {
			return err.Error()
		}
		return string(slices.Concat(rep...))
	}
	for id, want := range map[store.ID]string{
		minted:       "r-minted",  // minted alone: adopted with its answer
		shared[0]:    "r0-winner", // first reply wins
		shared[1]:    "r1-loser",  // answered alone: recorded
		shared[3]:    "not found", // closed on the winner: stays closed
		shared[2]:    "not found", // closed alone: closed
		mintedClosed: "not found", // minted and closed alone: nothing
	} {
		if got := reply(id); got != want {
			t.Errorf("ticket %s: %q, want %q", id, got, want)
		}
	}
	// Both keyed tickets stay; the key names the older (the loser's).
	for _, id := range []store.ID{keyed, winnerKeyed} {
		if _, err := winner.Get(ctx, id); err != nil {
			t.Errorf("keyed ticket %s: %v", id, err)
		}
	}
	res := winner.ApplyLog(ctx, []store.Entry{{Index: idx + 1, Term: term, Ops: []store.Op{{Kind: store.OpSubmit, ID: store.NewID(), Service: "s", IdemKey: "k", Body: [][]byte{[]byte("k-loser")}, Time: at(3)}}}})
	if res[0].Err != nil || !res[0].Results[0].Duplicate || res[0].Results[0].ID != keyed {
		t.Fatalf("key k names %v, want the older ticket %s", res[0].Results, keyed)
	}
	tk, err := winner.Get(ctx, keyed)
	if err != nil || string(tk.Body[0]) != "k-loser" {
		t.Fatalf("adopted ticket body %q, %v", tk.Body, err)
	}
	if err := winner.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// A handover batch stays within maxBytes: a ticket's ops go together when
// they fit in a batch, and a ticket whose body and reply together are
// larger than a batch goes one op per batch. Together, its adopt and
// reply were one message larger than the peer takes
// (limits.max_message_size), refused at every try: the pair never became
// whole again (found by a reviewer of the pair).
func TestForkOpsBatchesBounded(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	const maxBytes = 100 << 10
	small, big := store.NewID(), store.NewID()
	body := func(n int) [][]byte { return [][]byte{bytes.Repeat([]byte("b"), n)} }
	res := s.ApplyLog(ctx, []store.Entry{
		{Index: 1, Term: 2, Shared: true},
		{Index: 2, Term: 3, Solo: true, Ops: []store.Op{
			{Kind: store.OpSubmit, ID: small, Service: "s", Body: body(100), Time: at(1)},
			{Kind: store.OpSubmit, ID: big, Service: "s", Body: body(70 << 10), Time: at(1)},
		}},
		{Index: 3, Term: 3, Solo: true, Ops: []store.Op{
			{Kind: store.OpReply, ID: small, Reply: body(100), Time: at(2)},
			{Kind: store.OpReply, ID: big, Reply: body(60 << 10), Time: at(2)},
		}},
	})
	for _, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	var batches [][]store.Op
	if err := s.ForkOps(ctx, 1, maxBytes, func(b []store.Op) error { batches = append(batches, b); return nil }); err != nil {
		t.Fatal(err)
	}
	var shape []string
	for _, b := range batches {
		size := 0
		var kinds []string
		for _, op := range b {
			size += len(store.EncodeOps([]store.Op{op}))
			who := "small"
			if op.ID == big {
				who = "big"
			}
			kinds = append(kinds, op.Kind.String()+" "+who)
		}
		if size > maxBytes {
			t.Errorf("a batch of %d bytes (%v), over the bound of %d", size, kinds, maxBytes)
		}
		shape = append(shape, strings.Join(kinds, ", "))
	}
	want := []string{"adopt small, reply small", "adopt big", "reply big"}
	if !slices.Equal(shape, want) {
		t.Fatalf("batches %q, want %q", shape, want)
	}
}

// README: `titanic pause SERVICE` is "durable", and after a split brain
// the yielding node "hands over every change it made after the fork
// point". A pause (or resume) an operator made on the side that yields was
// journaled (kind pause, zero ticket id) and ForkOps turned it into a
// close of the zero ticket, which the winner refused: the pause was
// silently undone by the merge and the service's tickets dispatched again
// (found by a reviewer of the pair). It is journaled by service now.
func TestHandoverCarriesPauseMadeDuringSplit(t *testing.T) {
	ctx := context.Background()
	loser, _ := newStore(t)
	winner, _ := newStore(t)
	for _, s := range []*store.BoltStore{loser, winner} {
		if r := s.ApplyLog(ctx, []store.Entry{{Index: 1, Term: 2, Shared: true}}); r[0].Err != nil {
			t.Fatal(r[0].Err)
		}
	}
	const fork = 1
	if r := loser.ApplyLog(ctx, []store.Entry{{Index: 2, Term: 3, Solo: true, Ops: []store.Op{
		{Kind: store.OpPause, Time: at(1), Service: "billing"},
	}}}); r[0].Err != nil || r[0].Results[0].Err != nil {
		t.Fatal(r[0].Err, r[0].Results)
	}
	if p, _ := loser.Paused(ctx); p["billing"].IsZero() {
		t.Fatalf("loser: service not paused: %v", p)
	}
	var ops []store.Op
	if err := loser.ForkOps(ctx, fork, 1<<20, func(b []store.Op) error { ops = append(ops, b...); return nil }); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, op := range ops {
		kinds = append(kinds, op.Kind.String()+" id="+op.ID.String()+" service="+op.Service)
	}
	r := winner.ApplyLog(ctx, []store.Entry{{Index: 2, Term: 4, Solo: true, Ops: ops}})
	if r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	p, err := winner.Paused(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p["billing"].IsZero() {
		t.Fatalf("the pause of service billing acknowledged on the yielding node is not on the winner after the handover; handed over: %q (results %v)", kinds, r[0].Results)
	}
}

// README (Split brain, the merge): "The active applies them idempotently:
// ... a close deletes, and a ticket the active's clients closed stays
// closed", and "A handover cut short is redone." The yielding node hands
// its work over in batches (titanic/ha reconcile, handoverBytes), and a
// handover cut short after some batches (a batch's answer lost, the node
// killed between two batches, or its resync failing afterwards) is redone
// from the fork point: every OpAdopt again. Between the two, the winner
// dispatches the adopted tickets, its clients read their replies and close
// them. The redone handover brought those tickets back (pending again,
// run again, holding their key again: found by a reviewer of the pair);
// a store now takes an adoption once.
func TestRedoneHandoverKeepsAdoptedTicketsClosedOnWinner(t *testing.T) {
	ctx := context.Background()
	loser, _ := newStore(t)
	winner, _ := newStore(t)
	var idx uint64
	// The shared past, then a configuration of two (prunes the journal).
	for _, s := range []*store.BoltStore{loser, winner} {
		if r := s.ApplyLog(ctx, []store.Entry{{Index: 1, Term: 2, Shared: true}}); r[0].Err != nil {
			t.Fatal(r[0].Err)
		}
	}
	idx = 1
	fork := idx
	// The split: the loser takes a ticket in alone, and acknowledges it.
	minted := store.NewID()
	idx++
	if r := loser.ApplyLog(ctx, []store.Entry{{Index: idx, Term: 3, Solo: true, Ops: []store.Op{
		{Kind: store.OpSubmit, ID: minted, Time: at(1), Service: "s", IdemKey: "key-1", Body: [][]byte{[]byte("job")}},
	}}}); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	handover := func() []store.Op {
		t.Helper()
		var ops []store.Op
		if err := loser.ForkOps(ctx, fork, 1<<20, func(b []store.Op) error { ops = append(ops, b...); return nil }); err != nil {
			t.Fatal(err)
		}
		return ops
	}
	widx := fork
	applyWinner := func(ops ...store.Op) {
		t.Helper()
		widx++
		r := winner.ApplyLog(ctx, []store.Entry{{Index: widx, Term: 4, Solo: true, Ops: ops}})
		if r[0].Err != nil {
			t.Fatal(r[0].Err)
		}
	}
	// First handover: the winner adopts the ticket, runs it, its client
	// reads the reply and closes the ticket.
	applyWinner(handover()...)
	applyWinner(store.Op{Kind: store.OpDispatch, ID: minted, Time: at(2)})
	applyWinner(store.Op{Kind: store.OpReply, ID: minted, Time: at(3), Reply: [][]byte{[]byte("done")}})
	applyWinner(store.Op{Kind: store.OpClose, ID: minted, Time: at(4)})
	if _, err := winner.Get(ctx, minted); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after the close: %v, want not found", err)
	}
	// The handover is redone (its last batch's answer was lost, or the
	// node died before its resync): the same journal, the same ops.
	applyWinner(handover()...)
	tk, err := winner.Get(ctx, minted)
	if err == nil {
		t.Fatalf("ticket %s, closed by the winner's client after the first handover, is back after the handover was redone: state %s, key %q (it is dispatched and run again)",
			minted, tk.State, tk.IdemKey)
	}
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
}

// README (Deadlines): "A ticket dispatched once does not expire". A ticket
// the yielding side of a split brain took in alone and dispatched there
// (one still running, one failed once and backing off) was handed over as
// never dispatched: adopted with attempts 0 and its deadline watched, it
// expired at once after the merge. The adoption carries its dispatches
// now: the running one is adopted dispatched, the other pending, both with
// their attempts and out of the deadline index.
func TestHandoverKeepsDispatchesOfAdoptedTickets(t *testing.T) {
	ctx := context.Background()
	loser, _ := newStore(t)
	winner, _ := newStore(t)
	for _, s := range []*store.BoltStore{loser, winner} {
		if r := s.ApplyLog(ctx, []store.Entry{{Index: 1, Term: 2, Shared: true}}); r[0].Err != nil {
			t.Fatal(r[0].Err)
		}
	}
	const fork = 1
	running, backing := store.NewID(), store.NewID()
	ttl := store.Lifecycle{Deadline: at(5)}
	if r := loser.ApplyLog(ctx, []store.Entry{{Index: 2, Term: 3, Solo: true, Ops: []store.Op{
		{Kind: store.OpSubmit, ID: running, Time: at(1), Service: "s", Body: [][]byte{[]byte("r")}, Lifecycle: ttl},
		{Kind: store.OpSubmit, ID: backing, Time: at(1), Service: "s", Body: [][]byte{[]byte("b")}, Lifecycle: ttl},
		{Kind: store.OpDispatch, ID: running, Time: at(2)},
		{Kind: store.OpDispatch, ID: backing, Time: at(2)},
		{Kind: store.OpRequeue, ID: backing, Time: at(3), Reason: "boom", Lifecycle: store.Lifecycle{Due: at(60)}},
	}}}); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	var ops []store.Op
	if err := loser.ForkOps(ctx, fork, 1<<20, func(b []store.Op) error { ops = append(ops, b...); return nil }); err != nil {
		t.Fatal(err)
	}
	decoded, err := store.DecodeOps(store.EncodeOps(ops)) // as the peer gets them
	if err != nil {
		t.Fatal(err)
	}
	if r := winner.ApplyLog(ctx, []store.Entry{{Index: 2, Term: 4, Solo: true, Ops: decoded}}); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	for _, want := range []struct {
		id    store.ID
		state store.State
	}{{running, store.StateDispatched}, {backing, store.StatePending}} {
		tk, err := winner.Get(ctx, want.id)
		if err != nil {
			t.Fatal(err)
		}
		if tk.State != want.state || tk.Attempts != 1 {
			t.Errorf("adopted %s: %s after %d attempts, want %s after 1", want.id, tk.State, tk.Attempts, want.state)
		}
	}
	dl, err := winner.Queued(ctx, store.QueueRead{Queue: store.QueueDeadline, Service: "s", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != 0 {
		t.Fatalf("adopted tickets dispatched once are watched for their deadline: %+v", dl)
	}
	c, err := winner.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c["s"].Pending != 1 || c["s"].Dispatched != 1 {
		t.Fatalf("counts %+v, want 1 pending and 1 dispatched", c["s"])
	}
	// Without the history (a pair below cluster version 5), as before.
	bare := ops[0].WithoutAdoptHistory()
	if bare.Attempts != 0 || bare.Dispatched || bare.Version() >= store.AdoptHistoryVersion {
		t.Fatalf("without the history: %+v (version %d)", bare, bare.Version())
	}
}

// A ticket a node adopted in a handover (its peer's, which may still hold
// it) is handed back as an older ticket is when that node yields later:
// closed here, an OpClose; retried here, its adoption then an OpRetry;
// answered here, its adoption then its answer. It was taken for a ticket
// created after the fork: an adoption and a close cancelled out, and a
// retry was left out, so the peer kept it pending (run again) or failed
// (the retry lost).
func TestForkOpsHandsBackAdoptedTickets(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	if r := s.ApplyLog(ctx, []store.Entry{{Index: 1, Term: 2, Shared: true}}); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	fork := uint64(1)
	closed, retried, answered := store.NewID(), store.NewID(), store.NewID()
	adopt := func(id store.ID) store.Op {
		return store.Op{Kind: store.OpAdopt, ID: id, Time: at(1), Service: "s", Body: [][]byte{[]byte("job")}}
	}
	ops := []store.Op{
		adopt(closed), adopt(retried), adopt(answered),
		{Kind: store.OpFail, ID: retried, Time: at(2), Reason: "failed there"},
		{Kind: store.OpClose, ID: closed, Time: at(3)},
		{Kind: store.OpRetry, ID: retried, Time: at(4)},
		{Kind: store.OpReply, ID: answered, Time: at(5), Reply: [][]byte{[]byte("r")}},
	}
	for i, op := range ops {
		if r := s.ApplyLog(ctx, []store.Entry{{Index: uint64(2 + i), Term: 3, Solo: true, Ops: []store.Op{op}}}); r[0].Err != nil || r[0].Results[0].Err != nil {
			t.Fatalf("%s: %v %v", op.Kind, r[0].Err, r[0].Results)
		}
	}
	var handed []store.Op
	if err := s.ForkOps(ctx, fork, 1<<20, func(b []store.Op) error { handed = append(handed, b...); return nil }); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, op := range handed {
		name := map[store.ID]string{closed: "closed", retried: "retried", answered: "answered"}[op.ID]
		got = append(got, op.Kind.String()+" "+name)
	}
	want := []string{"close closed", "adopt retried", "retry retried", "adopt answered", "reply answered"}
	if !slices.Equal(got, want) {
		t.Fatalf("handed back %q, want %q", got, want)
	}
}
