package failover

import (
	"strings"
	"testing"
	"time"
)

// TestPairRaftOneWayCut cuts raft's link one way only: the active cannot
// reach the passive's raft port, the passive reaches the active's (a
// reviewer suspected a long outage there). With nothing submitted at the
// cut, the passive's log is as long as the active's, so it wins raft
// elections (the active's votes reach it) and, passive, hands leadership
// to the active, whose election cannot win (its vote requests do not
// reach the passive); the passive loses leadership on the active's
// higher term, which raft 1.7.3 reports as a transfer that succeeded, so
// the passive's give-up on failed transfers (30 s) never counts. That
// loop does not hold the pair down: between the passive's terms the
// active's raft knows no leader, and the active finds raft's link cut
// (raftCut) as for a cut both ways: the passive stands down and the
// active goes on alone. Measured: first acks about 2 s after the cut.
func TestPairRaftOneWayCut(t *testing.T) {
	p := loadedPair(t, pairLoad{workers: 3, wholeWithin: 30 * time.Second})
	primary, backup, brokers, ctx, dg, active, passive := p.primary, p.backup, p.brokers, p.ctx, p.dg, p.active, p.passive
	wins := func() int { return strings.Count(lifeLog(passive), "msg=\"election won\"") }
	won := wins()
	served := strings.Count(lifeLog(passive), "msg=\"serving:")
	t.Logf("cutting the raft port %d one way: %s cannot reach %s's, %s reaches %s's", raftPort, active.name, passive.name, passive.name, active.name)
	cutAt := time.Now()
	active.host.PartitionPortTo(t, raftPort, passive.host)
	// Idle for a while: with no submit in flight the passive's log is
	// not behind, and it may win elections.
	time.Sleep(time.Second)
	ld := startLoad(t, ctx, brokers, 4, 2*clientTimeout)
	ld.progress(t, 20, raftCutResume, "acks during the one-way raft cut (the active must go on alone)", dg)
	resumed := time.Since(cutAt)
	ld.progress(t, 50, 15*time.Second, "more acks during the one-way raft cut", dg)
	if n := strings.Count(lifeLog(passive), "msg=\"serving:"); n != served {
		t.Fatalf("the passive %s served during the one-way raft cut%s", passive.name, dg())
	}
	passiveWins := wins() - won
	active.host.Heal(t)
	if a2, _ := waitPairHealthy(t, ctx, primary, backup, 30*time.Second); a2 != active {
		t.Fatalf("after the one-way raft cut %s is active, want %s%s", a2.name, active.name, dg())
	}
	ld.progress(t, 50, 30*time.Second, "acks after the heal", dg)
	acks := ld.finish(t, dg)
	t.Logf("one-way raft cut: first acks %s after the cut; the passive won %d raft elections during it",
		resumed.Round(time.Millisecond), passiveWins)
	checkAcks(t, ctx, brokers, acks, dg)
	checkOneServerPerTerm(t, primary, backup)
}
