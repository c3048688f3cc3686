package ha

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/store"
)

// TestPairSplitSoloTermReachedAgainByTwo is the run of
// TestPairPausedActiveAnswersQueuedSubmits that its check took for a
// split brain ("nodes [pa pb] all served in raft term 4"). Both nodes go
// on alone, each in a term of its own fence (the backup even, the
// primary odd: 4 and 3 there), and take tickets in. Healed, the backup
// yields: it hands its fork over and moves its raft state aside, and the
// primary's raft, the backup in it as a new member, reaches the backup's
// solo term by elections of two (unfenced): the same term number in two
// rafts, one of them gone. Nothing may be confused by it: every ticket
// acknowledged on either side, and one taken in after, is on both nodes
// with the same content, and the two stores hold one history.
//
// The fence is what this rests on: the fork point (store.History.
// ForkPoint) and raft's log matching compare terms at indexes, not
// contents. Opened with FenceStride 0, both nodes reform into one term
// (3) and take 3 tickets each at the same indexes; healed, the fork point
// is both applied indexes (9), nothing is handed over, the backup joins
// and the primary's log matches its own: each store keeps only its own 3
// tickets, under one history (tried by hand, not kept: no configuration
// opens a pair unfenced, cmd/titanic and internal/sim set 2 and the
// role's slot).
func TestPairSplitSoloTermReachedAgainByTwo(t *testing.T) {
	dir := t.TempDir()
	log := testLogger()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// No work before the split (a submit to a raft of two, with these
	// timeouts under -race, may see leadership move and fail): the
	// shared history is the raft's own entries.
	p, b, l := openMemPairLed(t, dir, log)
	history := func(n *pairNode) store.History {
		t.Helper()
		h, err := n.rep.History(ctx)
		if err != nil {
			t.Fatalf("%s's history: %v", n.id, err)
		}
		return h
	}

	// The split: the backup goes on alone first (the primary stopped),
	// the primary after it. The backup's solo term must lie above the
	// primary's, as in the run, so that the merged raft reaches it: the
	// backup reforms again until it does.
	l.down()
	if err := b.rep.Reform(ctx); err != nil {
		t.Fatalf("backup reform: %v", err)
	}
	if err := p.rep.Reform(ctx); err != nil {
		t.Fatalf("primary reform: %v", err)
	}
	for b.rep.Status().Term < p.rep.Status().Term {
		if !reformAgain(t, b) {
			t.FailNow()
		}
	}
	onB := submitOn(t, b, BackupTag, 3)
	onP := submitOn(t, p, PrimaryTag, 3)
	tb, tp := b.rep.Status().Term, p.rep.Status().Term
	if tb%2 != 0 || tp%2 != 1 {
		t.Fatalf("solo terms: backup %d, primary %d; want even and odd (fenced apart)", tb, tp)
	}
	t.Logf("alone: backup in term %d (history %v), primary in term %d (history %v)", tb, history(b).Epochs, tp, history(p).Epochs)

	// Healed: the primary stays active, the backup yields.
	l.up()
	pairP, pairB := linkedPairs(dir, log, p, b, binarystar.StateActive, binarystar.StatePassive, nil)
	runPairs(t, pairP, pairB)
	waitWhole(t, 45*time.Second, pairP, pairB, p, b, onB, onP)

	// Elections of two until the primary's raft is past the backup's
	// old solo term: the primary stands aside, the backup is elected,
	// the pair hands leadership back to the active primary.
	for p.rep.Status().Term <= tb {
		if p.rep.IsLeader() {
			if err := p.rep.StepDown(); err != nil {
				t.Fatalf("primary step down: %v", err)
			}
		}
		was := p.rep.Status().Term
		waitFor(t, "a later term led by the primary", 30*time.Second, func() bool {
			return p.rep.IsLeader() && p.rep.Status().Term > was
		})
	}
	waitWhole(t, 45*time.Second, pairP, pairB, p, b)
	after := submitOn(t, p, PrimaryTag, 3)
	waitWhole(t, 45*time.Second, pairP, pairB, p, b, onB, onP, after)

	for _, set := range [][]store.ID{onB, onP, after} {
		for _, id := range set {
			tkP, errP := p.st.Get(ctx, id)
			tkB, errB := b.st.Get(ctx, id)
			if errP != nil || errB != nil {
				t.Fatalf("ticket %s: primary %v, backup %v", id, errP, errB)
			}
			if tkP.State != tkB.State || len(tkP.Body) != len(tkB.Body) || !bytes.Equal(bytes.Join(tkP.Body, nil), bytes.Join(tkB.Body, nil)) {
				t.Errorf("ticket %s differs: primary %s %q, backup %s %q", id, tkP.State, tkP.Body, tkB.State, tkB.Body)
			}
		}
	}
	hp, hb := history(p), history(b)
	if fork := hb.ForkPoint(hp); fork < hb.Applied {
		t.Errorf("the backup's history parts from the primary's at %d (applied %d): backup %v, primary %v", fork, hb.Applied, hb.Epochs, hp.Epochs)
	}
	t.Logf("merged: primary in term %d, history %v; backup history %v", p.rep.Status().Term, hp.Epochs, hb.Epochs)
}
