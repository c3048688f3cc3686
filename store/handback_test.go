package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/titanicmq/titanic/store"
)

// A ticket the yielding node took in alone and handed over by a try cut
// short comes back to it from the taker once the roles turn: the taker
// adopted it (its solo journal says so) and hands it back as an adopted
// ticket (OpAdopt), for the first node "may still hold it". But the first
// node may have served alone again in between (Binary Star made it
// active: it reforms the raft it halted for the handover) and its client
// closed the ticket there (acknowledged). The adoption handed back then
// makes the ticket anew on the node that created and closed it: it runs
// again and holds its key again. Only the node's adopted bucket stops an
// adoption of a ticket closed since, and a node never adopted a ticket it
// created itself.
func TestHandbackOfAdoptedTicketClosedOnItsCreator(t *testing.T) {
	ctx := context.Background()
	first, _ := newStore(t)  // yields first, then takes the other's work
	second, _ := newStore(t) // takes a first try, then yields
	x := store.NewID()
	mustApplyLog(t, first, store.Entry{Index: 1, Term: 2, Shared: true},
		store.Entry{Index: 2, Term: 3, Solo: true, Ops: []store.Op{submit(x, "s", []byte("x"))}})
	mustApplyLog(t, second, store.Entry{Index: 1, Term: 2, Shared: true})

	// The first try of the first node's handover reaches the second, which
	// takes it alone (a raft of its own: solo entries); its answer is lost.
	mustApplyLog(t, second, store.Entry{Index: 2, Term: 5, Solo: true, Ops: keyedHandover(t, first, "first")})
	if _, err := second.Get(ctx, x); err != nil {
		t.Fatalf("the first try did not hand x over: %v", err)
	}

	// The first node serves alone again, in a later term, and x's client
	// closes x there: acknowledged.
	mustApplyLog(t, first, store.Entry{Index: 3, Term: 4, Solo: true, Ops: []store.Op{{Kind: store.OpClose, ID: x, Time: at(2)}}})

	// The roles turn: the second node yields to the first, which takes
	// its handover.
	mustApplyLog(t, first, store.Entry{Index: 4, Term: 6, Solo: true, Ops: keyedHandover(t, second, "second")})
	if tk, err := first.Get(ctx, x); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ticket x, taken in and closed by its client on the first node (acknowledged) after a cut-short try had handed it to the second: %s on the first node after the second handed its work back (%v), want it closed: the handback's adoption made it anew, to run again",
			tk.State, err)
	}
}

// keyedHandover returns the handover of s's fork past index 1 by node,
// its batches marked by key, as one call.
func keyedHandover(t *testing.T, s *store.BoltStore, node string) []store.Op {
	t.Helper()
	var all []store.Op
	if err := s.HandoverOps(context.Background(), 1, 1<<20, func(ops []store.Op, keys []store.HandoverKey) error {
		all = append(append(all, store.HandoverKeyedMark(store.HandoverName(node, 1), keys)), ops...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return all
}

// The same handback undoes a retry: the first node failed a ticket both
// nodes held and a cut-short try handed the failure over; serving alone
// again, the first node's client retried the ticket (acknowledged,
// pending again). The second node hands back the failure it took from the
// first (its solo journal holds it as a change of its own) and fails the
// ticket again on the first: the retry is undone and the ticket never
// runs.
func TestHandbackOfTakenFailureUndoesCreatorsRetry(t *testing.T) {
	first, _ := newStore(t)
	second, _ := newStore(t)
	s := store.NewID()
	for _, n := range []*store.BoltStore{first, second} {
		mustApplyLog(t, n, store.Entry{Index: 1, Term: 2, Shared: true, Ops: []store.Op{submit(s, "s")}})
	}
	mustApplyLog(t, first, store.Entry{Index: 2, Term: 3, Solo: true, Ops: []store.Op{{Kind: store.OpFail, ID: s, Time: at(1), Reason: "failed on the first"}}})
	mustApplyLog(t, second, store.Entry{Index: 2, Term: 5, Solo: true, Ops: keyedHandover(t, first, "first")})
	mustApplyLog(t, first, store.Entry{Index: 3, Term: 4, Solo: true, Ops: []store.Op{{Kind: store.OpRetry, ID: s, Time: at(2)}}})
	mustApplyLog(t, first, store.Entry{Index: 4, Term: 6, Solo: true, Ops: keyedHandover(t, second, "second")})
	wantState(t, first, s, store.StatePending, "retried by its client on the first node (acknowledged) after a cut-short try handed its failure to the second, after the second handed its work back: the handback failed it again")
}

// wantState fails the test unless ticket id is in state want on s; what
// says what the ticket went through and what it means if it is not.
func wantState(t *testing.T, s *store.BoltStore, id store.ID, want store.State, what string) {
	t.Helper()
	tk, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if tk.State != want {
		t.Fatalf("ticket %s is %s (%q), want %s: %s", id, tk.State, tk.Reason, want, what)
	}
}

// A retry taken from the peer's handover is the peer's too: the taker
// that only dispatched the ticket since (its own change, so the ticket is
// handed back) does not hand the retry back with it. It failed again on
// the peer, which served alone again after the cut-short try: a retry
// handed back undid that failure, and the ticket ran again.
func TestHandbackOfTakenRetryUndoesCreatorsFailure(t *testing.T) {
	first, _ := newStore(t)
	second, _ := newStore(t)
	s := store.NewID()
	for _, n := range []*store.BoltStore{first, second} {
		mustApplyLog(t, n, store.Entry{Index: 1, Term: 2, Shared: true, Ops: []store.Op{submit(s, "s"), {Kind: store.OpFail, ID: s, Time: at(1), Reason: "failed before the split"}}})
	}
	mustApplyLog(t, first, store.Entry{Index: 2, Term: 3, Solo: true, Ops: []store.Op{{Kind: store.OpRetry, ID: s, Time: at(2)}}})
	mustApplyLog(t, second, store.Entry{Index: 2, Term: 5, Solo: true, Ops: keyedHandover(t, first, "first")})
	mustApplyLog(t, second, store.Entry{Index: 3, Term: 5, Solo: true, Ops: []store.Op{{Kind: store.OpDispatch, ID: s, Time: at(3)}}})
	mustApplyLog(t, first, store.Entry{Index: 3, Term: 4, Solo: true, Ops: []store.Op{
		{Kind: store.OpDispatch, ID: s, Time: at(4)}, {Kind: store.OpFail, ID: s, Time: at(5), Reason: "failed again on the first"}}})
	mustApplyLog(t, first, store.Entry{Index: 4, Term: 6, Solo: true, Ops: keyedHandover(t, second, "second")})
	wantState(t, first, s, store.StateFailed, "retried on the first node, taken by the second with that retry, then failed again on the first, after the second handed its work back: the handback retried it again")
}
