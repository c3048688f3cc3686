package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/store"
)

// rnode is one broker of a replicated deployment on loopback.
type rnode struct {
	name, ep, dir string
	args          []string
	p             *harness.Process
}

func (n *rnode) start(t *testing.T) {
	t.Helper()
	n.p = harness.Broker(t, n.name, n.ep, n.dir, n.args...)
}

// layout makes the nodes of a new deployment, each with a fresh data
// directory and fresh ports.
type layout func(t *testing.T) []*rnode

// groupLayout is a 3-node raft group.
func groupLayout(t *testing.T) []*rnode {
	var nodes []*rnode
	var peers []string
	for i := 1; i <= 3; i++ {
		raft := harness.FreeAddr(t)
		n := &rnode{name: fmt.Sprintf("n%d", i), ep: harness.FreeEndpoint(t), dir: t.TempDir()}
		n.args = []string{"--raft", "--node-id", n.name, "--raft-bind", raft}
		nodes = append(nodes, n)
		peers = append(peers, n.name+"="+raft)
	}
	for _, n := range nodes {
		n.args = append(n.args, "--peers", strings.Join(peers, ","), "--raft-timeout", "300ms", "--heartbeat", "200ms")
	}
	return nodes
}

// pairLayout is a Binary Star pair, both nodes on 127.0.0.1.
func pairLayout(t *testing.T) []*rnode {
	type ports struct{ ep, state, raft string }
	mk := func() ports {
		return ports{harness.FreeEndpoint(t), harness.FreeEndpoint(t), harness.FreeAddr(t)}
	}
	p, b := mk(), mk()
	node := func(role string, self, peer ports) *rnode {
		return &rnode{name: role, ep: self.ep, dir: t.TempDir(), args: []string{
			"--pair", role, "--state-listen", self.state, "--raft-bind", self.raft,
			"--peer-state", peer.state, "--peer-raft", peer.raft, "--peer-listen", peer.ep,
			"--pair-heartbeat", "200ms", "--raft-timeout", "300ms", "--heartbeat", "200ms",
		}}
	}
	return []*rnode{node("primary", p, b), node("backup", b, p)}
}

func endpointsOf(nodes []*rnode) []string {
	var eps []string
	for _, n := range nodes {
		eps = append(eps, n.ep)
	}
	return eps
}

