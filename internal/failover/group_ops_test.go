package failover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/netns"
)

// healthyGroup starts a raft group of the named hosts and waits until it
// is whole; dg is every node's log tail and titanic.cluster answer. The
// caller cancels ctx by defer: it must end before the workers' cleanup,
// which waits for them.
func healthyGroup(t *testing.T, ctx context.Context, names ...string) ([]*node, []string, func() string) {
	t.Helper()
	_, nodes := groupN(t, names)
	dg := func() string { return diag(nodes...) + statuses(ctx, nodes) }
	waitGroupHealthy(t, ctx, nodes, 30*time.Second)
	return nodes, endpoints(nodes...), dg
}

// startAll starts the given nodes at once with their args and waits
// until each is ready: a group's node waits for its peers before it is.
func startAll(t *testing.T, nodes ...*node) {
	t.Helper()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("%s-%d", n.name, len(n.procs))
			p, err := n.host.TryBroker(t, name, n.dir, n.args...)
			if err != nil {
				t.Error(err)
			}
			n.procs = append(n.procs, p)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// TestGroupRestartAll SIGKILLs every node of a 3-node group under load
// at once, then starts them all again: everything acknowledged must be
// there and answered, and the group must serve again by itself.
func TestGroupRestartAll(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nodes, brokers, dg := healthyGroup(t, ctx, "g1", "g2", "g3")
	echoWorkers(t, ctx, brokers, 3)
	ld := startLoad(t, ctx, brokers, 6, clientTimeout)
	for round := 1; round <= 3; round++ {
		ld.progress(t, 300, 30*time.Second, fmt.Sprintf("round %d: acks before the kill", round), dg)
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Add(1)
			go func() { defer wg.Done(); n.kill() }()
		}
		wg.Wait()
		startAll(t, nodes...)
		ld.progress(t, 100, 30*time.Second, fmt.Sprintf("round %d: acks after the restart", round), dg)
	}
	waitGroupHealthy(t, ctx, nodes, 30*time.Second)
	acks := ld.finish(t, dg)
	checkAcks(t, ctx, brokers, acks, dg)
	checkOneServerPerTerm(t, nodes...)
}

// directSubmits sends n keyed submits ("<prefix>-<i>") straight to
// endpoint at once, each on its own client (a client makes one call at a
// time) waiting up to timeout for its answer, and returns the tickets of
// those it acknowledged (by index; "" when refused or unanswered).
func directSubmits(ctx context.Context, endpoint, prefix string, n int, timeout time.Duration) ([]string, error) {
	tickets := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := client.New(client.Config{Brokers: []string{endpoint}, Timeout: timeout, Retries: 1, RefusedWait: -1, Direct: true, Logger: quiet})
			if err != nil {
				errs[i] = err
				return
			}
			defer cl.Close()
			key := fmt.Sprintf("%s-%d", prefix, i)
			tk, err := cl.Submit(ctx, "echo", [][]byte{[]byte("body of " + key)}, client.SubmitOptions{IdemKey: key})
			if err == nil {
				tickets[i] = tk
			}
		}()
	}
	wg.Wait()
	return tickets, errors.Join(errs...)
}

