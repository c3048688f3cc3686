package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

// TestFirstHourPairWorkerFollowsFailover is a new user's first try of a
// Binary Star pair on one machine, every timing the default: a pair on
// 127.0.0.1, a `titanic worker` and `titanic submit --wait` given both
// endpoints, then the active node is stopped (SIGTERM, a clean stop, as
// in a rolling upgrade; SIGKILL behaves the same). Submits are
// acknowledged by the survivor within about a second (README: "p50 1.19
// s"), but the worker stays on the stopped node until it has heard
// nothing for --heartbeat x liveness (7.5 s): the broker sends its
// workers no DISCONNECT when it stops, and the worker does not act on
// its connection being closed (the client's socket monitor sees it at
// once). Meanwhile every `submit --wait` prints "no worker serves" and
// waits: the jobs stop for 7.5 s on every failover.
func TestFirstHourPairWorkerFollowsFailover(t *testing.T) {
	nodes, brokers := pairOnOneHost(t)
	w := harness.Start(t, "worker", "worker running", "worker", "--broker", brokers, "upper", "--", "tr", "a-z", "A-Z")

	out, code := cli(t, "", "submit", "--wait", "--wait-timeout", "20s", "--broker", brokers, "upper", "before")
	if code != 0 || out != "BEFORE" {
		t.Fatalf("before the failover: %q, exit %d", out, code)
	}
	active, _ := activeOf(t, nodes, brokers)
	if err := active.p.Stop(10 * time.Second); err != nil {
		t.Logf("stop %s: %v", active.name, err)
	}
	start := time.Now()
	out, stderr, code := cliStderr(t, "", "submit", "--wait", "--wait-timeout", "20s", "--broker", brokers, "upper", "after")
	took := time.Since(start)
	if code != 0 || out != "AFTER" {
		t.Fatalf("after the failover: %q, exit %d, stderr %s", out, code, stderr)
	}
	// The survivor takes submits within ~1 s (peer timeout); give the
	// worker as long again.
	if took > 3*time.Second {
		t.Errorf("the first job after the active stopped took %s (stderr: %s); worker log:\n%s",
			took.Round(100*time.Millisecond), strings.TrimSpace(stderr), w.Tail())
	}
}

// pairOnOneHost starts a Binary Star pair on 127.0.0.1, every timing
// the default, each node with its own ports (README's pair on one host),
// and waits until both are in sync. brokers is both client endpoints,
// as --broker takes them.
func pairOnOneHost(t *testing.T) (nodes []*rnode, brokers string) {
	t.Helper()
	type ports struct{ ep, state, raft string }
	mk := func() ports { return ports{harness.FreeEndpoint(t), harness.FreeEndpoint(t), harness.FreeAddr(t)} }
	p, b := mk(), mk()
	node := func(role string, self, peer ports) *rnode {
		return &rnode{name: role, ep: self.ep, dir: t.TempDir(), args: []string{
			"--pair", role, "--state-listen", self.state, "--raft-bind", self.raft,
			"--peer-state", peer.state, "--peer-raft", peer.raft, "--peer-listen", peer.ep,
		}}
	}
	nodes = []*rnode{node("primary", p, b), node("backup", b, p)}
	for _, n := range nodes {
		n.start(t)
	}
	waitInSync(t, nodes, 30*time.Second)
	return nodes, p.ep + "," + b.ep
}

// activeOf returns the pair's active node (raft's leader) and the other.
func activeOf(t *testing.T, nodes []*rnode, brokers string) (active, other *rnode) {
	t.Helper()
	if l := lineOf(mustCLI(t, "cluster", "--broker", brokers), nodes[1].ep); strings.Contains(l, "Leader") {
		return nodes[1], nodes[0]
	}
	return nodes[0], nodes[1]
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, code := cli(t, "", args...)
	if code != 0 {
		t.Fatalf("titanic %v: exit %d", args, code)
	}
	return out
}