// waitInSync waits until one node leads, the others follow, and every
// node has applied all the leader committed.
func waitInSync(t *testing.T, nodes []*rnode, within time.Duration) {
	t.Helper()
	brokers := strings.Join(endpointsOf(nodes), ",")
	deadline := time.Now().Add(within)
	for {
		out, _ := cli(t, "", "cluster", "--broker", brokers, "--timeout", "1s")
		leaders, synced := 0, 0
		for _, n := range nodes {
			f := strings.Fields(lineOf(out, n.ep))
			if len(f) == 7 && (f[2] == "Leader" || f[2] == "Follower") && f[6] == "0" {
				synced++
				if f[2] == "Leader" {
					leaders++
				}
			}
		}
		if leaders == 1 && synced == len(nodes) {
			return
		}
		if time.Now().After(deadline) {
			var logs strings.Builder
			for _, n := range nodes {
				fmt.Fprintf(&logs, "--- %s\n%s\n", n.name, n.p.Tail())
			}
			t.Fatalf("nodes not in sync within %s:\n%s\n%s", within, out, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ticketState is what a store holds of one ticket.
type ticketState struct {
	state, reply string
}

// readStore reads every ticket's state and reply from a store file (of
// a stopped broker, or a backup).
func readStore(t *testing.T, path string) map[store.ID]ticketState {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer st.Close()
	if err := st.Check(ctx); err != nil {
		t.Fatalf("check %s: %v", path, err)
	}
	out := map[store.ID]ticketState{}
	f := store.Filter{Limit: 1000}
	for {
		page, err := st.List(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range page {
			_, rep, err := st.Reply(ctx, tk.ID)
			if err != nil {
				t.Fatal(err)
			}
			out[tk.ID] = ticketState{tk.State.String(), string(bytes.Join(rep, nil))}
		}
		if len(page) < f.Limit {
			return out
		}
		f.After = page[len(page)-1].ID
	}
}

func TestRestoreGroup(t *testing.T) { testRestore(t, groupLayout) }
func TestRestorePair(t *testing.T)  { testRestore(t, pairLayout) }

// testRestore fills a deployment, backs it up, stops it, restores every
// node of a new deployment (fresh directories, fresh ports) from the
// backup with `titanic restore`, and checks that the new deployment holds
// every ticket of the backup with its state and reply, accepts new
// submits at once, and replicates them: every node ends with the same
// tickets.
func testRestore(t *testing.T, mk layout) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	newClient := func(nodes []*rnode) *client.Client {
		cl, err := client.New(client.Config{Brokers: endpointsOf(nodes), Timeout: 500 * time.Millisecond, Retries: 20})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}

	// The old deployment: answered, pending and closed tickets, and a
	// few hundred log entries (each submit, dispatch and reply is one),
	// more than the new deployment's log will hold when it is checked.
	old := mk(t)
	for _, n := range old {
		n.start(t)
	}
	waitInSync(t, old, 30*time.Second)
	brokers := strings.Join(endpointsOf(old), ",")
	cl := newClient(old)
	worker := harness.Start(t, "worker", "worker running", "worker", "--broker", brokers, "--heartbeat", "200ms", "echo", "--", "cat")
	var echoed []string
	for i := range 80 {
		tk, err := cl.Submit(ctx, "echo", [][]byte{fmt.Appendf(nil, "job %d", i)}, client.SubmitOptions{IdemKey: fmt.Sprintf("echo-%d", i)})
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		echoed = append(echoed, tk)
	}
	for i, tk := range echoed {
		if _, err := cl.Reply(ctx, tk, client.ReplyOptions{Wait: true}); err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
	}
	for _, tk := range echoed[:10] {
		if err := cl.CloseTicket(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 15 {
		if _, err := cl.Submit(ctx, "later", [][]byte{fmt.Appendf(nil, "waiting %d", i)}, client.SubmitOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Filler: a ticket submitted and closed, 40 times. Each call waits
	// for its commit, so each is a log entry of its own however the
	// commit pipeline groups the worker's dispatches and replies with
	// them: with the 105 calls above, at least 185 entries.
	for i := range 40 {
		tk, err := cl.Submit(ctx, "filler", [][]byte{fmt.Appendf(nil, "filler %d", i)}, client.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.CloseTicket(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	worker.Kill()
	out, code := cli(t, "", "backup", "--broker", brokers, "restore-test.db")
	if code != 0 {
		t.Fatalf("backup: exit %d", code)
	}
	backup, _, _ := strings.Cut(out, "\t")
	for _, n := range old {
		if err := n.p.Stop(20 * time.Second); err != nil {
			t.Fatalf("stop %s: %v", n.name, err)
		}
	}
	want := readStore(t, backup)
	if len(want) != 85 {
		t.Fatalf("backup holds %d tickets, want 85", len(want))
	}
	oldApplied := readApplied(t, filepath.Join(old[0].dir, "titanic.db"))
	if oldApplied < 150 {
		t.Fatalf("the old deployment applied only %d entries: too few to show a stale applied index", oldApplied)
	}

	// The new deployment: every node restored from the same backup.
	fresh := mk(t)
	for _, n := range fresh {
		out, code := cli(t, "", "restore", "--data", n.dir, backup)
		if code != 0 || !strings.Contains(out, "85 tickets") || !strings.Contains(out, "cleared") {
			t.Fatalf("restore into %s: exit %d\n%s", n.name, code, out)
		}
	}
	for _, n := range fresh {
		n.start(t)
	}
	waitInSync(t, fresh, 30*time.Second)
	cl = newClient(fresh)
	for id, w := range want {
		st, err := cl.Status(ctx, id.String())
		if err != nil || st.State != w.state {
			t.Fatalf("ticket %s of the backup: %+v %v, want %s", id, st, err, w.state)
		}
		if w.state == "done" {
			rep, err := cl.Reply(ctx, id.String(), client.ReplyOptions{})
			if err != nil || string(bytes.Join(rep, nil)) != w.reply {
				t.Fatalf("reply of %s: %q %v, want %q", id, rep, err, w.reply)
			}
		}
	}
	// New submits are stored at once: a stale applied index would make
	// the store skip the new log's entries ("500 not stored").
	added := map[store.ID]ticketState{}
	for i := range 60 {
		tk, err := cl.Submit(ctx, "after", [][]byte{fmt.Appendf(nil, "new %d", i)}, client.SubmitOptions{IdemKey: fmt.Sprintf("after-%d", i)})
		for try := 0; try < 5 && err != nil && strings.Contains(err.Error(), "leadership lost"); try++ {
			// An election on a loaded machine: the outcome is unknown
			// and the keyed resend is how a client learns it. A stale
			// applied index refuses differently, and every time.
			tk, err = cl.Submit(ctx, "after", [][]byte{fmt.Appendf(nil, "new %d", i)}, client.SubmitOptions{IdemKey: fmt.Sprintf("after-%d", i)})
		}
		if errors.Is(err, client.ErrServer) {
			t.Fatalf("submit %d of the restored deployment refused: %v", i, err)
		}
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		id, err := store.ParseID(tk)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := want[id]; ok {
			t.Fatalf("new submit %d answered with ticket %s of the backup", i, tk)
		}
		added[id] = ticketState{state: "pending"}
	}
	waitInSync(t, fresh, 30*time.Second)
	for _, n := range fresh {
		if err := n.p.Stop(20 * time.Second); err != nil {
			t.Fatalf("stop %s: %v", n.name, err)
		}
	}
	for _, n := range fresh {
		got := readStore(t, filepath.Join(n.dir, "titanic.db"))
		if len(got) != len(want)+len(added) {
			t.Errorf("%s holds %d tickets, want %d from the backup and %d new", n.name, len(got), len(want), len(added))
		}
		for _, m := range []map[store.ID]ticketState{want, added} {
			for id, w := range m {
				if g, ok := got[id]; !ok || g != w {
					t.Errorf("%s: ticket %s is %+v (present %v), want %+v", n.name, id, g, ok, w)
				}
			}
		}
		if applied := readApplied(t, filepath.Join(n.dir, "titanic.db")); applied >= oldApplied {
			t.Errorf("%s applied index %d: not the new log's (the old one ended at %d)", n.name, applied, oldApplied)
		}
	}
}

// readApplied returns the applied index of a stopped broker's store.
func readApplied(t *testing.T, path string) uint64 {
	t.Helper()
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n, err := st.AppliedIndex(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}
