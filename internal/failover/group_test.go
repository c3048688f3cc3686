package failover

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/netns"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// group starts a 3-node raft group on hosts g1, g2, g3 and attaches the
// test process to their network.
func group(t *testing.T) []*node { t.Helper(); return groupWith(t) }

// groupWith is group with more flags for every node.
func groupWith(t *testing.T, extra ...string) []*node {
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
			"--peers", strings.Join(peers, ",")}, append(append([]string{}, fastFlags...), extra...)...)
		n.start(t)
	}
	return nodes
}

// waitGroupHealthy waits until every node runs and answers, one is the
// raft leader of all three voters, the others follow it and have applied
// what it had committed when it was first seen leading. It returns the
// leader.
func waitGroupHealthy(t *testing.T, ctx context.Context, nodes []*node, within time.Duration) *node {
	t.Helper()
	var (
		leader *node
		target uint64
	)
	eventually(t, within, "group whole, with one leader", func() error {
		sts := make([]status, len(nodes))
		for i, n := range nodes {
			st, err := clusterStatus(ctx, n.endpoint())
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
					return fmt.Errorf("%s and %s both report raft state Leader (terms %d, %d)", l.name, nodes[i].name, ls.Term, st.Term)
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

// leaderWatch samples titanic.cluster on every node until stopped and
// records which nodes reported themselves raft leader in which term.
type leaderWatch struct {
	mu      sync.Mutex
	leaders map[uint64][]string
	samples int
	stop    chan struct{}
	done    chan struct{}
}

func watchLeaders(ctx context.Context, nodes []*node) *leaderWatch {
	w := &leaderWatch{leaders: map[uint64][]string{}, stop: make(chan struct{}), done: make(chan struct{})}
	eps := endpoints(nodes...)
	go func() {
		defer close(w.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			var wg sync.WaitGroup
			for i, ep := range eps {
				wg.Add(1)
				go func() {
					defer wg.Done()
					st, err := clusterStatus(ctx, ep)
					if err != nil || st.State != "Leader" {
						return
					}
					w.mu.Lock()
					defer w.mu.Unlock()
					w.samples++
					if !slices.Contains(w.leaders[st.Term], nodes[i].name) {
						w.leaders[st.Term] = append(w.leaders[st.Term], nodes[i].name)
					}
				}()
			}
			wg.Wait()
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// finish stops the sampling and returns, per term, the nodes seen leading.
func (w *leaderWatch) finish() (map[uint64][]string, int) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.leaders, w.samples
}

// TestGroupFaults hurts the leader of a 3-node group under load, three
// rounds of four faults: SIGKILL (then restart), SIGSTOP past the election
// timeout (then SIGCONT), link down (then up), and a silent partition from
// the two other nodes while clients still reach it (then heal). After each
// a new leader must serve. At the end every acknowledged ticket is answered
// with its own body, none is lost, no key made two tickets, and no two
// nodes led, or served, in the same raft term.
func TestGroupFaults(t *testing.T) {
	nodes := group(t)
	brokers := endpoints(nodes...)
	dg := func() string { return diag(nodes...) }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	echoWorkers(t, ctx, brokers, 3)
	ld := startLoad(t, ctx, brokers, 4, clientTimeout)
	ld.progress(t, 100, 30*time.Second, "first acks of the group", dg)
	refusesStrangers(t, ctx, nodes)
	watch := watchLeaders(ctx, nodes)

	others := func(l *node) []*netns.Host {
		var hs []*netns.Host
		for _, n := range nodes {
			if n != l {
				hs = append(hs, n.host)
			}
		}
		return hs
	}
	type fault struct {
		name       string
		hurt, heal func(l *node)
	}
	faults := []fault{
		{"SIGKILL", func(l *node) { l.kill() }, func(l *node) { l.start(t) }},
		{"SIGSTOP", func(l *node) {
			if err := l.proc().Signal(syscall.SIGSTOP); err != nil {
				t.Fatalf("SIGSTOP %s: %v", l.name, err)
			}
		}, func(l *node) {
			if err := l.proc().Signal(syscall.SIGCONT); err != nil {
				t.Fatalf("SIGCONT %s: %v", l.name, err)
			}
		}},
		{"link down", func(l *node) { l.host.LinkDown(t) }, func(l *node) { l.host.LinkUp(t) }},
		{"partition", func(l *node) { l.host.Partition(t, others(l)...) }, func(l *node) { l.host.Heal(t) }},
	}

	const rounds = 3
	gaps := map[string][]time.Duration{}
	type event struct {
		name string
		at   time.Time
	}
	var events []event
	for r := 1; r <= rounds; r++ {
		for _, f := range faults {
			leader := waitGroupHealthy(t, ctx, nodes, 30*time.Second)
			ld.progress(t, 30, 30*time.Second, fmt.Sprintf("round %d, %s: acks before", r, f.name), dg)
			at := time.Now()
			f.hurt(leader)
			// A new leader must serve while the old one is out: the
			// election timeout is 300ms, so these acks come from another
			// node (the old one cannot commit without a quorum).
			ld.progress(t, 30, 20*time.Second, fmt.Sprintf("round %d: acks with the leader %s out (%s)", r, leader.name, f.name), dg)
			// Hold the fault a little past the first acks of the new
			// leader, so that the old one stays out for several election
			// timeouts.
			if d := time.Until(at.Add(1500 * time.Millisecond)); d > 0 {
				time.Sleep(d)
			}
			f.heal(leader)
			events = append(events, event{f.name, at})
		}
	}
	waitGroupHealthy(t, ctx, nodes, 30*time.Second)
	ld.progress(t, 50, 30*time.Second, "acks after the last fault", dg)
	acks := ld.finish(t, dg)
	leaders, samples := watch.finish()

	for _, e := range events {
		gaps[e.name] = append(gaps[e.name], outage(acks, e.at, 20))
	}
	for _, f := range faults {
		g := gaps[f.name]
		t.Logf("group failover, leader %s: p50=%s max=%s over %d", f.name,
			percentile(g, 50).Round(time.Millisecond), percentile(g, 100).Round(time.Millisecond), len(g))
	}
	var all []time.Duration
	for _, g := range gaps {
		all = append(all, g...)
	}
	st := ld.clientStats()
	t.Logf("group failover p50=%s p99=%s over %d faults; %d acks; clients: %d retries, %d failovers, %d refusals",
		percentile(all, 50).Round(time.Millisecond), percentile(all, 99).Round(time.Millisecond), len(all),
		len(acks), st.Retries, st.Failovers, st.Refusals)

	// No split brain: one leader per term, as sampled, and as logged by
	// the nodes when they started to serve.
	for term, who := range leaders {
		if len(who) > 1 {
			t.Errorf("split brain: %v all reported raft state Leader in term %d", who, term)
		}
	}
	served := checkOneServerPerTerm(t, nodes...)
	if len(served) < 1+rounds*len(faults) {
		t.Errorf("%d terms served for %d leader faults: some fault did not move the leadership: %v", len(served), rounds*len(faults), served)
	}
	t.Logf("%d leader samples over %d terms; %d terms served: %v", samples, len(leaders), len(served), served)
	checkAcks(t, ctx, brokers, acks, dg)
}

// refusesStrangers checks that a client on a host of the network that is
// no member (the test process, attached) may submit but not change the
// cluster: a join of its own voter is answered 400 forbidden by every
// node, a backup by the leader (the followers refuse every titanic.*
// service), and the group keeps its three members. One such join used
// to leave a group without a quorum for good.
func refusesStrangers(t *testing.T, ctx context.Context, nodes []*node) {
	t.Helper()
	backupsRefused := 0
	for _, n := range nodes {
		c, err := client.New(client.Config{Brokers: []string{n.endpoint()}, Timeout: 2 * time.Second, Retries: 1, Logger: quiet, Direct: true})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := c.Request(ctx, tsp.SvcJoin, [][]byte{[]byte("evil"), []byte("192.0.2.9:7000")})
		if err != nil || !tsp.Is(rep, tsp.CodeUnknown, tsp.Forbidden) {
			c.Close()
			t.Fatalf("join to %s from a host that is no member: %q, %v; want 400 forbidden", n.name, rep, err)
		}
		if rep, err := c.Request(ctx, tsp.SvcBackup, [][]byte{[]byte("stolen.db")}); err == nil {
			if !tsp.Is(rep, tsp.CodeUnknown, tsp.Forbidden) {
				c.Close()
				t.Fatalf("backup on %s from a host that is no member: %q; want 400 forbidden", n.name, rep)
			}
			backupsRefused++
		}
		c.Close()
	}
	if backupsRefused == 0 {
		t.Fatal("no node answered the backup request (the leader should have refused it)")
	}
	st := statusOf(t, ctx, nodes[0], func() string { return diag(nodes...) })
	if len(st.Members) != 3 {
		t.Fatalf("members after refused joins: %v, want the three", st.Members)
	}
}
