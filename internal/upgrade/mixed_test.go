package upgrade

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/netns"
)

// What a pair node logs once it may take over, and when it serves (both
// versions log these).
const (
	caughtUpLine = "caught up with the active peer"
	servingLine  = "serving: binary star active and raft leader"
)

// single starts one broker host with bin (which: "old" or "new").
func single(t *testing.T, which, bin string) (*node, *netns.Net) {
	t.Helper()
	net := netns.New(t)
	n := newNode(net, "s1", t)
	keepLogs(t, n)
	net.Attach()
	n.args = fastFlags
	n.mustStart(t, which, bin, n)
	return n, net
}

// TestMixedSingleUpgrade: a single broker on the previous release, under
// load, stopped and started with the current binary on the same data
// directory; every acknowledged ticket is answered, whichever binary
// acknowledged it.
func TestMixedSingleUpgrade(t *testing.T) {
	_, oldBin, newBin := binaries(t)
	n, _ := single(t, "old", oldBin)
	brokers := endpoints(n)
	dg := func() string { return diag(n) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	echoWorkers(t, ctx, brokers, 2)
	ld := startLoad(t, ctx, brokers, 3)
	ld.progress(t, 100, 30*time.Second, "acks of the old broker", dg)
	n.stop(t)
	n.mustStart(t, "new", newBin, n)
	ld.progress(t, 100, 30*time.Second, "acks of the upgraded broker", dg)
	acks := ld.finish(t, dg)
	checkAcks(t, ctx, brokers, acks, dg)
	t.Logf("%d acks across the upgrade; warnings:\n%s", len(acks), warnings(n))
}

// TestMixedDowngrade: a single broker on the current binary, under load,
// stopped and started with the previous release on the same data. Issue
// 14 wants either a clear refusal or a working node; this records which.
func TestMixedDowngrade(t *testing.T) {
	_, oldBin, newBin := binaries(t)
	n, _ := single(t, "new", newBin)
	brokers := endpoints(n)
	dg := func() string { return diag(n) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	echoWorkers(t, ctx, brokers, 2)
	ld := startLoad(t, ctx, brokers, 3)
	ld.progress(t, 100, 30*time.Second, "acks of the new broker", dg)
	n.stop(t)
	if err := n.start(t, "old", oldBin); err != nil {
		t.Fatalf("rolled back to the old binary on the new one's data, the broker does not start: %v%s", err, dg())
	}
	ld.progress(t, 100, 30*time.Second, "acks of the rolled-back broker", dg)
	acks := ld.finish(t, dg)
	checkAcks(t, ctx, brokers, acks, dg)
	t.Logf("%d acks across the downgrade; warnings:\n%s", len(acks), warnings(n))
}

// --- pair -------------------------------------------------------------------

func pairNodes(t *testing.T) (primary, backup *node) {
	t.Helper()
	net := netns.New(t)
	primary, backup = newNode(net, "pa", t), newNode(net, "pb", t)
	keepLogs(t, primary, backup)
	net.Attach()
	// A peer timeout of 2 heartbeats: at 200 ms, a loaded machine (load
	// average 13 on 2 cores) let both nodes find the other dead, and the
	// first release aborts on dual actives.
	args := func(role string, peer *node) []string {
		return append([]string{"--pair", role, "--peer", peer.host.Addr, "--pair-heartbeat", "400ms"}, fastFlags...)
	}
	primary.args = args("primary", backup)
	backup.args = args("backup", primary)
	return primary, backup
}

// waitPairHealthy waits until one node leads raft with both as voters and
// serves, the other follows it, has applied what the leader had
// committed, and says it may take over.
func waitPairHealthy(t *testing.T, ctx context.Context, primary, backup *node, within time.Duration, what string) (active, passive *node) {
	t.Helper()
	var target uint64
	eventually(t, within, what+": pair whole", func() error {
		sp, err := clusterStatus(t, ctx, primary.endpoint())
		if err != nil {
			return fmt.Errorf("primary status: %w", err)
		}
		sb, err := clusterStatus(t, ctx, backup.endpoint())
		if err != nil {
			return fmt.Errorf("backup status: %w", err)
		}
		var ls, fs status
		switch {
		case sp.State == "Leader" && sb.State == "Follower":
			ls, fs, active, passive = sp, sb, primary, backup
		case sb.State == "Leader" && sp.State == "Follower":
			ls, fs, active, passive = sb, sp, backup, primary
		default:
			return fmt.Errorf("raft states primary=%s backup=%s", sp.State, sb.State)
		}
		if v := ls.voters(); len(v) != 2 {
			return fmt.Errorf("leader %s has voters %v, want both", ls.ID, v)
		}
		if fs.Leader != ls.ID {
			return fmt.Errorf("follower %s follows %q, not %s", fs.ID, fs.Leader, ls.ID)
		}
		if target == 0 {
			target = ls.Commit
		}
		if fs.Applied < target {
			return fmt.Errorf("follower %s applied %d of %d", fs.ID, fs.Applied, target)
		}
		if !strings.Contains(passive.lifeLog(), caughtUpLine) {
			return fmt.Errorf("%s has not logged %q", passive.name, caughtUpLine)
		}
		if l := active.lifeLog(); !strings.Contains(l, servingLine) || strings.LastIndex(l, servingLine) < strings.LastIndex(l, "not serving") {
			return fmt.Errorf("%s leads raft but does not serve", active.name)
		}
		return nil
	}, func() string { return diag(primary, backup) })
	return active, passive
}

// TestMixedPair runs a Binary Star pair with one node on the previous
// release and one on the current binary (both ways round) under load:
// the active is SIGKILLed and restarted on its own binary (so the roles
// swap and each version serves the other), then the old node is stopped
// and started with the current binary on the same data. Every
// acknowledged ticket is answered; no key made two tickets.
func TestMixedPair(t *testing.T) {
	for _, sc := range []struct{ name, primary, backup string }{
		{"old-primary", "old", "new"},
		{"new-primary", "new", "old"},
	} {
		t.Run(sc.name, func(t *testing.T) {
			mixedPair(t, sc.primary, sc.backup)
		})
	}
}

func mixedPair(t *testing.T, primaryBin, backupBin string) {
	_, oldBin, newBin := binaries(t)
	bins := map[string]string{"old": oldBin, "new": newBin}
	primary, backup := pairNodes(t)
	all := []*node{primary, backup}
	for _, n := range all {
		n.args = append(n.args, gateNoWorker...)
	}
	brokers := endpoints(all...)
	dg := func() string { return diag(all...) }
	primary.mustStart(t, primaryBin, bins[primaryBin], all...)
	backup.mustStart(t, backupBin, bins[backupBin], all...)
	defer func() { t.Logf("WARN/ERROR lines of the nodes:\n%s", warnings(all...)) }()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	echoWorkers(t, ctx, brokers, 3)
	ld := startLoad(t, ctx, brokers, 3)
	ld.progress(t, 50, 30*time.Second, "first acks of the mixed pair", dg)
	// The gated feature: retry of a failed ticket, refused while mixed.
	vc := versionClient(t, brokers)
	gated := failedTicket(t, ctx, vc, brokers, dg)
	mustRefuseRetry(t, ctx, vc, gated, "on the mixed pair under load", dg)

	// 1. A failover while mixed: SIGKILL the active.
	active, passive := waitPairHealthy(t, ctx, primary, backup, 30*time.Second, "mixed pair")
	t.Logf("mixed: %s (%s) active, %s (%s) passive; SIGKILL the active", active.name, active.which(), passive.name, passive.which())
	ld.progress(t, 30, 30*time.Second, "acks before the kill", dg)
	active.kill()
	ld.progress(t, 30, 30*time.Second, fmt.Sprintf("acks after SIGKILL of the active %s (%s): the passive %s (%s) must take over", active.name, active.which(), passive.name, passive.which()), dg)
	active.mustStart(t, active.which(), bins[active.which()], all...)
	active, passive = waitPairHealthy(t, ctx, primary, backup, 30*time.Second, "mixed pair after the failover")
	t.Logf("after the failover: %s (%s) active, %s (%s) passive", active.name, active.which(), passive.name, passive.which())
	ld.progress(t, 30, 30*time.Second, "acks after the failover", dg)
	mustRefuseRetry(t, ctx, vc, gated, "on the mixed pair after the failover", dg)

	// 2. Upgrade the old node: stop it cleanly, start the current binary
	// on its data.
	old := primary
	if backup.which() == "old" {
		old = backup
	}
	t.Logf("upgrade %s (%s, %s)", old.name, old.which(), map[bool]string{true: "active", false: "passive"}[old == active])
	old.stop(t)
	ld.progress(t, 20, 30*time.Second, fmt.Sprintf("acks with %s stopped for its upgrade", old.name), dg)
	old.mustStart(t, "new", newBin, all...)
	waitPairHealthy(t, ctx, primary, backup, 30*time.Second, "upgraded pair")
	ld.progress(t, 30, 30*time.Second, "acks of the upgraded pair", dg)
	retryWorks(t, ctx, vc, brokers, gated, dg)
	ld.progress(t, 10, 30*time.Second, "acks after the retry", dg)

	acks := ld.finish(t, dg)
	checkAcks(t, ctx, brokers, acks, dg)
	t.Logf("%d acks across a mixed failover and an upgrade", len(acks))
}

// --- group ------------------------------------------------------------------

func groupNodes(t *testing.T) []*node {
	t.Helper()
	net := netns.New(t)
	nodes := []*node{newNode(net, "g1", t), newNode(net, "g2", t), newNode(net, "g3", t)}
	keepLogs(t, nodes...)
	net.Attach()
	var peers []string
	for _, n := range nodes {
		peers = append(peers, n.name+"="+n.host.Addr+":7000")
	}
	for _, n := range nodes {
		n.args = append([]string{"--raft", "--node-id", n.name, "--raft-bind", n.host.Addr + ":7000",
			"--peers", strings.Join(peers, ",")}, fastFlags...)
	}
	return nodes
}

// waitGroupHealthy waits until one node leads all three voters and the
// others follow it and have applied what it had committed.
func waitGroupHealthy(t *testing.T, ctx context.Context, nodes []*node, within time.Duration, what string) *node {
	t.Helper()
	var (
		leader *node
		target uint64
	)
	eventually(t, within, what+": group whole", func() error {
		sts := make([]status, len(nodes))
		for i, n := range nodes {
			st, err := clusterStatus(t, ctx, n.endpoint())
			if err != nil {
				return fmt.Errorf("%s: %w", n.name, err)
			}
			sts[i] = st
		}
		var l *node
		var ls status
		for i, st := range sts {
			if st.State == "Leader" {
				if l != nil {
					return fmt.Errorf("%s and %s both report Leader", l.name, nodes[i].name)
				}
				l, ls = nodes[i], st
			}
		}
		if l == nil {
			return fmt.Errorf("no leader")
		}
		if v := ls.voters(); len(v) != len(nodes) {
			return fmt.Errorf("leader %s has voters %v", l.name, v)
		}
		if l != leader {
			leader, target = l, ls.Commit
		}
		for i, st := range sts {
			if nodes[i] == l {
				continue
			}
			if st.Leader != l.name || st.Term != ls.Term {
				return fmt.Errorf("%s follows %q in term %d, not %s in term %d", nodes[i].name, st.Leader, st.Term, l.name, ls.Term)
			}
			if st.Applied < target {
				return fmt.Errorf("%s applied %d of %d", nodes[i].name, st.Applied, target)
			}
		}
		return nil
	}, func() string { return diag(nodes...) })
	return leader
}

// TestMixedGroup starts a 3-node group on the previous release, under
// load, and upgrades it node by node (stop, start the current binary on
// the same data): first a follower, then the leader is SIGKILLed while
// mixed and comes back on the current binary, then the last old node.
func TestMixedGroup(t *testing.T) {
	_, oldBin, newBin := binaries(t)
	nodes := groupNodes(t)
	for _, n := range nodes {
		n.args = append(n.args, gateNoWorker...)
	}
	brokers := endpoints(nodes...)
	dg := func() string { return diag(nodes...) }
	for _, n := range nodes {
		n.mustStart(t, "old", oldBin, nodes...)
	}
	defer func() { t.Logf("WARN/ERROR lines of the nodes:\n%s", warnings(nodes...)) }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	echoWorkers(t, ctx, brokers, 3)
	ld := startLoad(t, ctx, brokers, 3)
	ld.progress(t, 50, 30*time.Second, "first acks of the old group", dg)
	vc := versionClient(t, brokers)
	gated := failedTicket(t, ctx, vc, brokers, dg)
	mustRefuseRetry(t, ctx, vc, gated, "on the old group under load", dg)

	leader := waitGroupHealthy(t, ctx, nodes, 30*time.Second, "old group")
	var follower *node
	for _, n := range nodes {
		if n != leader {
			follower = n
			break
		}
	}
	t.Logf("upgrade the follower %s", follower.name)
	follower.stop(t)
	ld.progress(t, 20, 30*time.Second, fmt.Sprintf("acks with %s stopped", follower.name), dg)
	follower.mustStart(t, "new", newBin, nodes...)
	leader = waitGroupHealthy(t, ctx, nodes, 30*time.Second, "group with one new node")
	ld.progress(t, 30, 30*time.Second, "acks of the group with one new node", dg)
	mustRefuseRetry(t, ctx, vc, gated, "with one node upgraded, under load", dg)

	t.Logf("SIGKILL the leader %s (%s); it comes back on the current binary", leader.name, leader.which())
	leader.kill()
	ld.progress(t, 30, 30*time.Second, fmt.Sprintf("acks after SIGKILL of the leader %s", leader.name), dg)
	leader.mustStart(t, "new", newBin, nodes...)
	waitGroupHealthy(t, ctx, nodes, 30*time.Second, "group after the failover")
	ld.progress(t, 30, 30*time.Second, "acks after the failover", dg)
	mustRefuseRetry(t, ctx, vc, gated, "after the failover, one node still old", dg)

	for _, n := range nodes {
		if n.which() != "old" {
			continue
		}
		t.Logf("upgrade %s", n.name)
		n.stop(t)
		ld.progress(t, 20, 30*time.Second, fmt.Sprintf("acks with %s stopped", n.name), dg)
		n.mustStart(t, "new", newBin, nodes...)
		waitGroupHealthy(t, ctx, nodes, 30*time.Second, "group after upgrading "+n.name)
		ld.progress(t, 30, 30*time.Second, "acks after upgrading "+n.name, dg)
	}
	retryWorks(t, ctx, vc, brokers, gated, dg)
	ld.progress(t, 10, 30*time.Second, "acks after the retry", dg)
	acks := ld.finish(t, dg)
	checkAcks(t, ctx, brokers, acks, dg)
	t.Logf("%d acks across the group's upgrade", len(acks))
}

// TestMixedPairDowngrade: a rolling upgrade called off. A pair of the
// previous release has its primary upgraded (the cluster version stays at
// 1: the other node reports no version), goes through a failover (the
// survivor reforms raft alone in a fenced term and the killed node
// rejoins), then the upgraded node, passive now, is rolled back to the
// previous release on its data, and the active is SIGKILLed so that the
// rolled-back node must take over and serve what the new one wrote.
//
// The old binary starts on the new one's data without a word (no refusal,
// no corruption report). A new active that reformed raft alone when its
// passive stopped finds that the rolled-back node cannot reconcile (no
// titanic.cluster.history) and adds it back as v0.1.0 expects. (Once both
// nodes run the current release the cluster version is raised within a
// second, which moves the data files to format 2: a rollback is then
// refused, TestRollbackAfterVersionRaiseRefused.)
func TestMixedPairDowngrade(t *testing.T) {
	_, oldBin, newBin := binaries(t)
	primary, backup := pairNodes(t)
	all := []*node{primary, backup}
	brokers := endpoints(all...)
	dg := func() string { return diag(all...) }
	primary.mustStart(t, "new", newBin, all...)
	backup.mustStart(t, "old", oldBin, all...)
	defer func() { t.Logf("WARN/ERROR lines of the nodes:\n%s", warnings(all...)) }()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	echoWorkers(t, ctx, brokers, 3)
	ld := startLoad(t, ctx, brokers, 3)
	ld.progress(t, 50, 30*time.Second, "first acks of the new pair", dg)
	active, _ := waitPairHealthy(t, ctx, primary, backup, 30*time.Second, "new pair")
	active.kill()
	ld.progress(t, 30, 30*time.Second, "acks after SIGKILL of the active "+active.name, dg)
	which, bin := "new", newBin
	if active == backup {
		which, bin = "old", oldBin
	}
	active.mustStart(t, which, bin, all...)
	active, passive := waitPairHealthy(t, ctx, primary, backup, 30*time.Second, "pair after the failover")
	ld.progress(t, 30, 30*time.Second, "acks after the failover", dg)
	if passive != primary {
		// The upgraded node must be the passive one to roll back:
		// hand the active role over by a failover.
		active.kill()
		ld.progress(t, 30, 30*time.Second, "acks after SIGKILL of the active "+active.name, dg)
		active.mustStart(t, "old", oldBin, all...)
		active, passive = waitPairHealthy(t, ctx, primary, backup, 30*time.Second, "pair after the second failover")
	}

	t.Logf("roll the passive %s back to the old binary", passive.name)
	passive.stop(t)
	ld.progress(t, 20, 30*time.Second, "acks with the passive stopped", dg)
	if err := passive.start(t, "old", oldBin); err != nil {
		t.Fatalf("the old binary does not start on the data of the new one: %v%s", err, dg())
	}
	waitPairHealthy(t, ctx, primary, backup, 30*time.Second, "pair with the passive rolled back")
	ld.progress(t, 30, 30*time.Second, "acks with the passive rolled back", dg)

	t.Logf("SIGKILL the active %s: the rolled-back %s must take over", active.name, passive.name)
	active.kill()
	ld.progress(t, 30, 30*time.Second, "acks served by the rolled-back node", dg)
	active.mustStart(t, "new", newBin, all...)
	waitPairHealthy(t, ctx, primary, backup, 30*time.Second, "pair after the rolled-back node took over")
	ld.progress(t, 30, 30*time.Second, "acks at the end", dg)
	acks := ld.finish(t, dg)
	checkAcks(t, ctx, brokers, acks, dg)
	t.Logf("%d acks across a rollback of the passive and a failover onto it", len(acks))
}
