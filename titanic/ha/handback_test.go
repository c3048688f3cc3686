package ha

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/store"
)

// The pair's path to store's TestHandbackOfAdoptedTicketClosedOnItsCreator.
// After a split brain the backup, passive, yields: a first try of its
// handover reaches the primary, which adopts the backup's ticket x, and
// is cut short (made here by hand, as reconcile makes it: raft halted,
// one keyed batch applied on the primary). Binary Star then makes the
// backup active (the primary was lost a moment): it reforms the raft it
// halted and serves alone, and x's client closes x there (acknowledged).
// The primary comes back passive and yields in turn: it hands x back as
// an adopted ticket, and the backup makes it anew, pending, to run again.
func TestPairHandbackDoesNotBringBackTicketClosedOnItsCreator(t *testing.T) {
	dir := t.TempDir()
	log := testLogger()
	p, b, onB, _ := splitPair(t, dir, log, 1)
	x := onB[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Each side, alone, at this build's version: the handover is keyed.
	for _, n := range []*pairNode{p, b} {
		announceVersion(t, n, store.OpsRecordVersion)
	}

	// The backup's first try, cut short after its first batch.
	if err := b.rep.Halt(); err != nil {
		t.Fatalf("halt the backup: %v", err)
	}
	ours, err := b.rep.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := p.rep.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fork := ours.ForkPoint(theirs)
	name := store.HandoverName("backup", fork)
	err = b.rep.HandoverOps(ctx, fork, handoverBytes, func(ops []store.Op, keys []store.HandoverKey) error {
		res, err := p.rep.Apply(ctx, append([]store.Op{store.HandoverKeyedMark(name, keys)}, ops...))
		if err == nil && res[0].Err != nil {
			err = res[0].Err
		}
		return err
	})
	if err != nil {
		t.Fatalf("the first try: %v", err)
	}
	if _, err := p.st.Get(ctx, x); err != nil {
		t.Fatalf("the first try did not hand x over: %v", err)
	}

	// The backup serves alone again; x's client closes x.
	if !reformAgain(t, b) {
		t.FailNow()
	}
	if res, err := b.rep.Apply(ctx, []store.Op{{Kind: store.OpClose, ID: x, Time: time.Now()}}); err != nil || res[0].Err != nil || !res[0].Existed {
		t.Fatalf("close x on the backup: %v %v", err, res)
	}

	// The primary, passive now, yields to the active backup.
	pairP, pairB := linkedPairs(dir, log, p, b, binarystar.StatePassive, binarystar.StateActive, nil)
	runPairs(t, pairP, pairB)
	waitWhole(t, 45*time.Second, pairB, pairP, b, p)
	for _, n := range []*pairNode{b, p} {
		if tk, err := n.st.Get(ctx, x); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("ticket x, closed by its client on the backup (acknowledged) after the backup's cut-short try had handed it to the primary, is %s on the %s (%v) once the primary handed its work back: the handback's adoption made it anew, to run again",
				tk.State, n.id, err)
		}
	}
}
