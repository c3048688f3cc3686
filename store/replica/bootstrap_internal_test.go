package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/store"
)

// A bootstrap from the store (a restored backup) that stops after any of
// its steps, a crash, must leave a node that, started again, finishes it:
// raft's snapshot of the store at restoredIndex, the restored tickets
// kept, and leadership in a term past restoredTerm, a term no leader
// writes in (see restoredTerm). It failed while the snapshot was written
// before the term (found by a review): a node stopped between the two
// had a snapshot and a current term of 0, so its first election was of
// term 1, and a member that is the only voter led in it at once (in a
// group, any restored member would grant its vote in term 1, having
// cast none there).
func TestBootstrapFromStoreStoppedAtEveryStep(t *testing.T) {
	steps := len((&Node{}).bootstrapSteps(context.Background(), raft.Configuration{}, nil))
	for stop := 0; stop <= steps; stop++ {
		t.Run(fmt.Sprintf("after%d", stop), func(t *testing.T) { bootstrapStoppedAt(t, stop) })
	}
}

// bootstrapStoppedAt runs the first stop steps of a bootstrap from a
// restored store of one voter, then opens the node as the broker does
// and checks it.
func bootstrapStoppedAt(t *testing.T, stop int) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "titanic.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var ops []store.Op
	for range 5 {
		ops = append(ops, store.Op{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(), Service: "s", Body: [][]byte{[]byte("b")}})
	}
	if _, err := st.Apply(ctx, ops); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ResetReplication(ctx); err != nil { // as titanic restore leaves it
		t.Fatal(err)
	}
	addr, trans := raft.NewInmemTransport("")
	cfg := Config{
		ID: "a", Dir: filepath.Join(dir, "raft"), Transport: trans,
		Peers: []Peer{{ID: "a", Addr: string(addr)}}, Bootstrap: true,
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}

	// The steps, as far as stop, on the node as Open makes it.
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		t.Fatal(err)
	}
	logs, err := openLogStore(cfg.Dir)
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{cfg: cfg, st: st, log: cfg.Logger, logs: logs}
	n.fsm = &fsm{st: st, log: n.log}
	if n.snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.Dir, snapshotRetain, n.hclog()); err != nil {
		t.Fatal(err)
	}
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: "a", Address: addr}}}
	for _, step := range n.bootstrapSteps(ctx, conf, trans)[:stop] {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
	}
	if err := logs.Close(); err != nil {
		t.Fatal(err)
	}

	n, err = Open(st, cfg)
	if err != nil {
		t.Fatalf("open after the bootstrap stopped after %d steps: %v", stop, err)
	}
	defer n.Close()
	for deadline := time.Now().Add(10 * time.Second); !n.IsLeader(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("bootstrap stopped after %d steps: no leader within 10s (term %d)", stop, n.Status().Term)
		}
	}
	if term := n.Status().Term; term <= restoredTerm {
		t.Errorf("bootstrap stopped after %d steps: the node leads in term %d, the restored snapshot's (%d), in which no leader may write", stop, term, restoredTerm)
	}
	if m, ok := n.newestRealSnapshot(); !ok || m.Index != restoredIndex || m.Term != restoredTerm {
		t.Errorf("bootstrap stopped after %d steps: newest snapshot %+v, want the store's at index %d, term %d", stop, m, restoredIndex, restoredTerm)
	}
	for _, op := range ops {
		if _, err := st.Get(ctx, op.ID); err != nil {
			t.Fatalf("bootstrap stopped after %d steps: restored ticket %s: %v", stop, op.ID, err)
		}
	}
	if _, err := n.Apply(ctx, []store.Op{{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(), Service: "s", Body: [][]byte{[]byte("b")}}}); err != nil {
		t.Fatalf("bootstrap stopped after %d steps: apply: %v", stop, err)
	}
}

// A restored store (its history starts at restoredIndex, in
// restoredTerm) sent a snapshot of a log that began without it (a group
// of empty members that compacted its log before the restored member
// came) stops as diverged, as the log guard stops it when the entries
// themselves come (TestLoneRestoredMemberDivergesLoudly), and says so:
// not "forked from its peer", which sends the operator after a split
// brain, but errNotFromSnapshot's restore of one member only.
func TestRestoredStoreRefusesSnapshotOfAnotherLog(t *testing.T) {
	ctx := context.Background()
	restored, f := openFSM(t)
	if res := restored.ApplyLog(ctx, []store.Entry{{Index: restoredIndex, Term: restoredTerm}}); res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	other, _ := openFSM(t)
	op := store.Op{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(), Service: "s", Body: [][]byte{[]byte("b")}}
	if res := other.ApplyLog(ctx, []store.Entry{{Index: 1, Term: 1}, {Index: 3, Term: 2, Ops: []store.Op{op}}}); res[0].Err != nil || res[1].Err != nil {
		t.Fatal(res[0].Err, res[1].Err)
	}
	var snap bytes.Buffer
	if _, err := other.Snapshot(ctx, &snap); err != nil {
		t.Fatal(err)
	}
	err := f.Restore(io.NopCloser(&snap))
	if !errors.Is(err, store.ErrDiverged) || !errors.Is(err, errNotFromSnapshot) {
		t.Fatalf("restore of another log's snapshot over a restored store: %v; want store.ErrDiverged, as errNotFromSnapshot", err)
	}
	if _, err := restored.Get(ctx, op.ID); err == nil {
		t.Fatal("the restored store took the other log's ticket")
	}
}
