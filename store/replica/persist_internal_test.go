package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/store"
)

// gateSink is a raft snapshot sink whose third write (the first of the
// data pages, after bbolt's two meta pages) reports started and waits
// for release: a copy caught in the middle.
type gateSink struct {
	writes   int
	written  int64
	started  chan struct{} // closed at the third write
	release  chan struct{}
	canceled bool
	closed   bool
}

func (s *gateSink) Write(p []byte) (int, error) {
	s.writes++
	if s.writes == 3 {
		close(s.started)
		<-s.release
	}
	s.written += int64(len(p))
	return len(p), nil
}

func (s *gateSink) Close() error  { s.closed = true; return nil }
func (s *gateSink) ID() string    { return "gate" }
func (s *gateSink) Cancel() error { s.canceled = true; return nil }

// persistHeld starts persisting a snapshot of st and returns once the
// copy is held in the middle (until sink.release is closed).
func persistHeld(t *testing.T, st *store.BoltStore) (*fsm, *gateSink, <-chan error) {
	t.Helper()
	f := &fsm{st: st}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &gateSink{started: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- snap.Persist(sink) }()
	<-sink.started
	return f, sink, done
}

// TestAbortPersistsEndsSnapshotCopy: raft's Shutdown waits for a
// snapshot being persisted, a copy of the whole store; abortPersists
// (Reform calls it before it stops raft) makes that copy fail at its
// next write, so a failover does not wait for the rest of it.
func TestAbortPersistsEndsSnapshotCopy(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "titanic.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	body := [][]byte{make([]byte, 1000)}
	ops := make([]store.Op, 0, 2000)
	for range 2000 {
		ops = append(ops, store.Op{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(), Service: "s", Body: body})
	}
	if _, err := st.Apply(context.Background(), ops); err != nil {
		t.Fatal(err)
	}
	size, err := st.Snapshot(context.Background(), discard{})
	if err != nil {
		t.Fatal(err)
	}

	f, sink, done := persistHeld(t, st)
	f.abortPersists()
	close(sink.release)
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Persist did not return after abortPersists")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Persist after abortPersists: %v; want context.Canceled", err)
	}
	if !sink.canceled || sink.closed {
		t.Fatalf("sink canceled %v, closed %v; want canceled, not closed", sink.canceled, sink.closed)
	}
	if sink.written >= size {
		t.Fatalf("%d bytes of %d copied: the copy was not cut short", sink.written, size)
	}

	// A snapshot taken after the abort copies the whole store.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	whole := &gateSink{started: make(chan struct{}), release: make(chan struct{})}
	close(whole.release)
	if err := snap.Persist(whole); err != nil {
		t.Fatalf("Persist of a snapshot taken after the abort: %v", err)
	}
	if whole.written != size || !whole.closed {
		t.Fatalf("after the abort: %d of %d bytes, closed %v", whole.written, size, whole.closed)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestReformSnapshotsNotReaped: the placeholder a reform writes deletes no
// older snapshot (each a copy of the store, on the failover's path); the
// next snapshot written through the node's store deletes them.
func TestReformSnapshotsNotReaped(t *testing.T) {
	dir := t.TempDir()
	logger := hclog.NewNullLogger()
	base, err := raft.NewFileSnapshotStoreWithLogger(dir, snapshotRetain, logger)
	if err != nil {
		t.Fatal(err)
	}
	keep, err := raft.NewFileSnapshotStoreWithLogger(dir, keepAll, logger)
	if err != nil {
		t.Fatal(err)
	}
	_, trans := raft.NewInmemTransport("")
	write := func(s raft.SnapshotStore, index uint64) {
		t.Helper()
		sink, err := s.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 1, trans)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sink.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := sink.Close(); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int {
		t.Helper()
		l, err := keep.List() // base lists no more than it retains
		if err != nil {
			t.Fatal(err)
		}
		return len(l)
	}
	write(base, 10)
	write(base, 20)
	write(unreaped{SnapshotStore: base, create: keep}, 30) // the reform's placeholder
	if n := count(); n != 3 {
		t.Fatalf("%d snapshots after the placeholder; want 3 (none deleted)", n)
	}
	write(base, 40)
	if n := count(); n != snapshotRetain {
		t.Fatalf("%d snapshots after the next one; want %d", n, snapshotRetain)
	}
}

// countingLog counts the entries read from it.
type countingLog struct {
	raft.LogStore
	reads int
}

func (c *countingLog) GetLog(index uint64, l *raft.Log) error {
	c.reads++
	return c.LogStore.GetLog(index, l)
}

// TestKeptLogSkipsAppliedEntries: a reform reads from the log only the
// entries the store has not applied, and the last one (whose index and
// term its snapshot takes), as RecoverCluster's replay walks it.
func TestKeptLogSkipsAppliedEntries(t *testing.T) {
	mem := raft.NewInmemStore()
	for i := uint64(1); i <= 150; i++ {
		if err := mem.StoreLog(&raft.Log{Index: i, Term: 3, Type: raft.LogCommand, Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ applied, reads uint64 }{{0, 150}, {100, 50}, {150, 1}} {
		c := &countingLog{LogStore: mem}
		k := keptLog{LogStore: c, applied: tc.applied, last: 150}
		var l raft.Log
		for i := uint64(1); i <= 150; i++ {
			if err := k.GetLog(i, &l); err != nil {
				t.Fatal(err)
			}
			if l.Index != i {
				t.Fatalf("entry %d read as %d", i, l.Index)
			}
		}
		if l.Term != 3 || l.Type != raft.LogCommand {
			t.Fatalf("applied %d: the last entry read as term %d, type %v; want the real one", tc.applied, l.Term, l.Type)
		}
		if uint64(c.reads) != tc.reads {
			t.Fatalf("applied %d: %d entries read; want %d", tc.applied, c.reads, tc.reads)
		}
	}
}

// TestReformAppliesItsReplayTogether: the entries a reform replays that
// the store has not applied go to the store in one commit, marked solo,
// not one commit (two fsyncs) each.
func TestReformAppliesItsReplayTogether(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(filepath.Join(t.TempDir(), "titanic.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f := &fsm{st: st, log: slog.New(slog.DiscardHandler), fatal: make(chan error, 1)}
	hist, err := st.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := &recovering{fsm: f, hist: hist}
	var ids []store.ID
	for i := uint64(1); i <= 40; i++ {
		op := store.Op{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(), Service: "s", Body: [][]byte{[]byte("x")}}
		ids = append(ids, op.ID)
		_ = r.Apply(&raft.Log{Index: i, Term: 2, Type: raft.LogCommand, Data: store.EncodeOps([]store.Op{op})})
	}
	before, err := st.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	after, err := st.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := after.Commits - before.Commits; c != 1 {
		t.Fatalf("the replay's 40 entries took %d store commits; want 1", c)
	}
	for _, id := range ids {
		if _, err := st.Get(ctx, id); err != nil {
			t.Fatalf("replayed ticket %s: %v", id, err)
		}
	}
	if applied, err := st.AppliedIndex(ctx); err != nil || applied != 40 {
		t.Fatalf("store applied %d (%v); want 40", applied, err)
	}
	// Marked solo: the store's journal hands them over after a split.
	solo := 0
	if err := st.ForkOps(ctx, 0, 1<<20, func(ops []store.Op) error { solo += len(ops); return nil }); err != nil || solo != 40 {
		t.Fatalf("%d ops in the solo journal (%v); want 40", solo, err)
	}
}

// rangesLog records the ranges deleted from it.
type rangesLog struct {
	raft.LogStore
	ranges [][2]uint64
}

func (r *rangesLog) DeleteRange(lo, hi uint64) error {
	r.ranges = append(r.ranges, [2]uint64{lo, hi})
	return r.LogStore.DeleteRange(lo, hi)
}

// TestCompactionInChunks: raft's compaction of the log's head goes to the
// log store compactChunk entries per delete (each its own write
// transaction, so appends go between them); a truncation of the tail
// stays one delete.
func TestCompactionInChunks(t *testing.T) {
	mem := raft.NewInmemStore()
	for i := uint64(1); i <= 5000; i++ {
		if err := mem.StoreLog(&raft.Log{Index: i, Term: 1, Type: raft.LogCommand}); err != nil {
			t.Fatal(err)
		}
	}
	rl := &rangesLog{LogStore: mem}
	g := &logGuard{LogStore: rl, fsm: &fsm{fatal: make(chan error, 1)}}
	if err := g.DeleteRange(1, 3000); err != nil {
		t.Fatal(err)
	}
	want := [][2]uint64{{1, 1024}, {1025, 2048}, {2049, 3000}}
	if fmt.Sprint(rl.ranges) != fmt.Sprint(want) {
		t.Fatalf("deletes %v; want %v", rl.ranges, want)
	}
	if first, _ := mem.FirstIndex(); first != 3001 {
		t.Fatalf("first index %d after the compaction; want 3001", first)
	}
	rl.ranges = nil
	if err := g.DeleteRange(4000, 5000); err != nil { // the tail, nothing applied
		t.Fatal(err)
	}
	if len(rl.ranges) != 1 {
		t.Fatalf("a tail truncation went as %d deletes; want 1", len(rl.ranges))
	}
}
