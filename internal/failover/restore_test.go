package failover

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
)

// TestPairRestoredThenPassiveDiskReplaced takes a backup of the active
// while it serves, restores it on both nodes and starts them as a new
// pair (README, Restore: "Pair or group"), then replaces the passive's
// disk (an empty data directory) while the new pair serves. README
// (Restore) says a node with an empty data directory receives its peers'
// state through raft; the emptied node must then hold the restored
// tickets too, not only the new deployment's raft log: the active is
// killed and every ticket, restored or new, is checked against the
// emptied node alone.
//
// It failed before restored stores bootstrapped raft from a snapshot of
// themselves: the restored pair bootstrapped a raft log at index 1 that
// held none of the restored tickets, and nothing compacted it (only
// PrepareJoin, before an AddVoter, did). The emptied node bootstrapped
// the same configuration at index 1, was still a voter in the active's
// configuration, so the active replayed its log from index 2 ("sending
// older logs next=2"), never a snapshot; the node logged "caught up with
// the active peer", took over, and answered a restored ticket "not
// ready: this ticket may be held by the peer ...": it did not hold it.
func TestPairRestoredThenPassiveDiskReplaced(t *testing.T) {
	r := restoredPairEmptied(t)
	takeOverAlone(t, r.pairRun, r.ld, r.backed, r.active, r.passive)
}

// restoredPair is a pair restored from a backup of its active whose
// passive's disk was then replaced (restoredPairEmptied).
type restoredPair struct {
	pairRun
	ld     *load // the restored pair's load, still running
	backed []ack // the acks the backup holds
}

// restoredPairEmptied loads a pair, stops the load and restores a backup
// of the active on both nodes (backupRestorePair), checks the restored
// pair answers every ack of the backup, starts a new load on it, then
// replaces the passive's disk: killed, emptied and started again, and
// waits for the pair to be whole with the same active.
func restoredPairEmptied(t *testing.T) restoredPair {
	t.Helper()
	p := loadedPair(t, pairLoad{workers: 3, clients: 4, timeout: clientTimeout, acks: 100, acksWithin: 60 * time.Second, wholeWithin: 60 * time.Second})
	p.ld.progress(t, 100, 30*time.Second, "acks before the backup", p.dg)
	// The submitters stop before the backup, so that it holds exactly the
	// acknowledged tickets (checkAcks wants no other); the workers go on
	// answering them while it is written.
	backed := p.ld.finish(t, p.dg)
	backupRestorePair(t, p, p.active)
	active, passive := waitPairHealthy(t, p.ctx, p.primary, p.backup, 60*time.Second)
	checkAcks(t, p.ctx, p.brokers, backed, p.dg)
	t.Logf("restored pair: %s active, %s passive; the %d acks of the backup answered", active.name, passive.name, len(backed))

	ld := startLoadKeys(t, p.ctx, p.brokers, 4, clientTimeout, "r")
	ld.progress(t, 100, 30*time.Second, "acks of the restored pair", p.dg)
	passive.kill()
	wipe(t, passive)
	passive.start(t)
	if a, _ := waitPairHealthy(t, p.ctx, p.primary, p.backup, 60*time.Second); a != active {
		t.Fatalf("%s became active across the passive's disk replacement, want %s%s", a.name, active.name, p.dg())
	}
	ld.progress(t, 100, 30*time.Second, "acks after the emptied passive rejoined", p.dg)
	p.active, p.passive = active, passive
	return restoredPair{pairRun: p, ld: ld, backed: backed}
}

