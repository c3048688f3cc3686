package ha

import (
	"testing"
	"time"
)

// A passive that stood down keeps that only in memory (standDownTerm).
// Restarted while raft's link is still cut, it asks to join as a voter
// (reconcile: nothing of its own, close behind, no stand-down known), and
// the active, which withholds its vote, gives it one all the same: the
// peer is a member without a vote of its raft, and a member without a
// vote that asks for one is taken to follow the active's raft
// (Admin.serve, "promotes"), which a node cut off from it does not. The
// active's raft then needs a voter it cannot reach: its commits stop, it
// loses leadership, and it serves again only after another raftCutWait,
// stand-down and reform (seconds with the defaults), for every restart of
// the passive while the cut lasts.
func TestRestartedStoodDownPassiveGetsNoVoteWhileCut(t *testing.T) {
	r := newRejoinRigWith(t, cuttableLink{}, nil, nil, true)
	waitFor(t, "the pair in sync, the backup serving", 20*time.Second, func() bool { return r.pairP.caughtUp.Load() && r.pairB.Active() })
	submitOn(t, r.b, BackupTag, 3)

	r.link(false, true) // raft's link alone
	waitFor(t, "the primary stands down", 20*time.Second, func() bool { return r.pairP.standDownTerm.Load() > 0 })
	waitFor(t, "the backup serves alone", 20*time.Second, func() bool { return r.pairB.Active() && r.b.rep.Solo() && r.b.rep.IsLeader() })
	waitFor(t, "the primary joins the backup's raft without a vote", 20*time.Second, func() bool { in, voter := r.primaryMember(); return in && !voter })
	submitOn(t, r.b, BackupTag, 3)

	r.restartPrimary()
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if _, voter := r.primaryMember(); voter {
			t.Fatal("the backup gave the restarted primary a vote while raft's link to it is still cut: the backup's commits stop until it finds the link cut again")
		}
		if !r.pairB.Active() {
			t.Fatal("the backup stopped serving after the primary restarted, raft's link to it still cut")
		}
	}
	// Once the link heals, the restarted primary follows the backup's
	// raft, asks for its vote and counts as caught up again.
	r.link(true, true)
	waitFor(t, "the restarted primary gets its vote back and counts as caught up", 30*time.Second, func() bool {
		_, voter := r.primaryMember()
		return voter && r.pairP.caughtUp.Load()
	})
}
