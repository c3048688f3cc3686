package ha

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/store/replica"
)

// voteDrop is an in-memory transport whose RequestVote RPCs are lost
// while drop is set (pre-votes go through): a flaky raft link on which
// a node's pre-vote is granted and its vote request then lost, so that
// it is a term ahead of its peer.
type voteDrop struct {
	keptTransport
	drop *atomic.Bool
}

func (v voteDrop) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	if v.drop.Load() {
		return errors.New("vote request lost")
	}
	return v.keptTransport.RequestVote(id, target, args, resp)
}

// The stand-down's floor is the passive's raft term; the active reforms
// in the next term of its own fence after its own term. Nothing makes
// the second greater than the first: a passive whose pre-vote was granted
// and whose vote request was lost as the raft link failed is a term (or
// more) ahead of the active. When the active's fenced term is the very
// term the passive stood down at, the configuration that gives the
// passive its vote back (written in that term, once the link heals) does
// not count ("a later term" than the floor, pair.go sync): the passive
// follows the active as a voter, every commit needs it, yet it never
// counts as caught up while the active keeps its term (months, on a
// healthy pair). If the active dies meanwhile, the pair waits for it: no
// failover (as TestStaleStandDownDoesNotDisableFailover, by another way).
func TestStandDownFloorEqualToActivesFencedTerm(t *testing.T) {
	drop := new(atomic.Bool)
	// A leader lease that holds under load, so that a term lasts as in
	// production (with the rig's 100 ms, leadership moves now and then,
	// and a new term hides the bug), as TestStaleStandDownDoesNotDisableFailover.
	slow := func(_ *raft.InmemTransport, c *replica.Config) {
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Second, time.Second, time.Second
	}
	primary := func(tr *raft.InmemTransport, c *replica.Config) {
		slow(tr, c)
		c.Transport = voteDrop{keptTransport{tr}, drop}
	}
	r := newRejoinRigWith(t, cuttableLink{}, primary, slow, true)
	p, b, pairP, pairB := r.p, r.b, r.pairP, r.pairB
	waitFor(t, "the pair in sync, the backup serving", 20*time.Second, func() bool {
		return pairP.caughtUp.Load() && pairB.Active() && b.rep.IsLeader()
	})
	submitOn(t, b, BackupTag, 3)

	// The raft link fails: first only the backup's way (the primary hears
	// no leader; its pre-votes reach the backup, which lost its lease and
	// grants them; its vote requests are lost), then both ways. The admin
	// link is down meanwhile, so that the stand-down comes after.
	r.adminDown.Store(true)
	drop.Store(true)
	r.b.tr.Disconnect(r.p.addr)
	// The backup (fence slot 0) will reform in the first even term after
	// its own: cut both ways once the primary has reached it.
	var target uint64
	waitFor(t, "the primary a term or two ahead of the backup, at the backup's next fenced term", 40*time.Second, func() bool {
		tb := b.rep.Term()
		target = tb + 1
		if target%2 != 0 {
			target++
		}
		tp := p.rep.Term()
		if tp > target {
			t.Fatalf("the primary's term %d passed the target %d (backup at %d)", tp, target, tb)
		}
		if tp == target {
			r.link(false, true)
			return true
		}
		return false
	})
	if tp, tb := p.rep.Term(), b.rep.Term(); tp != target || tb >= target {
		t.Skipf("terms moved as the link was cut: primary %d, backup %d, target %d", tp, tb, target)
	}
	drop.Store(false)
	r.adminDown.Store(false)

	waitFor(t, "the primary stands down", 20*time.Second, func() bool { return pairP.standDownTerm.Load() > 0 })
	waitFor(t, "the backup serves alone", 20*time.Second, func() bool { return pairB.Active() && b.rep.Solo() && b.rep.IsLeader() })
	t.Logf("primary stood down at term %d; backup reformed alone in term %d", pairP.standDownTerm.Load(), b.rep.Term())
	submitOn(t, b, BackupTag, 3)

	r.link(true, true)
	waitFor(t, "the primary gets its vote back", 20*time.Second, func() bool { _, voter := r.primaryMember(); return voter })
	deadline := time.Now().Add(10 * time.Second)
	for !pairP.caughtUp.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the primary got its vote back in the backup's raft (term %d), following it as a voter (every commit needs it), it does not count as caught up: it stood down at term %d, and only a configuration of a later term counts; it would not take over if the backup died",
				b.rep.Term(), pairP.standDownTerm.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
