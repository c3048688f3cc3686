package ha

import (
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
)

// memGroup opens a raft group of n members named a, b, c... over
// in-memory transports, all connected, bootstrapped, and closed when
// the test ends.
func memGroup(t *testing.T, n int) (nodes []*replica.Node, trs []*raft.InmemTransport, peers []replica.Peer) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := range n {
		addr, tr := raft.NewInmemTransport("")
		trs = append(trs, tr)
		peers = append(peers, replica.Peer{ID: string(rune('a' + i)), Addr: string(addr)})
	}
	for i, a := range trs {
		for j, b := range trs {
			if i != j {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
	for i := range n {
		dir := t.TempDir()
		st, err := store.Open(filepath.Join(dir, "titanic.db"), store.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		node, err := replica.Open(st, replica.Config{
			ID: peers[i].ID, Dir: filepath.Join(dir, "raft"), Transport: trs[i], Peers: peers, Bootstrap: true,
			HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
			LeaderLeaseTimeout: 150 * time.Millisecond, CommitTimeout: 5 * time.Millisecond, Logger: log,
		})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, node)
		t.Cleanup(func() { _ = node.Close(); _ = st.Close() })
	}
	return nodes, trs, peers
}

// soloLeader is a one-member group (named n1) that leads.
func soloLeader(t *testing.T) *replica.Node {
	t.Helper()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(filepath.Join(dir, "titanic.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	addr, tr := raft.NewInmemTransport("")
	node, err := replica.Open(st, replica.Config{
		ID: "n1", Dir: filepath.Join(dir, "raft"), Transport: tr,
		Peers: []replica.Peer{{ID: "n1", Addr: string(addr)}}, Bootstrap: true,
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond, CommitTimeout: 5 * time.Millisecond, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Close(); _ = st.Close() })
	waitFor(t, "leader", 10*time.Second, node.IsLeader)
	return node
}

// leaderOf waits for a leader among nodes and returns it.
func leaderOf(t *testing.T, nodes []*replica.Node) *replica.Node {
	t.Helper()
	var leader *replica.Node
	waitFor(t, "a leader", 10*time.Second, func() bool {
		for _, n := range nodes {
			if n.IsLeader() {
				leader = n
				return true
			}
		}
		return false
	})
	return leader
}
