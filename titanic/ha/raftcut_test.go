package ha

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// Only raft's link is cut (the admin link, as Binary Star's, stays up):
// the active backup's raft of two elects nobody. It asks the passive
// primary to stand down and, once it has, goes on alone. The primary does
// not count as caught up from the stand-down on (it lacks what the
// backup takes alone); its joins meanwhile add it without a vote. Once
// raft's link heals, it follows the backup's raft, gets its vote and
// counts as caught up again, holding the backup's work.
func TestPairRaftOnlyCutStandDown(t *testing.T) {
	r := newRejoinRigWith(t, cuttableLink{}, nil, nil, true)
	p, b, pairP, pairB := r.p, r.b, r.pairP, r.pairB
	waitFor(t, "the pair in sync, the backup serving", 20*time.Second, func() bool { return pairP.caughtUp.Load() && pairB.Active() })
	// The shared work goes through whichever node leads the raft of two
	// at each try (submitCommon): its 100 ms timeouts move leadership in
	// a loaded machine's stalls.
	var before []store.ID
	for i := range 5 {
		id, _ := submitCommon(t, p, b, BackupTag, fmt.Sprintf("before-%d", i))
		before = append(before, id)
	}

	r.link(false, true)
	waitFor(t, "the primary stands down", 20*time.Second, func() bool { return pairP.standDownTerm.Load() > 0 })
	waitFor(t, "the backup serves alone", 20*time.Second, func() bool { return pairB.Active() && b.rep.Solo() && b.rep.IsLeader() })
	alone := submitOn(t, b, BackupTag, 20)
	// Cut off, the primary must not count as caught up (it would take
	// over without the backup's work), nor may its joins give it a vote.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if pairP.caughtUp.Load() {
			t.Fatal("the primary counts as caught up while cut off from the backup's raft, which went on alone")
		}
		if _, voter := r.primaryMember(); voter {
			t.Fatal("the backup gave the primary a vote while raft's link is cut: its commits would stop again")
		}
	}
	if !pairB.withholdsVote("primary") {
		t.Fatal("the backup does not withhold the primary's vote while it goes on alone")
	}
	alone = append(alone, submitOn(t, b, BackupTag, 3)...)

	r.link(true, true)
	waitFor(t, "the primary gets its vote back and counts as caught up", 30*time.Second, func() bool {
		_, voter := r.primaryMember()
		return voter && pairP.caughtUp.Load() && pairP.standDownTerm.Load() == 0
	})
	if pairB.withholdsVote("primary") {
		t.Fatal("the backup still withholds the vote of the primary, which votes again")
	}
	waitFor(t, "the primary holds the backup's work", 10*time.Second, func() bool {
		for _, id := range append(before, alone...) {
			if _, err := p.st.Get(context.Background(), id); err != nil {
				return false
			}
		}
		return true
	})
}

// StandDown refuses on an active node and on a raft leader; the admin
// service says so with a 500 (not a refusal a client retries), and
// answers 400 on a node that is not a pair's.
func TestStandDownRefusals(t *testing.T) {
	log := testLogger()
	r := newRejoinRigWith(t, cuttableLink{}, nil, nil, true)
	waitFor(t, "the pair in sync, the backup serving", 20*time.Second, func() bool { return r.pairP.caughtUp.Load() && r.pairB.Active() })
	if err := r.pairB.StandDown(); err != errStandDownActive {
		t.Errorf("StandDown of the active = %v, want %v", err, errStandDownActive)
	}
	if r.pairB.standDownTerm.Load() != 0 || !r.pairB.caughtUp.Load() {
		t.Error("the active's refused stand-down changed it")
	}
	a := NewAdmin(r.b.rep, nil, log)
	a.Pair = r.pairB
	if rep := a.serve(broker.Request{Service: tsp.SvcStandDown, Body: [][]byte{{}}}); len(rep) != 2 || string(rep[0]) != "500" {
		t.Errorf("standdown of the active answered %q, want 500", rep)
	}
	a.Pair = nil
	if rep := a.serve(broker.Request{Service: tsp.SvcStandDown, Body: [][]byte{{}}}); len(rep) != 2 || string(rep[0]) != "400" {
		t.Errorf("standdown of a node without a pair role answered %q, want 400", rep)
	}
}

// The stand-down is answered with the term the passive stood down at
// (the active reforms past it). A passive of a build that answers [200]
// alone still lets the active go on alone, in its own next fenced term
// as before.
func TestStandDownAnswer(t *testing.T) {
	for _, bare := range []bool{false, true} {
		t.Run(fmt.Sprintf("bare=%v", bare), func(t *testing.T) {
			r := newRejoinRigWith(t, cuttableLink{}, nil, nil, true)
			r.bareStandDown.Store(bare)
			waitFor(t, "the pair in sync, the backup serving", 20*time.Second, func() bool { return r.pairP.caughtUp.Load() && r.pairB.Active() })
			r.link(false, true)
			waitFor(t, "the primary stands down", 20*time.Second, func() bool { return r.pairP.standDownTerm.Load() > 0 })
			waitFor(t, "the backup serves alone", 20*time.Second, func() bool { return r.pairB.Active() && r.b.rep.Solo() && r.b.rep.IsLeader() })
			submitOn(t, r.b, BackupTag, 3)
			floor := r.pairP.standDownTerm.Load()
			if tb := r.b.rep.Term(); !bare && tb <= floor {
				t.Fatalf("the backup reformed in term %d, not past the term %d the primary stood down at", tb, floor)
			}
			a := NewAdmin(r.p.rep, nil, testLogger())
			a.Pair = r.pairP
			rep := a.serve(broker.Request{Service: tsp.SvcStandDown, Body: [][]byte{{}}})
			if len(rep) != 2 || string(rep[0]) != "200" || string(rep[1]) != strconv.FormatUint(r.pairP.standDownTerm.Load(), 10) {
				t.Fatalf("stand-down answered %q, want [200 | %d]", rep, r.pairP.standDownTerm.Load())
			}
		})
	}
}
