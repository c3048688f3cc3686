package ha

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/store"
)

// A close of a ticket the node adopted in a handover is not handed back
// when that node yields later: store.ForkOps counts an OpAdopt as a ticket
// "created after the fork", and a ticket created and closed after the fork
// carries nothing. But an adopted ticket came from the peer, which may
// still hold it.
//
// The sequence: a split brain; the backup took ticket X alone. On the
// heal the backup yields and hands X over (OpAdopt); the primary adopts
// it, X runs there, and the primary's client reads the reply and closes
// X (acknowledged). The rest of the backup's handover does not complete
// (its answer lost or a later batch refused, then the primary dies; or
// the backup is killed between batches and the primary dies before it
// redoes the handover): the backup, still holding its fork with X, is
// voted active and goes on alone. When the primary returns it yields and
// hands its fork over: the adoption and the close of X cancel out, and X
// is handed nothing. X stays on the backup, pending: it runs again, its
// idempotency key stays held, and the client's close is undone.
//
// Built in process: the primary's side of the partial handover is the
// OpAdopt its Merge would apply, then its client's OpClose.
func TestCloseOfAdoptedTicketHandedBack(t *testing.T) {
	dir := t.TempDir()
	log := testLogger()
	p, b, onB, addrB := splitPair(t, dir, log, 1)
	x := onB[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The backup's first handover batch reaches the primary: it adopts X.
	tk, err := b.st.Get(ctx, x)
	if err != nil {
		t.Fatal(err)
	}
	adopt := store.Op{Kind: store.OpAdopt, ID: x, Time: tk.Created, Service: tk.Service, Body: [][]byte{[]byte("backup-0")}}
	if res, err := p.rep.Apply(ctx, []store.Op{adopt}); err != nil || res[0].Err != nil {
		t.Fatalf("adopt on the primary: %v %v", err, res)
	}
	// X runs on the primary; its client reads the reply and closes it.
	if res, err := p.rep.Apply(ctx, []store.Op{{Kind: store.OpClose, ID: x, Time: time.Now()}}); err != nil || res[0].Err != nil || !res[0].Existed {
		t.Fatalf("close on the primary: %v %v", err, res)
	}
	onP := submitOn(t, p, PrimaryTag, 1) // and the primary takes its own ticket in

	// The primary died; the backup, never resynced, serves its fork; the
	// primary returns and yields.
	pairP, pairB := linkedPairs(dir, log, p, b, binarystar.StatePassive, binarystar.StateActive, nil)
	runPairs(t, pairP, pairB)
	waitFor(t, "the primary hands its fork over and rejoins the backup's raft", 40*time.Second, func() bool {
		_, member := b.rep.MemberAt("primary", "")
		_, err := b.st.Get(context.Background(), onP[0])
		return member && pairB.Active() && err == nil
	})
	_ = addrB
	got, err := b.st.Get(context.Background(), x)
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ticket %s, adopted by the primary and closed there by its client (acknowledged), is back after the primary yielded: on the active backup it is %v (err %v); the primary's handover carried no close for it (ForkOps counts the adoption as a ticket created after the fork)",
			x, got.State, err)
	}
}

// The same hole for a retry: a ticket adopted failed (the yielding node
// hands over its adoption and its failure), which the adopter's client
// retries (acknowledged: pending again, to run), is handed back, when the
// adopter yields later, as an OpAdopt alone (the ticket "created after
// the fork", so no OpRetry), which the peer, still holding the ticket
// failed, takes as a duplicate: the ticket stays failed there and never
// runs; the client's retry is lost.
func TestRetryOfAdoptedTicketHandedBack(t *testing.T) {
	dir := t.TempDir()
	log := testLogger()
	p, b, onB, _ := splitPair(t, dir, log, 1)
	x := onB[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Both sides run this build: retries are taken.
	for _, n := range []*pairNode{p, b} {
		announceVersion(t, n, store.OpsRecordVersion)
	}
	// X fails for good on the backup, alone.
	if res, err := b.rep.Apply(ctx, []store.Op{{Kind: store.OpFail, ID: x, Time: time.Now(), Reason: "attempt 1 of 1 failed on the backup"}}); err != nil || res[0].Err != nil {
		t.Fatalf("fail on the backup: %v %v", err, res)
	}
	tk, err := b.st.Get(ctx, x)
	if err != nil {
		t.Fatal(err)
	}
	// The backup's first handover batch: X's adoption and its failure.
	adopt := store.Op{Kind: store.OpAdopt, ID: x, Time: tk.Created, Service: tk.Service, Body: [][]byte{[]byte("backup-0")}}
	fail := store.Op{Kind: store.OpFail, ID: x, Time: tk.Updated, Reason: tk.Reason}
	if res, err := p.rep.Apply(ctx, []store.Op{adopt, fail}); err != nil || res[0].Err != nil || res[1].Err != nil {
		t.Fatalf("adopt on the primary: %v %v", err, res)
	}
	// The primary's client retries it: acknowledged.
	if res, err := p.rep.Apply(ctx, []store.Op{{Kind: store.OpRetry, ID: x, Time: time.Now()}}); err != nil || res[0].Err != nil {
		t.Fatalf("retry on the primary: %v %v", err, res)
	}
	onP := submitOn(t, p, PrimaryTag, 1)

	pairP, pairB := linkedPairs(dir, log, p, b, binarystar.StatePassive, binarystar.StateActive, nil)
	runPairs(t, pairP, pairB)
	waitFor(t, "the primary hands its fork over and rejoins the backup's raft", 40*time.Second, func() bool {
		_, member := b.rep.MemberAt("primary", "")
		_, err := b.st.Get(context.Background(), onP[0])
		return member && pairB.Active() && err == nil
	})
	got, err := b.st.Get(context.Background(), x)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != store.StatePending {
		t.Fatalf("ticket %s, adopted failed by the primary and retried there by its client (acknowledged), is %s (%q) on the active backup after the primary yielded: the primary handed back its adoption alone, no retry",
			x, got.State, got.Reason)
	}
}
