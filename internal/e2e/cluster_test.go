package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
)

// TestGroupOnLoopback runs a 3-node raft group of real processes on
// 127.0.0.1: submits through any node reach the leader, a SIGKILLed
// leader is replaced with nothing acknowledged lost, `titanic cluster`
// shows the members and their lag, and a fourth node joins and leaves.
// (Failures of whole hosts, with network namespaces, are in
// internal/failover.)
func TestGroupOnLoopback(t *testing.T) {
	type node struct {
		id, ep, raft, dir string
		p                 *harness.Process
	}
	var nodes []*node
	var peers []string
	for i := 1; i <= 3; i++ {
		raft := harness.FreeAddr(t)
		n := &node{id: fmt.Sprintf("n%d", i), ep: harness.FreeEndpoint(t), raft: raft, dir: t.TempDir()}
		nodes = append(nodes, n)
		peers = append(peers, n.id+"="+raft)
	}
	start := func(n *node) {
		n.p = harness.Broker(t, n.id, n.ep, n.dir, "--raft", "--node-id", n.id, "--raft-bind", n.raft,
			"--peers", strings.Join(peers, ","), "--raft-timeout", "300ms", "--heartbeat", "200ms")
	}
	var eps []string
	for _, n := range nodes {
		start(n)
		eps = append(eps, n.ep)
	}
	brokers := strings.Join(eps, ",")
	cl, err := client.New(client.Config{Brokers: eps, Timeout: 500 * time.Millisecond, Retries: 20})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var tickets []string
	submit := func(n int) {
		for i := range n {
			tk, err := cl.Submit(ctx, "echo", [][]byte{fmt.Appendf(nil, "job %d", len(tickets))}, client.SubmitOptions{IdemKey: fmt.Sprintf("k%d-%d", len(tickets), i)})
			if err != nil {
				t.Fatalf("submit: %v", err)
			}
			tickets = append(tickets, tk)
		}
	}
	submit(20)

	// Find and kill the leader; the others elect a new one.
	out, code := cli(t, "", "cluster", "--broker", brokers)
	if code != 0 || strings.Count(out, "Leader") != 1 || strings.Count(out, "Follower") != 2 {
		t.Fatalf("cluster status: exit %d\n%s", code, out)
	}
	var leader *node
	for _, n := range nodes {
		if strings.Contains(out, n.id+" ") && strings.Contains(lineOf(out, n.ep), "Leader") {
			leader = n
		}
	}
	if leader == nil {
		t.Fatalf("no leader line in\n%s", out)
	}
	leader.p.Kill()
	submit(20)
	start(leader) // it rejoins as a follower and catches up
	submit(5)

	// A fourth node joins, catches up and leaves.
	n4 := &node{id: "n4", ep: harness.FreeEndpoint(t), raft: harness.FreeAddr(t), dir: t.TempDir()}
	n4.p = harness.Broker(t, n4.id, n4.ep, n4.dir, "--raft", "--node-id", "n4", "--raft-bind", n4.raft, "--raft-timeout", "300ms")
	if out, code := cli(t, "", "cluster", "join", "--broker", brokers, "n4", n4.raft); code != 0 || strings.TrimSpace(out) != "ok" {
		t.Fatalf("join: exit %d %q", code, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ = cli(t, "", "cluster", "--broker", brokers+","+n4.ep)
		// Caught up (lag 0), and given its vote: it joined without one,
		// so that a group with a member down keeps its quorum.
		if l := lineOf(out, n4.ep); strings.Contains(l, "Follower") && strings.HasSuffix(strings.TrimSpace(l), " 0") &&
			strings.HasSuffix(strings.TrimSpace(lineOf(out, "n4  "+n4.raft)), "  voter") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n4 did not catch up and get its vote:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, code := cli(t, "", "cluster", "leave", "--broker", brokers, "n4"); code != 0 || strings.TrimSpace(out) != "ok" {
		t.Fatalf("leave: exit %d %q", code, out)
	}
	if out, _ := cli(t, "", "cluster", "--broker", brokers); strings.Contains(out, n4.raft) {
		t.Fatalf("n4 still a member after leave:\n%s", out)
	}

	// Every acknowledged ticket is there and answered once a worker runs.
	harness.Start(t, "worker", "worker running", "worker", "--broker", brokers, "--heartbeat", "200ms", "echo", "--", "cat")
	for i, tk := range tickets {
		rep, err := cl.Reply(ctx, tk, client.ReplyOptions{Wait: true})
		if err != nil {
			t.Fatalf("ticket %d (%s): %v", i, tk, err)
		}
		if got := string(bytes.Join(rep, nil)); got != fmt.Sprintf("job %d", i) {
			t.Fatalf("ticket %d answered %q", i, got)
		}
	}
}

func lineOf(out, needle string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, needle) {
			return l
		}
	}
	return ""
}