// TestPairRestoredTicketsLostForGood is TestPairRestoredThenPassiveDiskReplaced
// carried on: the killed active, which still holds the restored tickets,
// is started again and the pair is whole. Every acknowledged ticket must
// be answered by the whole pair.
//
// It failed before the fix, of the same cause: the emptied node, active
// then, reformed raft alone, so the returning node was sent its snapshot
// ("store restored from snapshot") and its store, the last holding the
// restored tickets, was replaced by one without them: the pair answered a
// restored, acknowledged ticket "unknown ticket" (400, which clients take
// as final).
func TestPairRestoredTicketsLostForGood(t *testing.T) {
	r := restoredPairEmptied(t)
	p, ld, active, passive := r.pairRun, r.ld, r.active, r.passive
	active.kill()
	ld.progress(t, 50, 30*time.Second, fmt.Sprintf("acks after killing the active %s (%s must take over)", active.name, passive.name), p.dg)
	active.start(t)
	waitPairHealthy(t, p.ctx, p.primary, p.backup, 60*time.Second)
	ld.progress(t, 50, 30*time.Second, "acks once the pair is whole again", p.dg)
	checkAcks(t, p.ctx, p.brokers, append(r.backed, ld.finish(t, p.dg)...), p.dg)
	checkOneServerPerTerm(t, p.primary, p.backup)
}

// TestGroupRestoredThenFollowerDiskReplaced is
// TestPairRestoredThenPassiveDiskReplaced for a raft group (README,
// Restore: "Pair or group"): a backup of the leader, taken under load, is
// restored on all three nodes, started as a new group; then a follower's
// disk is replaced (killed, emptied, started again under its ID, a voter
// already: no join, so PrepareJoin never runs) while the leader is down
// too, so that the third node, elected with the emptied node's vote,
// must bring it up to date at once. Once the group is whole again, the
// emptied node's own store must hold every acknowledged ticket, restored
// or new: it is stopped and read directly.
func TestGroupRestoredThenFollowerDiskReplaced(t *testing.T) {
	nodes := group(t)
	brokers := endpoints(nodes...)
	dg := func() string { return diag(nodes...) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	echoWorkers(t, ctx, brokers, 3)
	leader := waitGroupHealthy(t, ctx, nodes, 30*time.Second)
	ld := startLoad(t, ctx, brokers, 4, clientTimeout)
	ld.progress(t, 100, 30*time.Second, "acks before the backup", dg)
	backed := ld.finish(t, dg)

	backupRestore(t, leader, nodes, dg)
	for _, n := range nodes {
		n.start(t)
	}
	leader = waitGroupHealthy(t, ctx, nodes, 60*time.Second)
	checkAcks(t, ctx, brokers, backed, dg)

	ld = startLoadKeys(t, ctx, brokers, 4, clientTimeout, "r")
	ld.progress(t, 100, 30*time.Second, "acks of the restored group", dg)
	var emptied *node
	for _, n := range nodes {
		if n != leader {
			emptied = n
			break
		}
	}
	emptied.kill()
	leader.kill()
	wipe(t, emptied)
	emptied.start(t)
	ld.progress(t, 50, 60*time.Second, fmt.Sprintf("acks with %s emptied and %s down", emptied.name, leader.name), dg)
	leader.start(t)
	waitGroupHealthy(t, ctx, nodes, 60*time.Second)
	ld.progress(t, 50, 30*time.Second, "acks once the group is whole again", dg)
	acks := append(backed, ld.finish(t, dg)...)
	checkAcks(t, ctx, brokers, acks, dg)

	// What the emptied node holds, read from its own data file.
	waitGroupHealthy(t, ctx, nodes, 60*time.Second)
	if err := emptied.proc().Stop(30 * time.Second); err != nil {
		t.Fatalf("stop %s: %v%s", emptied.name, err, dg())
	}
	st, err := store.Open(filepath.Join(emptied.dir, "titanic.db"), store.Options{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("open the store of %s: %v", emptied.name, err)
	}
	defer st.Close()
	missing := 0
	for _, a := range acks {
		id, err := store.ParseID(a.ticket)
		if err != nil {
			t.Fatalf("ack %+v: %v", a, err)
		}
		if _, err := st.Get(ctx, id); err != nil {
			if missing++; missing <= 5 {
				t.Errorf("%s, emptied and caught up, lacks acknowledged ticket %s (key %s, acked at %s): %v", emptied.name, a.ticket, a.key, a.at.Format("15:04:05.000"), err)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%s lacks %d of the %d acknowledged tickets (%d restored)%s", emptied.name, missing, len(acks), len(backed), dg())
	}
}
