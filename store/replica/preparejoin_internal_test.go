package replica

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/store"
)

// PrepareJoin's snapshot compacts the whole log even when its caller's
// deadline ends first (found by a review). PrepareJoin makes a new
// member of a cluster whose log still starts at index 1 (a store restored
// from a backup: tickets no entry made) catch up from a snapshot, by
// taking one with raft's TrailingLogs set to 0 so that the log is
// compacted whole. It returns at its caller's deadline while "raft goes
// on with the snapshot: the joining node asks again, and then finds it
// done". But raft reads TrailingLogs when it compacts, after the copy,
// and PrepareJoin's deferred ReloadConfig has put the normal value (10240)
// back by then: the log is not compacted, it still starts at 1, and the
// next join does not find it done but takes another whole snapshot,
// again past the deadline (the admin's 10 s; a copy of a store of
// gigabytes takes longer): every try of the member costs a copy of the
// whole store and none lets it join, until the cluster has written
// TrailingLogs entries. Here the deadline has passed when the snapshot
// starts; once raft has finished that snapshot, the log must be compacted.
//
// A restored store now bootstraps raft from a snapshot of itself (see
// restoredIndex), so its log never starts at 1; a log that does is one
// started before that (a restore by an earlier release), or a new
// cluster's: here the tickets go through the log of a cluster bootstrapped
// over an empty store, which leaves the log starting at 1 as before.
func TestPrepareJoinSnapshotCompactsAfterDeadline(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "titanic.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	addr, trans := raft.NewInmemTransport("")
	n, err := Open(st, Config{
		ID: "a", Dir: filepath.Join(dir, "raft"), Transport: trans,
		Peers: []Peer{{ID: "a", Addr: string(addr)}}, Bootstrap: true,
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for deadline := time.Now().Add(10 * time.Second); !n.IsLeader(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
	}
	ops := make([]store.Op, 0, 100)
	for range 100 {
		ops = append(ops, store.Op{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(), Service: "s", Body: [][]byte{make([]byte, 1000)}})
	}
	if _, err := n.Apply(context.Background(), ops); err != nil {
		t.Fatal(err)
	}
	if first, _ := n.logs.FirstIndex(); first != 1 {
		t.Fatalf("log starts at %d before the join, want 1", first)
	}

	// The joining member's request whose deadline ends while the
	// snapshot is written.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := n.PrepareJoin(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("PrepareJoin: %v, want the caller's context error (the snapshot still being written)", err)
	}
	// Raft goes on with the snapshot.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if m, ok := n.latestRealSnapshot(); ok && m.Index > 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("raft took no snapshot after PrepareJoin")
		}
	}
	// Compaction follows the snapshot.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		first, _ := n.logs.FirstIndex()
		if first != 1 { // 0: compacted whole, nothing after
			break
		}
		if time.Now().After(deadline) {
			last, _ := n.logs.LastIndex()
			t.Fatalf("5 s after the snapshot PrepareJoin asked for, the raft log still starts at index 1 (last %d): TrailingLogs was back at %d when raft compacted, so the next join does not find this snapshot done: it takes another copy of the whole store, and past the deadline again the member is refused again",
				last, n.raft().ReloadableConfig().TrailingLogs)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		tl := n.raft().ReloadableConfig().TrailingLogs
		if tl == n.cfg.TrailingLogs {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("raft's TrailingLogs %d 5 s after the join's snapshot, want the configured %d back", tl, n.cfg.TrailingLogs)
		}
	}
}
