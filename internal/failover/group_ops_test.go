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
// endpoint at once and returns, by key, the tickets of those it
// acknowledged ("" when refused or unanswered).
func directSubmits(ctx context.Context, endpoint, prefix string, n int, timeout time.Duration) (map[string]string, error) {
	return directStream(ctx, endpoint, prefix, n, 1, timeout, nil)
}

// directStream runs n submitters straight to endpoint, each on its own
// client (a client makes one call at a time) waiting up to timeout for
// each answer: submitter s sends keys "<prefix>-<s>-<i>" one after the
// other, up to most each, or until stop is closed. It returns, by key,
// the tickets acknowledged ("" when refused or unanswered).
func directStream(ctx context.Context, endpoint, prefix string, n, most int, timeout time.Duration, stop <-chan struct{}) (map[string]string, error) {
	var (
		mu   sync.Mutex
		out  = map[string]string{}
		errs []error
		wg   sync.WaitGroup
	)
	for s := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := client.New(client.Config{Brokers: []string{endpoint}, Timeout: timeout, Retries: 1, RefusedWait: -1, Direct: true, Logger: quiet})
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			defer cl.Close()
			for i := range most {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("%s-%d-%d", prefix, s, i)
				tk, err := cl.Submit(ctx, "echo", [][]byte{[]byte("body of " + key)}, client.SubmitOptions{IdemKey: key})
				if err != nil {
					tk = ""
				}
				mu.Lock()
				out[key] = tk
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// inBackground runs a direct submitter f on a goroutine of its own: its
// result comes on the channel returned, its error fails the test.
func inBackground(t *testing.T, f func() (map[string]string, error)) <-chan map[string]string {
	ch := make(chan map[string]string, 1)
	go func() {
		tks, err := f()
		if err != nil {
			t.Error(err)
		}
		ch <- tks
	}()
	return ch
}

// acked counts the keys of direct acknowledged.
func acked(direct map[string]string) int {
	n := 0
	for _, tk := range direct {
		if tk != "" {
			n++
		}
	}
	return n
}

// settleDirect resubmits every direct submit's key through the whole
// group until acknowledged: the ticket must be the one the direct
// submit was acknowledged with, if it was (an acknowledged ticket the
// group does not hold comes back as a new ticket). It returns the acks.
func settleDirect(t *testing.T, ctx context.Context, brokers []string, direct map[string]string, dg func() string) []ack {
	t.Helper()
	cl, err := client.New(client.Config{Brokers: brokers, Timeout: clientTimeout, Retries: 20, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var acks []ack
	for key, was := range direct {
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
	sent, sentStopped := 0, 0
	for round := 1; round <= rounds(2, 4); round++ {
		leader := waitGroupHealthy(t, ctx, nodes, 30*time.Second)
		ld.progress(t, 50, 30*time.Second, fmt.Sprintf("round %d: acks before", round), dg)
		// Submits straight to the leader from before the stop to after
		// the wake: some are in its hands when it stops.
		stop := make(chan struct{})
		stream := inBackground(t, func() (map[string]string, error) {
			return directStream(ctx, leader.endpoint(), fmt.Sprintf("flow%d", round), 4, 1000, 5*time.Second, stop)
		})
		time.Sleep(300 * time.Millisecond) // let the stream flow: not synchronisation
		if err := leader.proc().Signal(syscall.SIGSTOP); err != nil {
			t.Fatalf("SIGSTOP %s: %v", leader.name, err)
		}
		res := inBackground(t, func() (map[string]string, error) {
			return directSubmits(ctx, leader.endpoint(), fmt.Sprintf("stopped%d", round), 40, 10*time.Second)
		})
		ld.progress(t, 50, 20*time.Second, fmt.Sprintf("round %d: acks with the leader %s stopped", round, leader.name), dg)
		time.Sleep(time.Second) // hold the stop for several election timeouts
		if err := leader.proc().Signal(syscall.SIGCONT); err != nil {
			t.Fatalf("SIGCONT %s: %v", leader.name, err)
		}
		direct := <-res
		close(stop)
		flow := <-stream
		sent += acked(flow)
		sentStopped += acked(direct)
		all = append(all, settleDirect(t, ctx, brokers, direct, dg)...)
		all = append(all, settleDirect(t, ctx, brokers, flow, dg)...)
	}
	t.Logf("submits straight to the leader acknowledged: %d of those sent while it was stopped, %d of the stream across the stop", sentStopped, sent)
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
		atCut := inBackground(t, func() (map[string]string, error) {
			return directSubmits(ctx, leader.endpoint(), fmt.Sprintf("atcut%d", round), 20, 3*time.Second)
		})
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
		for key, tk := range direct {
			if tk != "" {
				t.Errorf("%s acknowledged as %s by the old leader %s, cut off from the majority for %s", key, tk, leader.name, time.Since(cutAt).Round(time.Millisecond))
			}
		}
		for _, m := range minority {
			m.host.Heal(t)
		}
		all = append(all, settleDirect(t, ctx, brokers, direct, dg)...)
		all = append(all, settleDirect(t, ctx, brokers, cutAcks, dg)...)
		t.Logf("round %d: %d of %d submits sent to the old leader %s as it was cut off were acknowledged", round, acked(cutAcks), len(cutAcks), leader.name)
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

// TestGroupFiveOneWayRaftCut cuts a 5-node group's raft links to and
// from its leader one way only, silently, under load: in odd rounds the
// leader cannot open connections to the others' raft port (theirs to it
// pass), in even rounds the others cannot open connections to the
// leader's. The group must keep acknowledging, never with two leaders
// in a term, and lose nothing.
func TestGroupFiveOneWayRaftCut(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nodes, brokers, dg := healthyGroup(t, ctx, "g1", "g2", "g3", "g4", "g5")
	order := func(first *node) []string { return endpoints(append([]*node{first}, without(nodes, first)...)...) }
	for _, n := range nodes {
		echoWorkers(t, ctx, order(n), 1)
	}
	ld := startLoad(t, ctx, brokers, 4, clientTimeout)
	ld.progress(t, 200, 30*time.Second, "first acks", dg)
	for round := 1; round <= 4; round++ {
		l := waitGroupHealthy(t, ctx, nodes, 30*time.Second)
		others := without(nodes, l)
		if round%2 == 1 {
			l.host.PartitionPortTo(t, raftPort, hostsOf(others)...)
		} else {
			for _, o := range others {
				o.host.PartitionPortTo(t, raftPort, l.host)
			}
		}
		ld.progress(t, 100, 20*time.Second, fmt.Sprintf("round %d: acks with the leader %s's raft cut one way", round, l.name), dg)
		time.Sleep(2 * time.Second) // hold the cut: not synchronisation
		ld.progress(t, 50, 20*time.Second, fmt.Sprintf("round %d: acks 2s into the cut", round), dg)
		for _, n := range nodes {
			n.host.Heal(t)
		}
	}
	waitGroupHealthy(t, ctx, nodes, 30*time.Second)
	ld.progress(t, 100, 20*time.Second, "acks after the last heal", dg)
	acks := ld.finish(t, dg)
	checkAcks(t, ctx, brokers, acks, dg)
	checkOneServerPerTerm(t, nodes...)
}
