package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/worker"
)

// An attempt a leader change cuts short counts toward the ticket's
// attempts: found by an outside-in test of the job lifecycle.

// leaderChangeAddr returns a 127.0.0.1:PORT that stays this test's
// (harness.ReservedEndpoint): a port picked by listening and closing was
// taken meanwhile by another test's connection, and a node failed to bind.
func leaderChangeAddr(t *testing.T) string {
	t.Helper()
	return strings.TrimPrefix(harness.ReservedEndpoint(t), "tcp://")
}

// README: `--attempts N`, "this ticket's dispatches before it fails for
// good"; the HTTP API's `"attempts": 3` "(dispatches at most)";
// Guarantees: "after --max-attempts dispatches it fails". In a 3-node
// raft group, a ticket submitted with attempts 1 whose only attempt is
// running when the leader dies is dispatched again by the new leader
// (attempts 2 of 1) to another worker, while the first worker still runs
// it: two concurrent runs of a job the client allowed one dispatch. (The
// same on a single node across a restart, and on a pair across a
// failover: titanic TestRestartCutShortAttemptCountsTowardMaxAttempts.)
func TestGroupLeaderChangeCountsCutShortAttempt(t *testing.T) {
	type node struct {
		id, ep, raft, dir string
		p                 *harness.Process
	}
	var nodes []*node
	var peers, eps []string
	for i := 1; i <= 3; i++ {
		n := &node{id: fmt.Sprintf("n%d", i), ep: "tcp://" + leaderChangeAddr(t), raft: leaderChangeAddr(t), dir: t.TempDir()}
		nodes = append(nodes, n)
		peers = append(peers, n.id+"="+n.raft)
		eps = append(eps, n.ep)
	}
	for _, n := range nodes {
		n.p = harness.Broker(t, n.id, n.ep, n.dir, "--raft", "--node-id", n.id, "--raft-bind", n.raft,
			"--peers", strings.Join(peers, ","), "--raft-timeout", "300ms", "--heartbeat", "200ms")
	}
	cl, err := client.New(client.Config{Brokers: eps, Timeout: 500 * time.Millisecond, Retries: 40})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var runs atomic.Int32
	hold := make(chan struct{})
	defer close(hold)
	for range 2 {
		w, err := worker.New(worker.Config{Brokers: eps, Service: "once", HeartbeatInterval: 200 * time.Millisecond, ReconnectDelay: 100 * time.Millisecond},
			func(ctx context.Context, req [][]byte) ([][]byte, error) {
				runs.Add(1)
				select { // a long job
				case <-hold:
				case <-ctx.Done():
				}
				return req, nil
			})
		if err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = w.Run(wctx) }()
		defer func() { wcancel(); <-done }()
	}
	var tk string
	waitFor(t, 30*time.Second, "a submit with attempts 1 (cluster version 3)", func() bool {
		tk, err = cl.Submit(ctx, "once", [][]byte{[]byte("x")}, client.SubmitOptions{MaxAttempts: 1})
		return err == nil
	})
	waitFor(t, 20*time.Second, "the ticket dispatched", func() bool { return runs.Load() == 1 })

	out, _ := cli(t, "", "cluster", "--broker", strings.Join(eps, ","))
	var leader *node
	for _, n := range nodes {
		if strings.Contains(lineOf(out, n.ep), "Leader") {
			leader = n
		}
	}
	if leader == nil {
		t.Fatalf("no leader in\n%s", out)
	}
	leader.p.Kill()
	time.Sleep(15 * time.Second)
	st, err := cl.Status(ctx, tk)
	if runs.Load() > 1 || (err == nil && st.Attempts > 1) {
		t.Fatalf("a ticket of attempts 1 ran %d times at once after the leader died (status %+v %v)", runs.Load(), st, err)
	}
}
