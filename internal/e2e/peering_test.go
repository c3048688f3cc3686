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

// peerCluster is one cluster of a peering test: a broker and its peering
// endpoints.
type peerCluster struct {
	name, ep, cloud, state, dir string
	p                           *harness.Process
}

func newPeerClusters(t *testing.T, names ...string) []*peerCluster {
	var cs []*peerCluster
	for _, n := range names {
		cs = append(cs, &peerCluster{name: n, ep: harness.FreeEndpoint(t), cloud: harness.FreeEndpoint(t),
			state: harness.FreeEndpoint(t), dir: t.TempDir()})
	}
	return cs
}

// start runs c's broker, peered with the others of all; extra are more
// broker flags.
func (c *peerCluster) start(t *testing.T, all []*peerCluster, extra ...string) {
	var peers []string
	for _, o := range all {
		if o != c {
			peers = append(peers, o.name+"="+o.cloud+"+"+o.state)
		}
	}
	c.p = harness.Broker(t, c.name, c.ep, c.dir, append([]string{"--peering-name", c.name,
		"--peering-cloud-listen", c.cloud, "--peering-state-listen", c.state,
		"--peering-peers", strings.Join(peers, ",")}, append(extra, fastBroker...)...)...)
}

// TestPeeringOnLoopback: cluster A has no worker for "who"; B and C do.
// Tickets submitted at A are all answered by B's and C's workers; with B's
// only worker held busy, they go to C; C's broker killed mid-flight: every
// acknowledged ticket is still answered, by B (redelivered), none lost.
// (The same with each cluster on its own network namespace is in
// internal/failover.)
func TestPeeringOnLoopback(t *testing.T) {
	cs := newPeerClusters(t, "A", "B", "C")
	for _, c := range cs {
		c.start(t, cs)
	}
	a, b, c := cs[0], cs[1], cs[2]
	// Workers answer "CLUSTER:body"; a body starting with "hold" keeps
	// the worker busy for 3 s first.
	work := func(cluster string) []string {
		return []string{"sh", "-c", `read -r x; case "$x" in hold*) sleep 3;; esac; printf '` + cluster + `:%s' "$x"`}
	}
	harness.Start(t, "worker-b", "worker running", append([]string{"worker", "--broker", b.ep, "--heartbeat", "200ms", "who", "--"}, work("B")...)...)
	workerC := harness.Start(t, "worker-c", "worker running", append([]string{"worker", "--broker", c.ep, "--heartbeat", "200ms", "who", "--"}, work("C")...)...)

	cl, err := client.New(client.Config{Brokers: []string{a.ep}, Timeout: time.Second, Retries: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	submit := func(n int, prefix string) []string {
		var tks []string
		for i := range n {
			tk, err := cl.Submit(ctx, "who", [][]byte{fmt.Appendf(nil, "%s%d", prefix, i)}, client.SubmitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tks = append(tks, tk)
		}
		return tks
	}
	answers := func(tks []string, prefix string) map[string]int {
		by := map[string]int{}
		for i, tk := range tks {
			rep, err := cl.Reply(ctx, tk, client.ReplyOptions{Wait: true})
			if err != nil {
				t.Fatalf("ticket %d: %v\nA:\n%s", i, err, a.p.Tail())
			}
			got := string(bytes.Join(rep, nil))
			who, body, _ := strings.Cut(got, ":")
			if body != fmt.Sprintf("%s%d", prefix, i) {
				t.Fatalf("ticket %d answered %q", i, got)
			}
			by[who]++
		}
		return by
	}
	by := answers(submit(20, "x"), "x")
	if by["B"]+by["C"] != 20 {
		t.Fatalf("answers by cluster: %v; want all 20 from B and C", by)
	}
	t.Logf("A's tickets answered by: %v", by)

	// B's only worker is held by B's own long job: A's work goes to C.
	bcl, err := client.New(client.Config{Brokers: []string{b.ep}, Timeout: time.Second, Retries: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer bcl.Close()
	hold, err := bcl.Submit(ctx, "who", [][]byte{[]byte("hold")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, ctx, bcl, hold, "dispatched")
	// B publishes its capacity within 100 ms of a change; A's view of it
	// is not observable from outside, so give it that time.
	time.Sleep(500 * time.Millisecond)
	by = answers(submit(10, "y"), "y")
	if by["C"] != 10 {
		t.Fatalf("with B's worker busy: %v; want all 10 from C", by)
	}

	// C's worker holds a long job of A's and C's broker is killed: the
	// job comes back to A when C goes silent and B answers it.
	tks := submit(1, "hold")
	waitState(t, ctx, cl, tks[0], "dispatched")
	time.Sleep(200 * time.Millisecond) // let it reach C's worker
	c.p.Kill()
	workerC.Kill()
	by = answers(tks, "hold")
	if by["B"] != 1 {
		t.Fatalf("after C died: %v; want B to answer", by)
	}
	st, err := cl.Status(ctx, tks[0])
	if err != nil || st.Attempts < 2 {
		t.Fatalf("redelivered ticket: %+v %v", st, err)
	}
}

// waitState waits until ticket is in state.
func waitState(t *testing.T, ctx context.Context, cl *client.Client, ticket, state string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := cl.Status(ctx, ticket)
		if err == nil && st.State == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ticket %s not %s within 20s: %+v %v", ticket, state, st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
