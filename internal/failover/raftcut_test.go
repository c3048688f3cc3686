package failover

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// raftPort is the raft port of a pair's brokers (cmd/titanic's default
// for --pair: the peer's raft address is <peer>:7000).
const raftPort = 7000

// raftCutResume bounds how long after a cut of the raft link alone the
// pair acknowledges submits again: the active must see its raft commit
// nothing for a few raft timeouts (300ms here) while Binary Star hears
// the passive (peer timeout 400ms), have the passive give up its claim to
// take over, and reform raft alone. Generous for a loaded machine under
// -race; measured well under it (see the test's log line).
const raftCutResume = 8 * time.Second

// cutRaftOnly cuts, silently, only the raft port between the two nodes:
// Binary Star's state link and the client endpoints stay up.
func cutRaftOnly(t *testing.T, active, passive *node) {
	t.Helper()
	active.host.PartitionPort(t, raftPort, passive.host)
}

// TestPairRaftLinkCut cuts only the raft link between the two brokers
// (the raft port's packets are dropped; Binary Star's state link and the
// client endpoints stay up) while clients submit. Binary Star hears the
// passive alive the whole time, so it stays passive and there is no risk
// of two actives; the active's raft of two cannot commit. The pair must
// not stay down for writes: the active has the passive give up its claim
// to take over (it lacks what the active takes alone from then on) and
// goes on alone, as after a split, within a few raft timeouts. After the
// heal the passive rejoins and catches up; every acknowledged ticket is
// on the active and answered by a worker, and still there after a later
// failover to the other node.
func TestPairRaftLinkCut(t *testing.T) {
	p := loadedPair(t, pairLoad{workers: 3, clients: 4, timeout: 2 * clientTimeout, acks: 100, acksWithin: 30 * time.Second, wholeWithin: 30 * time.Second})
	primary, backup, brokers, ctx, ld, dg, active, passive := p.primary, p.backup, p.brokers, p.ctx, p.ld, p.dg, p.active, p.passive
	ld.progress(t, 50, 30*time.Second, "acks before the cut", dg)

	count := func(n *node, s string) int { return strings.Count(lifeLog(n), s) }
	passiveServed := count(passive, "msg=\"serving:")
	passiveVoted := count(passive, "ready as active")
	passiveCaughtUp := count(passive, caughtUpLine)

	const hold = 10 * time.Second
	t.Logf("cutting only the raft port %d between the active %s and the passive %s for %s", raftPort, active.name, passive.name, hold)
	cutAt := time.Now()
	cutRaftOnly(t, active, passive)

	// More acks than there are submitters: at most one each can have been
	// committed before the cut.
	ld.progress(t, 5*len(ld.stats), raftCutResume, "acks during the raft cut (the active must go on alone)", dg)
	resumed := time.Since(cutAt)
	ld.progress(t, 50, 15*time.Second, "more acks during the raft cut", dg)
	// For the rest of the cut: the passive never serves nor leads raft,
	// and the active keeps acknowledging (the passive's attempts to
	// rejoin, which its raft cannot follow, must not stall it again).
	for time.Since(cutAt) < hold {
		if count(passive, "ready as active") != passiveVoted {
			t.Fatalf("the passive %s was voted active during the raft cut%s", passive.name, dg())
		}
		if count(passive, "msg=\"serving:") != passiveServed {
			t.Fatalf("the passive %s served during the raft cut%s", passive.name, dg())
		}
		st, err := clusterStatus(ctx, passive.endpoint())
		if err == nil && st.State == "Leader" {
			t.Fatalf("the passive %s leads raft during the raft cut (term %d)%s", passive.name, st.Term, dg())
		}
		time.Sleep(200 * time.Millisecond) // sampling period, not synchronisation
	}
	active.host.Heal(t)
	healAt := time.Now()

	for _, n := range []*node{active, passive} {
		if !n.running() {
			t.Fatalf("%s exited during the raft cut: %v%s", n.name, n.proc().Wait(), dg())
		}
	}
	a2, p2 := waitPairHealthy(t, ctx, primary, backup, 30*time.Second)
	if a2 != active {
		t.Fatalf("after the raft cut %s is active, want %s (it stayed active)%s", a2.name, active.name, dg())
	}
	// The passive may take over again only once it holds what the active
	// took alone: it says so again (it had said it before the cut).
	eventually(t, 30*time.Second, "the passive is caught up again after the heal", func() error {
		if n := count(p2, caughtUpLine); n <= passiveCaughtUp {
			return fmt.Errorf("%s logged %q %d times, as before the cut", p2.name, caughtUpLine, n)
		}
		return nil
	}, dg)
	whole := time.Since(healAt)
	ld.progress(t, 50, 30*time.Second, "acks after the heal", dg)
	acks := ld.finish(t, dg)
	if n := count(passive, "msg=\"serving:"); n != passiveServed {
		t.Errorf("the passive %s served during the raft cut%s", passive.name, dg())
	}
	// The outage from the cut: the longest wait between acks over all
	// those of the cut (a stall after the active went on alone too).
	var inCut int
	for _, a := range acks {
		if a.at.After(cutAt) && a.at.Before(healAt) {
			inCut++
		}
	}
	gap := outage(acks, cutAt, inCut)
	t.Logf("raft link cut: %d acks during the %s cut, the first %s after it; longest wait between acks %s; whole again %s after the heal",
		inCut, hold, resumed.Round(time.Millisecond), gap.Round(time.Millisecond), whole.Round(time.Millisecond))
	if gap > raftCutResume {
		t.Errorf("submits went unacknowledged for %s during the raft cut, want under %s%s", gap, raftCutResume, dg())
	}
	checkAcks(t, ctx, brokers, acks, dg)

	// A later failover: the other node holds every acknowledged ticket.
	t.Logf("killing the active %s: %s takes over", active.name, p2.name)
	active.kill()
	after := startLoadKeys(t, ctx, brokers, 2, clientTimeout, "f")
	after.progress(t, 20, 30*time.Second, fmt.Sprintf("acks of %s after the active %s was killed", p2.name, active.name), dg)
	more := after.finish(t, dg)
	checkAcks(t, ctx, brokers, append(acks, more...), dg)
	checkOneServerPerTerm(t, primary, backup)
}

