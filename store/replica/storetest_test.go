package replica_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/store/storetest"
)

// The store contract's suite runs against the leader of a one-node raft
// and of a three-node group, over raft's in-memory transport. Snapshots
// are frequent, so that the suite's ops also go through log compaction
// and a reopened node starts from a snapshot.

func TestConformanceOneNode(t *testing.T) {
	storetest.Run(t, groupHarness(1, replica.Config{
		HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond,
	}))
}

func TestConformanceGroup(t *testing.T) {
	// Timings with room for a loaded machine: a leader that loses its
	// term in the middle of the suite fails it.
	storetest.Run(t, groupHarness(3, replica.Config{
		HeartbeatTimeout: time.Second, ElectionTimeout: time.Second,
		LeaderLeaseTimeout: time.Second,
	}))
}

// memGroup is a raft group in this process; its members are replaced
// when it is reopened.
type memGroup struct {
	timing  replica.Config
	ids     []string
	addrs   []raft.ServerAddress
	dirs    []string
	trans   []*raft.InmemTransport
	bolts   []*store.BoltStore
	nodes   []*replica.Node
	stopped bool
}

func groupHarness(size int, timing replica.Config) storetest.Harness {
	groups := map[store.Store]*memGroup{}
	return storetest.Harness{
		Open: func(t *testing.T) store.Store {
			g := &memGroup{timing: timing}
			for i := range size {
				g.ids = append(g.ids, fmt.Sprintf("n%d", i+1))
				g.addrs = append(g.addrs, raft.NewInmemAddr())
				g.dirs = append(g.dirs, t.TempDir())
			}
			t.Cleanup(g.stop)
			g.start(t)
			l := g.leader(t)
			groups[l] = g
			raiseClusterVersion(t, l)
			return l
		},
		Reopen: func(t *testing.T, s store.Store) store.Store {
			g := groups[s]
			g.stop()
			g.start(t)
			l := g.leader(t)
			groups[l] = g
			return l
		},
	}
}

// raiseClusterVersion makes l's group take every op kind this build
// writes, as a cluster whose members all run it does.
func raiseClusterVersion(t *testing.T, l *replica.Node) {
	t.Helper()
	if err := l.Announce(t.Context(), replica.Announcement{ClusterVersion: store.OpsRecordVersion}); err != nil {
		t.Fatalf("announce cluster version: %v", err)
	}
	if v, err := l.ClusterVersion(t.Context()); err != nil || v != store.OpsRecordVersion {
		t.Fatalf("cluster version %d (%v) after its announcement, want %d", v, err, store.OpsRecordVersion)
	}
}

// start opens every member's store and node, connected to each other.
func (g *memGroup) start(t *testing.T) {
	t.Helper()
	g.stopped = false
	g.trans, g.bolts, g.nodes = nil, nil, nil
	var peers []replica.Peer
	for i, id := range g.ids {
		_, tr := raft.NewInmemTransport(g.addrs[i])
		g.trans = append(g.trans, tr)
		peers = append(peers, replica.Peer{ID: id, Addr: string(g.addrs[i])})
	}
	for _, a := range g.trans {
		for _, b := range g.trans {
			if a != b {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
	for i, id := range g.ids {
		st, err := store.Open(filepath.Join(g.dirs[i], "titanic.db"), store.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		cfg := g.timing
		cfg.ID, cfg.Dir, cfg.Peers, cfg.Bootstrap = id, filepath.Join(g.dirs[i], "raft"), peers, true
		cfg.Transport, cfg.Logger = g.trans[i], quiet()
		cfg.CommitTimeout = 5 * time.Millisecond
		cfg.SnapshotThreshold, cfg.TrailingLogs, cfg.SnapshotInterval = 64, 16, 200*time.Millisecond
		n, err := replica.Open(st, cfg)
		if err != nil {
			_ = st.Close()
			t.Fatal(err)
		}
		g.bolts, g.nodes = append(g.bolts, st), append(g.nodes, n)
	}
}

// stop closes every member (the suite may have closed the leader's node
// already: Node.Close is idempotent).
func (g *memGroup) stop() {
	if g.stopped {
		return
	}
	g.stopped = true
	for i := range g.nodes {
		_ = g.nodes[i].Close()
		if err := g.bolts[i].Check(context.Background()); err != nil && !errors.Is(err, store.ErrClosed) {
			panic(fmt.Sprintf("%s: store check: %v", g.ids[i], err))
		}
		_ = g.bolts[i].Close()
		_ = g.trans[i].Close()
	}
}

// leader waits for a member to lead, as told by the nodes' leadership
// notifications.
func (g *memGroup) leader(t *testing.T) *replica.Node {
	t.Helper()
	timeout := time.After(wait)
	for {
		for _, n := range g.nodes {
			if n.IsLeader() {
				return n
			}
		}
		// Block until some node's leadership changes.
		changed := make(chan struct{}, len(g.nodes))
		done := make(chan struct{})
		for _, n := range g.nodes {
			go func() {
				select {
				case <-n.LeaderCh():
					changed <- struct{}{}
				case <-done:
				}
			}()
		}
		select {
		case <-changed:
			close(done)
		case <-timeout:
			close(done)
			t.Fatalf("no leader among %v within %s", g.ids, wait)
		}
	}
}
