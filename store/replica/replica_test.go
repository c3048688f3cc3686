package replica_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
)

const wait = 15 * time.Second

type member struct {
	id, addr, dir string
	st            *store.BoltStore
	n             *replica.Node
}

// freeAddr returns an address whose port stays this test's until it ends:
// a port picked by listening and closing may be handed out again, to this
// test or another, before its node binds it.
func freeAddr(t *testing.T) string {
	t.Helper()
	return strings.TrimPrefix(harness.ReservedEndpoint(t), "tcp://")
}

func quiet() *slog.Logger {
	if os.Getenv("TITANIC_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func fastConfig(m *member, peers []replica.Peer) replica.Config {
	return replica.Config{
		ID: m.id, Dir: filepath.Join(m.dir, "raft"), Bind: m.addr,
		Peers: peers, Bootstrap: true,
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
		SnapshotThreshold: 16, TrailingLogs: 8, SnapshotInterval: 100 * time.Millisecond,
		Logger: quiet(),
	}
}

func (m *member) open(t *testing.T, peers []replica.Peer) {
	t.Helper()
	st, err := store.Open(filepath.Join(m.dir, "titanic.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	n, err := replica.Open(st, fastConfig(m, peers))
	if err != nil {
		t.Fatal(err)
	}
	m.st, m.n = st, n
}

func (m *member) close() {
	if m.n != nil {
		_ = m.n.Close()
		_ = m.st.Close()
		m.n, m.st = nil, nil
	}
}

func cluster(t *testing.T, size int) ([]*member, []replica.Peer) {
	t.Helper()
	return clusterFrom(t, size, nil)
}

// clusterFrom is cluster whose members' data files start as data (a
// restored backup's bytes), when it is not nil.
func clusterFrom(t *testing.T, size int, data []byte) ([]*member, []replica.Peer) {
	t.Helper()
	var ms []*member
	var peers []replica.Peer
	for i := range size {
		m := &member{id: fmt.Sprintf("n%d", i+1), addr: freeAddr(t), dir: t.TempDir()}
		if data != nil {
			if err := os.WriteFile(filepath.Join(m.dir, "titanic.db"), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		ms = append(ms, m)
		peers = append(peers, replica.Peer{ID: m.id, Addr: m.addr})
	}
	for _, m := range ms {
		m.open(t, peers)
	}
	t.Cleanup(func() {
		for _, m := range ms {
			m.close()
		}
	})
	return ms, peers
}

func leader(t *testing.T, ms []*member) *member {
	t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		for _, m := range ms {
			if m.n != nil && m.n.IsLeader() {
				return m
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no leader within %s", wait)
	return nil
}

// follower returns a member of ms other than l.
func follower(ms []*member, l *member) *member {
	for _, m := range ms {
		if m != l {
			return m
		}
	}
	return nil
}

func submitOp(service string) store.Op {
	return store.Op{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(), Service: service, Body: [][]byte{[]byte("b")}}
}

// applySome submits n tickets through the leader and returns their IDs.
// A submit whose outcome was unknown (leadership lost) is sent again, and
// then "already used" means the first one was applied.
func applySome(t *testing.T, ms []*member, n int) []store.ID {
	t.Helper()
	var ids []store.ID
	for range n {
		op := submitOp("s")
		for resent := false; ; resent = true {
			l := leader(t, ms)
			res, err := l.n.Apply(context.Background(), []store.Op{op})
			if err == nil {
				if res[0].Err != nil && !(resent && errors.Is(res[0].Err, store.ErrInvalidOp) && strings.Contains(res[0].Err.Error(), "already used")) {
					t.Fatal(res[0].Err)
				}
				ids = append(ids, op.ID)
				break
			}
			if !errors.Is(err, replica.ErrNotLeader) && !errors.Is(err, replica.ErrUncertain) {
				t.Fatal(err)
			}
		}
	}
	return ids
}

// hasAll waits until m's store holds every id.
func hasAll(t *testing.T, m *member, ids []store.ID) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for _, id := range ids {
		for {
			_, err := m.st.Get(context.Background(), id)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: ticket %s not replicated within %s: %v", m.id, id, wait, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func pending(t *testing.T, m *member) int {
	t.Helper()
	st, err := m.st.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Services["s"].Pending
}

func TestReplicateAndFailover(t *testing.T) {
	ms, _ := cluster(t, 3)
	l := leader(t, ms)
	for _, m := range ms {
		if m != l {
			if _, err := m.n.Apply(context.Background(), []store.Op{submitOp("s")}); !errors.Is(err, replica.ErrNotLeader) {
				t.Fatalf("apply on follower %s: %v, want ErrNotLeader", m.id, err)
			}
		}
	}
	ids := applySome(t, ms, 20)
	for _, m := range ms {
		hasAll(t, m, ids)
	}
	// Lose the leader: another takes over with everything.
	l.close()
	ids = append(ids, applySome(t, ms, 20)...)
	nl := leader(t, ms)
	if nl == l {
		t.Fatal("closed node still leader")
	}
	hasAll(t, nl, ids)
	// The old leader restarts and catches up; nothing is applied twice.
	l.open(t, nil)
	hasAll(t, l, ids)
	for _, m := range ms {
		deadline := time.Now().Add(wait)
		for pending(t, m) != len(ids) {
			if time.Now().After(deadline) {
				t.Fatalf("%s holds %d pending tickets, want %d", m.id, pending(t, m), len(ids))
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := m.st.Check(context.Background()); err != nil {
			t.Fatalf("%s: %v", m.id, err)
		}
	}
	st := nl.n.Status()
	if st.State != "Leader" || st.CommitIndex == 0 || st.Term == 0 {
		t.Fatalf("status = %+v", st)
	}
}

// A node whose data file is lost catches up from a snapshot.
func TestCatchUpFromSnapshot(t *testing.T) {
	ms, _ := cluster(t, 3)
	ids := applySome(t, ms, 10)
	f := follower(ms, leader(t, ms))
	f.close()
	// Enough entries that the log is compacted past what f has.
	ids = append(ids, applySome(t, ms, 60)...)
	f.dir = t.TempDir() // a new, empty node under the same ID and address
	f.open(t, nil)
	hasAll(t, f, ids)
	if p := pending(t, f); p != len(ids) {
		t.Fatalf("caught-up node holds %d tickets, want %d", p, len(ids))
	}
}

// The Binary Star survivor reforms raft alone, keeps committing, and takes
// its peer back.
func TestReformAlone(t *testing.T) {
	ms, _ := cluster(t, 2)
	ids := applySome(t, ms, 10)
	var dead, alive *member = ms[0], ms[1]
	if alive.n.IsLeader() {
		dead, alive = alive, dead
	}
	dead.close()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	// Two voters, one gone: no quorum until the survivor reforms.
	if err := alive.n.Reform(ctx); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, applySome(t, []*member{alive}, 30)...)
	if p := pending(t, alive); p != len(ids) {
		t.Fatalf("survivor holds %d, want %d", p, len(ids))
	}
	// The peer returns and is added back; it catches up.
	dead.open(t, nil)
	if err := alive.n.AddVoter(ctx, dead.id, dead.addr); err != nil {
		t.Fatal(err)
	}
	hasAll(t, dead, ids)
	mem, err := alive.n.Members()
	if err != nil || len(mem) != 2 {
		t.Fatalf("members = %+v, %v", mem, err)
	}
	ids = append(ids, applySome(t, ms, 5)...)
	hasAll(t, dead, ids)
}

// TestOpenRemovesUnfinishedSnapshots: a crash while raft wrote a snapshot
// leaves its ".tmp" directory, a copy of the store that raft never lists
// nor deletes. Open removes it, and keeps the finished snapshots and every
// ticket.
func TestOpenRemovesUnfinishedSnapshots(t *testing.T) {
	ms, peers := cluster(t, 1)
	m := ms[0]
	leader(t, ms)
	ids := applySome(t, ms, 40) // past SnapshotThreshold: raft snapshots
	snapDir := filepath.Join(m.dir, "raft", "snapshots")
	finished := func() []string {
		entries, err := os.ReadDir(snapDir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			if e.IsDir() && !strings.HasSuffix(e.Name(), ".tmp") {
				names = append(names, e.Name())
			}
		}
		return names
	}
	deadline := time.Now().Add(wait)
	for len(finished()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no raft snapshot within %s", wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
	m.close()
	kept := finished()
	tmp := filepath.Join(snapDir, "7-999-1700000000000.tmp")
	if err := os.MkdirAll(tmp, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "state.bin"), make([]byte, 1<<20), 0o640); err != nil {
		t.Fatal(err)
	}

	m.open(t, peers)
	if _, err := os.Stat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the unfinished snapshot is still there after Open: %v", err)
	}
	for _, name := range kept {
		if _, err := os.Stat(filepath.Join(snapDir, name)); err != nil {
			t.Errorf("finished snapshot %s: %v", name, err)
		}
	}
	leader(t, ms)
	hasAll(t, m, ids)
}

// TestRestartPastSnapshotOfBarriersKeepsFile: raft labels a snapshot with
// its last applied index, which counts entries the store never sees
// (no-ops, barriers), so a node restarted with such a snapshot as its
// newest finds its store "behind" it and restores it at start. The
// snapshot holds what the store does: the store's file stays, not
// replaced by the copy (which carries the file's free pages of the day
// it was taken: a file `titanic compact` shrank since grew back, once,
// in TestPairCompactPassive).
func TestRestartPastSnapshotOfBarriersKeepsFile(t *testing.T) {
	ms, _ := cluster(t, 1)
	m := ms[0]
	ids := applySome(t, ms, 5)
	ctx := context.Background()
	applied, err := m.st.AppliedIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Barriers only: the log grows past the snapshot threshold (16) and
	// raft snapshots at an index the store never applied.
	deadline := time.Now().Add(wait)
	for replica.SnapshotIndex(m.n) <= applied {
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot past the store's applied index %d within %s (newest %d)", applied, wait, replica.SnapshotIndex(m.n))
		}
		if err := m.n.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if a, err := m.st.AppliedIndex(ctx); err != nil || a != applied {
		t.Fatalf("store applied index %d after barriers (%v), want %d still", a, err, applied)
	}
	path := filepath.Join(m.dir, "titanic.db")
	m.close()
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	m.open(t, nil)
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Fatal("the restart restored a snapshot level with the store over its file")
	}
	hasAll(t, m, ids)
}

// A node whose latest snapshot is past its log's last entry (raft installs
// a snapshot without moving its last log entry) starts at the snapshot:
// a configuration inside it is from before the start, and counts for
// nothing the pair asks of a configuration received since (see
// SnapshotVoterTerm).
func TestStartIndexCountsSnapshotPastLog(t *testing.T) {
	ms, _ := cluster(t, 3)
	applySome(t, ms, 40)
	l := leader(t, ms)
	f := follower(ms, l)
	f.close()
	applySome(t, ms, 20)
	// The leader's snapshot covers its whole log, and nothing follows
	// it: the returning node gets the snapshot and no entry after it.
	if err := replica.TakeSnapshot(l.n); err != nil {
		t.Fatal(err)
	}
	f.dir = t.TempDir() // an empty node under the same ID and address
	f.open(t, nil)
	deadline := time.Now().Add(wait)
	for replica.SnapshotIndex(f.n) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s installed no snapshot within %s", f.id, wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
	snap := replica.SnapshotIndex(f.n)
	f.close()
	f.open(t, nil)
	if got := f.n.StartIndex(); got < snap {
		t.Fatalf("StartIndex %d after a restart over a snapshot at %d: the snapshot's configuration would count as one received since the start", got, snap)
	}
}
