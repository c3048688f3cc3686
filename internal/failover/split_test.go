package failover

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPairSplitBrainMerged makes the split brain that Binary Star alone
// cannot prevent: the link between the two brokers is cut and the clients
// are split too (one set talks only to the primary, the other only to the
// backup), so the backup is voted active while the primary stays active,
// and both acknowledge tickets alone. When the link heals the backup
// yields, hands every change it made alone over to the primary, drops its
// fork and rejoins. Every ticket acknowledged on either side is then
// answered, with its own reply, and none was lost.
func TestPairSplitBrainMerged(t *testing.T) {
	p := loadedPair(t, pairLoad{workers: 3})
	primary, backup, brokers, ctx, dg := p.primary, p.backup, p.brokers, p.ctx, p.dg
	x := startLoadKeys(t, ctx, []string{primary.endpoint()}, 3, 2*clientTimeout, "x")
	x.progress(t, 50, 30*time.Second, "first acks of the primary's clients", dg)
	waitPairHealthy(t, ctx, primary, backup, 30*time.Second)

	t.Logf("cutting the pair link; the backup's clients can only reach the backup")
	primary.host.Partition(t, backup.host)
	y := startLoadKeys(t, ctx, []string{backup.endpoint()}, 3, 2*clientTimeout, "y")
	y.progress(t, 100, 30*time.Second, "acks of the backup voted active by its own clients (split brain)", dg)
	x.progress(t, 100, 30*time.Second, "acks of the primary alone during the split", dg)
	for _, n := range []*node{primary, backup} {
		if !strings.Contains(lifeLog(n), servingLine) {
			t.Fatalf("%s does not serve during the split%s", n.name, dg())
		}
	}
	yAcks := y.finish(t, dg) // its clients reach only the backup, which yields
	xDuring := x.count()

	primary.host.Heal(t)
	healAt := time.Now()
	waitForkHandedOver(t, backup, 30*time.Second, "the backup yields and hands its fork over", dg)
	active, _ := waitPairHealthy(t, ctx, primary, backup, 60*time.Second)
	merged := time.Since(healAt)
	if active != primary {
		t.Fatalf("after the split %s is active, want the primary%s", active.name, dg())
	}
	x.progress(t, 50, 30*time.Second, "acks after the merge", dg)
	xAcks := x.finish(t, dg)
	for _, n := range []*node{primary, backup} {
		if !n.running() {
			t.Fatalf("%s exited: %v%s", n.name, n.proc().Wait(), dg())
		}
	}
	for _, l := range strings.Split(lifeLog(backup), "\n") {
		if strings.Contains(l, "split brain") || strings.Contains(l, "fork handed over") || strings.Contains(l, "rejoining") {
			t.Logf("backup: %s", l)
		}
	}
	t.Logf("split brain: %d tickets acknowledged by the primary's clients (%d by the end of the split), %d by the backup's alone; merged and whole %s after the heal",
		len(xAcks), xDuring, len(yAcks), merged.Round(time.Millisecond))
	checkAcks(t, ctx, brokers, append(xAcks, yAcks...), dg)
}

// TestPairSplitThenActiveDies: the pair link is cut and the backup is
// voted active by clients that reach only it, while the primary serves its
// own clients alone too. Then the primary is SIGKILLed, still cut off. The
// backup serves on; the primary comes back with its own data, sees the
// backup active, and hands over what it acknowledged alone before it died.
func TestPairSplitThenActiveDies(t *testing.T) {
	p := loadedPair(t, pairLoad{workers: 3})
	primary, backup, brokers, ctx, dg := p.primary, p.backup, p.brokers, p.ctx, p.dg
	x := startLoadKeys(t, ctx, []string{primary.endpoint()}, 3, 2*clientTimeout, "x")
	x.progress(t, 50, 30*time.Second, "first acks of the primary's clients", dg)
	waitPairHealthy(t, ctx, primary, backup, 30*time.Second)

	primary.host.Partition(t, backup.host)
	y := startLoadKeys(t, ctx, []string{backup.endpoint()}, 3, 2*clientTimeout, "y")
	y.progress(t, 100, 30*time.Second, "acks of the backup voted active by its own clients", dg)
	x.progress(t, 100, 30*time.Second, "acks of the primary alone", dg)
	xAcks := x.finish(t, dg)
	primary.kill()
	primary.host.Heal(t)
	y.progress(t, 50, 30*time.Second, "acks of the backup after the primary died", dg)
	yAcks := y.finish(t, dg)
	primary.start(t)
	waitForkHandedOver(t, primary, 30*time.Second, "the restarted primary hands its fork over", dg)
	// Usually the backup stays active. TCP may still deliver state the
	// dead primary sent during the cut: the backup then yields to that
	// stale ACTIVE and the primary takes over (both passive); either way
	// nothing is lost.
	active, _ := waitPairHealthy(t, ctx, primary, backup, 60*time.Second)
	t.Logf("%s is active after the merge", active.name)
	z := startLoadKeys(t, ctx, brokers, 3, 2*clientTimeout, "z")
	z.progress(t, 50, 30*time.Second, "acks after the merge", dg)
	zAcks := z.finish(t, dg)
	t.Logf("%d tickets acknowledged by the primary (alone before it died), %d by the backup, %d after the merge", len(xAcks), len(yAcks), len(zAcks))
	checkAcks(t, ctx, brokers, append(append(xAcks, yAcks...), zAcks...), dg)
}

// keepLogs writes every life of each node's log into $TITANIC_ARTIFACTS
// when the test fails (the logs live in the test's temporary directory;
// pairWith and groupWith call it for every pair and group test).
func keepLogs(t *testing.T, nodes ...*node) {
	t.Cleanup(func() {
		if t.Failed() {
			saveLogs(t, nodes...)
		}
	})
}

// saveLogs writes every life of each node's log into $TITANIC_ARTIFACTS,
// if set.
func saveLogs(t *testing.T, nodes ...*node) {
	dir := os.Getenv("TITANIC_ARTIFACTS")
	if dir == "" {
		return
	}
	for _, n := range nodes {
		// A subtest's name holds a slash: flattened, its logs land in dir
		// itself rather than in a subdirectory nothing made.
		name := strings.ReplaceAll(t.Name(), "/", "_")
		path := filepath.Join(dir, fmt.Sprintf("%s-%s-%d.log", name, n.name, time.Now().UnixNano()))
		if err := os.WriteFile(path, []byte(n.logs()), 0o644); err != nil {
			t.Logf("keep logs: %v", err)
			continue
		}
		t.Logf("%s's log kept in %s", n.name, path)
	}
}