// settleDirect resubmits every direct submit's key through the whole
// group until acknowledged: the ticket must be the one the direct
// submit was acknowledged with, if it was (an acknowledged ticket the
// group does not hold comes back as a new ticket). It returns the acks.
func settleDirect(t *testing.T, ctx context.Context, brokers []string, prefix string, direct []string, dg func() string) []ack {
	t.Helper()
	cl, err := client.New(client.Config{Brokers: brokers, Timeout: clientTimeout, Retries: 20, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var acks []ack
	for i, was := range direct {
		key := fmt.Sprintf("%s-%d", prefix, i)
		body := "body of " + key
		var tk string
		eventually(t, 30*time.Second, "resubmit of "+key, func() error {
			var err error
			tk, err = cl.Submit(ctx, "echo", [][]byte{[]byte(body)}, client.SubmitOptions{IdemKey: key})
			return err
		}, dg)
		if was != "" && tk != was {
			t.Errorf("LOST: %s was acknowledged as ticket %s by the old leader; the group made it %s", key, was, tk)
		}
		acks = append(acks, ack{key: key, body: body, ticket: tk, at: time.Now()})
	}
	return acks
}

// TestGroupStoppedLeaderAcksNothingLost SIGSTOPs the leader of a 3-node
// group past the election timeout while submits sent straight to it
// wait in its socket, lets the two others elect and serve, then SIGCONTs
// it: whatever the old leader acknowledges when it wakes (it still
// believes it leads for a moment) must be in the group, as the same
// ticket a resubmit of its key gets.
func TestGroupStoppedLeaderAcksNothingLost(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nodes, brokers, dg := healthyGroup(t, ctx, "g1", "g2", "g3")
	echoWorkers(t, ctx, brokers, 3)
	ld := startLoad(t, ctx, brokers, 4, clientTimeout)
	var all []ack
	acked := 0
	for round := 1; round <= 4; round++ {
		leader := waitGroupHealthy(t, ctx, nodes, 30*time.Second)
		ld.progress(t, 50, 30*time.Second, fmt.Sprintf("round %d: acks before", round), dg)
		if err := leader.proc().Signal(syscall.SIGSTOP); err != nil {
			t.Fatalf("SIGSTOP %s: %v", leader.name, err)
		}
		prefix := fmt.Sprintf("stopped%d", round)
		res := make(chan []string, 1)
		go func() {
			tks, err := directSubmits(ctx, leader.endpoint(), prefix, 40, 10*time.Second)
			if err != nil {
				t.Error(err)
			}
			res <- tks
		}()
		ld.progress(t, 50, 20*time.Second, fmt.Sprintf("round %d: acks with the leader %s stopped", round, leader.name), dg)
		time.Sleep(time.Second) // hold the stop for several election timeouts
		if err := leader.proc().Signal(syscall.SIGCONT); err != nil {
			t.Fatalf("SIGCONT %s: %v", leader.name, err)
		}
		direct := <-res
		for _, tk := range direct {
			if tk != "" {
				acked++
			}
		}
		all = append(all, settleDirect(t, ctx, brokers, prefix, direct, dg)...)
	}
	t.Logf("%d submits sent to a stopped leader were acknowledged when it woke", acked)
	waitGroupHealthy(t, ctx, nodes, 30*time.Second)
	all = append(all, ld.finish(t, dg)...)
	checkAcks(t, ctx, brokers, all, dg)
	checkOneServerPerTerm(t, nodes...)
}

// TestGroupFiveMinorityWithLeader cuts, silently, a 5-node group's leader
// and one follower off the three others (clients and workers still reach
// every node) under load: the three must elect and serve, the old leader
// must stop acknowledging (submits sent straight to it are refused or
// unanswered, and any it acknowledges must be in the group), and after
// the heal the group is whole with nothing acknowledged lost.
func TestGroupFiveMinorityWithLeader(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nodes, brokers, dg := healthyGroup(t, ctx, "g1", "g2", "g3", "g4", "g5")
	echoWorkers(t, ctx, brokers, 3)
	ld := startLoad(t, ctx, brokers, 4, clientTimeout)
	watch := watchLeaders(ctx, nodes)
	var all []ack
	for round := 1; round <= 3; round++ {
		leader := waitGroupHealthy(t, ctx, nodes, 30*time.Second)
		ld.progress(t, 100, 30*time.Second, fmt.Sprintf("round %d: acks before the cut", round), dg)
		minority := []*node{leader, without(nodes, leader)[round%4]}
		majority := without(nodes, minority...)
		for _, m := range minority {
			m.host.Partition(t, hostsOf(majority)...)
		}
		cutAt := time.Now()
		// Submits sent straight to the old leader as it is cut off: any
		// it acknowledges must be in the group after the heal.
		atCut := make(chan []string, 1)
		go func() {
			tks, err := directSubmits(ctx, leader.endpoint(), fmt.Sprintf("atcut%d", round), 20, 3*time.Second)
			if err != nil {
				t.Error(err)
			}
			atCut <- tks
		}()
		ld.progress(t, 100, 20*time.Second, fmt.Sprintf("round %d: acks with %v cut off", round, names(minority)), dg)
		cutAcks := <-atCut
		// The old leader stepped down (raft-timeout/2 after its last
		// contact): submits sent to it now are not acknowledged.
		eventually(t, 5*time.Second, "old leader "+leader.name+" no longer leads", func() error {
			st, err := clusterStatus(ctx, leader.endpoint())
			if err != nil {
				return err
			}
			if st.State == "Leader" {
				return fmt.Errorf("%s still reports Leader in term %d", leader.name, st.Term)
			}
			return nil
		}, dg)
		prefix := fmt.Sprintf("minority%d", round)
		direct, err := directSubmits(ctx, leader.endpoint(), prefix, 20, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for i, tk := range direct {
			if tk != "" {
				t.Errorf("%s-%d acknowledged as %s by the old leader %s, cut off from the majority for %s", prefix, i, tk, leader.name, time.Since(cutAt).Round(time.Millisecond))
			}
		}
		for _, m := range minority {
			m.host.Heal(t)
		}
		all = append(all, settleDirect(t, ctx, brokers, prefix, direct, dg)...)
		all = append(all, settleDirect(t, ctx, brokers, fmt.Sprintf("atcut%d", round), cutAcks, dg)...)
		n := 0
		for _, tk := range cutAcks {
			if tk != "" {
				n++
			}
		}
		t.Logf("round %d: %d of %d submits sent to the old leader %s as it was cut off were acknowledged", round, n, len(cutAcks), leader.name)
	}
	waitGroupHealthy(t, ctx, nodes, 30*time.Second)
	ld.progress(t, 50, 30*time.Second, "acks after the last heal", dg)
	all = append(all, ld.finish(t, dg)...)
	leaders, _ := watch.finish()
	for term, who := range leaders {
		if len(who) > 1 {
			t.Errorf("split brain: %v all reported raft state Leader in term %d", who, term)
		}
	}
	checkAcks(t, ctx, brokers, all, dg)
	checkOneServerPerTerm(t, nodes...)
}

func hostsOf(nodes []*node) (hs []*netns.Host) {
	for _, n := range nodes {
		hs = append(hs, n.host)
	}
	return hs
}

// TestGroupWorkersOnOldLeader runs slow workers that list the leader
// first (so they are attached to it) while the leader is cut off
// silently from the two other nodes, and after the heal while it is
// killed: jobs running on the old leader when it lost its place are
// redelivered by the new leader, and every acknowledged ticket gets its
// own reply. Workers listing a follower first are attached there too.
func TestGroupWorkersOnOldLeader(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nodes, brokers, dg := healthyGroup(t, ctx, "g1", "g2", "g3")
	leader := waitGroupHealthy(t, ctx, nodes, 30*time.Second)
	slow := func(ctx context.Context, req [][]byte) ([][]byte, error) {
		select {
		case <-time.After(150 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return [][]byte{append([]byte("echo:"), slices.Concat(req...)...)}, nil
	}
	order := func(first *node) []string { return endpoints(append([]*node{first}, without(nodes, first)...)...) }
	runWorkers(t, ctx, order(leader), 4, 200*time.Millisecond, slow)
	for _, f := range without(nodes, leader) {
		runWorkers(t, ctx, order(f), 2, 200*time.Millisecond, slow)
	}
	ld := startLoad(t, ctx, brokers, 4, clientTimeout)
	ld.progress(t, 100, 30*time.Second, "first acks", dg)

	leader.host.Partition(t, hostsOf(without(nodes, leader))...)
	ld.progress(t, 100, 20*time.Second, "acks with the leader "+leader.name+" cut off", dg)
	leader.host.Heal(t)
	l2 := waitGroupHealthy(t, ctx, nodes, 30*time.Second)
	ld.progress(t, 100, 20*time.Second, "acks after the heal", dg)
	l2.kill()
	ld.progress(t, 100, 20*time.Second, "acks with the leader "+l2.name+" killed", dg)
	l2.start(t)
	waitGroupHealthy(t, ctx, nodes, 30*time.Second)
	ld.progress(t, 50, 20*time.Second, "acks at the end", dg)
	acks := ld.finish(t, dg)
	checkAcks(t, ctx, brokers, acks, dg)
}
