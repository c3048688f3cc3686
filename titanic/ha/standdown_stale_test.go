package ha

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/titanicmq/titanic/store/replica"
)

// A stand-down that reaches the passive when raft's link is not cut (the
// active's request delivered late, after the request gave up at 2 s or
// Binary Star lost the peer, and the link healed meanwhile; or any
// process on a member's host asking titanic.cluster.standdown) was taken
// all the same (found by a review): StandDown checked only that the node
// is passive and not the raft leader, not that it cannot hear the active's
// raft. The node then counted as caught up again only by a configuration of a later term
// than the one it is in, which nothing writes while the active keeps
// leading the raft of two in its term (it re-adds its peer once per
// term, and did so already): the pair is whole, every commit needs the
// passive's vote, yet the passive refused to take over for as long as
// the term lasted. If the active died then, the pair waited for it. Now a
// node that follows a raft leader refuses to stand down.
func TestStaleStandDownDoesNotDisableFailover(t *testing.T) {
	// A leader lease that holds under the race detector, so that the
	// term lasts as in production (the 100 ms of the other rig tests
	// lose leadership now and then, and a new term hides the bug).
	slow := func(_ *raft.InmemTransport, c *replica.Config) {
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Second, time.Second, time.Second
	}
	r := newRejoinRigWith(t, cuttableLink{}, slow, slow, true)
	waitFor(t, "the pair in sync, the backup serving", 20*time.Second, func() bool {
		return r.pairP.caughtUp.Load() && r.pairB.Active() && r.b.rep.IsLeader()
	})
	submitOn(t, r.b, BackupTag, 3)
	term := r.b.rep.Term()

	err := r.pairP.StandDown() // raft's link whole: the primary follows the backup's raft
	t.Logf("StandDown on a passive that follows the active's raft: %v", err)

	deadline := time.Now().Add(8 * time.Second)
	for !r.pairP.caughtUp.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("8 s after a stand-down taken while raft's link was whole, the primary (following the backup's raft in term %d, now %d, stood down at %d) still does not count as caught up: it would not take over if the backup died",
				term, r.b.rep.Term(), r.pairP.standDownTerm.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
