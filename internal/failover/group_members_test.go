package failover

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/internal/netns"
)

// groupN starts a raft group of the named hosts (each a voter) with
// flags extra for every node.
func groupN(t *testing.T, names []string, extra ...string) (*netns.Net, []*node) {
	t.Helper()
	net := netns.New(t)
	var nodes []*node
	for _, name := range names {
		nodes = append(nodes, newNode(net, name, t))
	}
	keepLogs(t, nodes...)
	net.Attach()
	var peers []string
	for _, n := range nodes {
		peers = append(peers, n.name+"="+n.host.Addr+":7000")
	}
	for _, n := range nodes {
		n.args = append([]string{"--raft", "--node-id", n.name, "--raft-bind", n.host.Addr + ":7000",
			"--peers", strings.Join(peers, ",")}, append(append([]string{}, fastFlags...), extra...)...)
	}
	// Start them together: a node waits for its peers before it is ready.
	done := make(chan struct{})
	for _, n := range nodes {
		go func() {
			defer func() { done <- struct{}{} }()
			name := fmt.Sprintf("%s-%d", n.name, len(n.procs))
			p, err := n.host.TryBroker(t, name, n.dir, n.args...)
			if err != nil {
				t.Error(err)
			}
			n.procs = append(n.procs, p)
		}()
	}
	for range nodes {
		<-done
	}
	if t.Failed() {
		t.FailNow()
	}
	return net, nodes
}

func cli(t *testing.T, on *node, args ...string) (string, error) {
	t.Helper()
	out, err := on.host.Run(t, harness.Binary(t), args...)
	return string(out), err
}

// waitMembers waits until the leader among nodes reports exactly the
// voters want (sorted IDs) and no nonvoter, every node in want follows
// it, and it serves submits (a leader that is whole).
func waitMembers(t *testing.T, ctx context.Context, nodes []*node, want []string, within time.Duration) *node {
	t.Helper()
	slices.Sort(want)
	var leader *node
	eventually(t, within, fmt.Sprintf("group of voters %v with one leader", want), func() error {
		leader = nil
		var ls status
		for _, n := range nodes {
			if !slices.Contains(want, n.name) {
				continue
			}
			st, err := clusterStatus(ctx, n.endpoint())
			if err != nil {
				return fmt.Errorf("%s: %w", n.name, err)
			}
			if st.State == "Leader" {
				if leader != nil {
					return fmt.Errorf("two leaders: %s and %s", leader.name, n.name)
				}
				leader, ls = n, st
			}
		}
		if leader == nil {
			return fmt.Errorf("no leader")
		}
		if v := ls.voters(); !slices.Equal(v, want) || len(ls.Members) != len(want) {
			return fmt.Errorf("leader %s has members %v, want voters %v", leader.name, ls.Members, want)
		}
		for _, n := range nodes {
			if !slices.Contains(want, n.name) || n == leader {
				continue
			}
			st, err := clusterStatus(ctx, n.endpoint())
			if err != nil {
				return fmt.Errorf("%s: %w", n.name, err)
			}
			if st.Leader != leader.name || st.Term != ls.Term {
				return fmt.Errorf("%s follows %q in term %d, not %s in %d", n.name, st.Leader, st.Term, leader.name, ls.Term)
			}
			if v := st.voters(); !slices.Equal(v, want) {
				return fmt.Errorf("%s has members %v, want voters %v", n.name, st.Members, want)
			}
		}
		return nil
	}, func() string { return diag(nodes...) })
	return leader
}

// leaderOf returns the node that reports itself raft leader, once one does.
func leaderOf(t *testing.T, ctx context.Context, nodes []*node, within time.Duration) *node {
	t.Helper()
	var l *node
	eventually(t, within, "a leader", func() error {
		for _, n := range nodes {
			if !n.running() {
				continue
			}
			if st, err := clusterStatus(ctx, n.endpoint()); err == nil && st.State == "Leader" {
				l = n
				return nil
			}
		}
		return fmt.Errorf("no leader")
	}, func() string { return diag(nodes...) })
	return l
}

func without(nodes []*node, out ...*node) []*node {
	var r []*node
	for _, n := range nodes {
		if !slices.Contains(out, n) {
			r = append(r, n)
		}
	}
	return r
}

func names(nodes []*node) []string {
	var r []string
	for _, n := range nodes {
		r = append(r, n.name)
	}
	return r
}

// oneWay drops the host's outgoing packets to the given hosts only (what
// they send it still arrives): an asymmetric, silent cut. Healed with
// healOneWay, and by the namespace's deletion at the end.
// TestGroupLeaveOfLeaderThenRejoin: titanic cluster leave names the
// leader of a 3-node group under load (the leadership moves as part of
// the change); the two others must serve as a group of two voters, and
// the node that left, joined again with its data at its address, must
// be a voter of three again, with nothing lost. The node that left had
// shut its raft down (raft's ShutdownOnRemove), and joined again it
// stayed a nonvoter for good (found by a tester of the group).
func TestGroupLeaveOfLeaderThenRejoin(t *testing.T) {
	_, nodes := groupN(t, []string{"g1", "g2", "g3"})
	dg := func() string { return diag(nodes...) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	brokers := endpoints(nodes...)
	leader := waitGroupHealthy(t, ctx, nodes, 30*time.Second)
	echoWorkers(t, ctx, brokers, 3)
	ld := startLoad(t, ctx, brokers, 4, clientTimeout)
	ld.progress(t, 200, 30*time.Second, "first acks", dg)
	rest := without(nodes, leader)
	B := strings.Join(brokers, ",")
	if out, err := cli(t, rest[0], "cluster", "leave", "--broker", B, leader.name); err != nil {
		t.Fatalf("cluster leave %s: %v\n%s%s", leader.name, err, out, dg())
	}
	waitMembers(t, ctx, nodes, names(rest), 30*time.Second)
	ld.progress(t, 100, 20*time.Second, "acks after the leader left", dg)
	st, err := clusterStatus(ctx, leader.endpoint())
	t.Logf("the node that left: running=%v, status %+v, %v", leader.running(), st, err)

	if out, err := cli(t, rest[0], "cluster", "join", "--broker", B, leader.name, leader.host.Addr+":7000"); err != nil {
		t.Fatalf("cluster join %s again: %v\n%s%s", leader.name, err, out, dg())
	}
	waitMembers(t, ctx, nodes, names(nodes), 30*time.Second)
	ld.progress(t, 100, 20*time.Second, "acks after the rejoin", dg)
	// The group of three survives its leader's loss again.
	l := leaderOf(t, ctx, nodes, 10*time.Second)
	l.kill()
	ld.progress(t, 100, 20*time.Second, "acks with the leader killed", dg)
	l.start(t)
	waitMembers(t, ctx, nodes, names(nodes), 30*time.Second)
	acks := ld.finish(t, dg)
	checkAcks(t, ctx, brokers, acks, dg)
}
