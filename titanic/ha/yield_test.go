package ha

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/store/replica"
)

// TestPassiveYieldsOnlyToActiveThatCanTake builds the state of the wedge
// the pair simulation found (seed 80084, "0 nodes serve") directly: after
// a split brain, the active node is behind and leaderless. It went on
// alone and took work in, began to add its peer back while the link was
// cut (its raft of two then needs the peer's vote), and restarted, so it
// is not caught up: it may neither lead nor go on alone. The passive
// leads a raft of its own and holds work the active lacks. Had the
// passive yielded (halted its raft to hand its work over), nobody could
// take the handover and nobody would serve again. The passive must not
// yield to such an active: it brings the active into its raft instead,
// where the active's own work shows as a fork that it hands over, and
// the pair must end up serving with both sides' work.
//
// With halted, the passive halted its raft for a handover before the
// test starts the pairs (as when it halted while the active could still
// take it, and the active restarted since): it must take its raft up
// again rather than wait for a handover nobody takes.
//
// With laterTerm, the active's fork is of a later term than the passive's
// (its elections took more rounds: a loaded machine made it so, seed-free):
// added to the passive's raft in the passive's term, the active's log was
// the more up to date, the passive's vote made the active the leader of
// that raft with its fork, and the passive, whose log the join's snapshot
// had compacted, refused every entry of the active's that it no longer
// held: nothing committed, and neither node served again.
func TestPassiveYieldsOnlyToActiveThatCanTake(t *testing.T) {
	for _, c := range []struct{ halted, laterTerm bool }{{false, false}, {true, false}, {false, true}} {
		halted := c.halted
		t.Run(fmt.Sprintf("halted=%t/laterTerm=%t", c.halted, c.laterTerm), func(t *testing.T) {
			dir := t.TempDir()
			log := testLogger()
			p, b, l := openMemPairLed(t, dir, log)

			// The split: each side goes on alone and takes work in.
			l.down()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			above := uint64(0)
			if c.laterTerm {
				// Past the term the backup's reform takes (the next
				// of its own after the pair's first).
				above = b.rep.Status().Term + 2
			}
			if err := p.rep.ReformAbove(ctx, above); err != nil {
				t.Fatalf("primary reform: %v", err)
			}
			onP := submitOn(t, p, PrimaryTag, 3)
			addWhileCut(t, ctx, p, b, "the wedge's state")
			if err := b.rep.Reform(ctx); err != nil {
				t.Fatalf("backup reform: %v", err)
			}
			onB := submitOn(t, b, BackupTag, 3)
			if c.laterTerm && p.rep.Status().Term <= b.rep.Status().Term {
				t.Fatalf("the primary's term %d is not past the backup's %d: the test did not make its state", p.rep.Status().Term, b.rep.Status().Term)
			}

			// The primary restarts: it has not caught up since.
			if err := p.rep.Close(); err != nil {
				t.Fatalf("close the primary's replica: %v", err)
			}
			if err := p.st.Close(); err != nil {
				t.Fatalf("close the primary's store: %v", err)
			}
			peers := []replica.Peer{{ID: "primary", Addr: string(l.addrP)}, {ID: "backup", Addr: string(l.addrB)}}
			p = openPairNode(t, dir, "primary", 1, l.addrP, l.trP, peers, log)
			if halted {
				if err := b.rep.Halt(); err != nil {
					t.Fatalf("halt the backup: %v", err)
				}
			}
			l.up()

			pairP, pairB, adminP, adminB := linkedPairsAdmins(dir, log, p, b, binarystar.StateActive, binarystar.StatePassive, nil)
			// As in a broker (titanic/node): each node's status says
			// whether it is caught up.
			adminP.Pair, adminB.Pair = pairP, pairB
			if pairP.memberSinceStart().member || p.rep.IsLeader() {
				t.Fatal("the restarted primary counts as caught up: the test did not make the wedge's state")
			}
			runPairs(t, pairP, pairB)

			waitWhole(t, 45*time.Second, pairP, pairB, p, b, onP, onB)
		})
	}
}