// TestPairRaftCutThenActiveDies: only the raft link is cut, the active
// goes on alone and acknowledges tickets the passive never receives, then
// the active is SIGKILLed with the raft link still cut. Binary Star would
// let clients vote the passive active (its peer is silent); it must not
// take over, or those tickets would be lost: the pair waits for the dead
// node, as for a stale one (TestPairStaleNodeDoesNotTakeOver). When it
// comes back and the link heals, the pair is whole with everything.
func TestPairRaftCutThenActiveDies(t *testing.T) {
	p := loadedPair(t, pairLoad{workers: 3, clients: 4, timeout: 2 * clientTimeout, acks: 100, acksWithin: 30 * time.Second, wholeWithin: 30 * time.Second})
	primary, backup, brokers, ctx, ld, dg, active, passive := p.primary, p.backup, p.brokers, p.ctx, p.ld, p.dg, p.active, p.passive
	ld.progress(t, 50, 30*time.Second, "acks before the cut", dg)

	cutRaftOnly(t, active, passive)
	ld.progress(t, 5*len(ld.stats), raftCutResume, "acks during the raft cut (the active must go on alone)", dg)
	ld.progress(t, 50, 15*time.Second, "more acks of the active alone", dg)
	served := strings.Count(lifeLog(passive), "msg=\"serving:")
	active.kill()
	killedAt := time.Now()
	t.Logf("killed the active %s, the raft link still cut; %s lacks what it acknowledged alone", active.name, passive.name)

	n, refused := ld.count(), ld.clientStats().Refusals
	time.Sleep(3 * time.Second) // an observation window: nothing may happen
	if got := ld.count(); got > n+len(ld.stats) {
		t.Fatalf("%d submits acknowledged with only %s up, which lacks the active's work%s", got-n, passive.name, dg())
	}
	if strings.Count(lifeLog(passive), "msg=\"serving:") != served {
		t.Fatalf("%s serves without what the dead active acknowledged alone%s", passive.name, dg())
	}
	if got := ld.clientStats().Refusals; got == refused {
		t.Fatalf("no client was refused by %s in the window: this proves nothing%s", passive.name, dg())
	}

	active.host.Heal(t)
	active.start(t)
	waitPairHealthy(t, ctx, primary, backup, 60*time.Second)
	ld.progress(t, 50, 30*time.Second, "acks once the pair is whole again", dg)
	acks := ld.finish(t, dg)
	t.Logf("outage with %s dead after a raft cut: %s (until it returned)", active.name, outage(acks, killedAt, 20).Round(time.Millisecond))
	checkAcks(t, ctx, brokers, acks, dg)
	checkOneServerPerTerm(t, primary, backup)
}
