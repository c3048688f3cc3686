package replica

import (
	"bytes"
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

// gateSink is a raft snapshot sink whose second write waits for release:
// a copy caught in the middle.
type gateSink struct {
	writes   int
	written  int64
	started  chan struct{} // closed at the first write
	release  chan struct{}
	canceled bool
	closed   bool
}

func (s *gateSink) Write(p []byte) (int, error) {
	s.writes++
	switch s.writes {
	case 1:
		close(s.started)
	case 2:
		<-s.release
	}
	s.written += int64(len(p))
	return len(p), nil
}

func (s *gateSink) Close() error  { s.closed = true; return nil }
func (s *gateSink) ID() string    { return "gate" }
func (s *gateSink) Cancel() error { s.canceled = true; return nil }

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

	f := &fsm{st: st}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &gateSink{started: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- snap.Persist(sink) }()
	<-sink.started
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
	snap, err = f.Snapshot()
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

// TestRestoreStopsOnConflictingEntryAtSnapshot: a snapshot from the
// leader whose index holds, in this node's raft log, an entry of another
// term (this node's uncommitted tail as a deposed leader) stops the node
// as a fork instead of being installed again and again
// (hashicorp/raft#697); without such an entry the snapshot is restored.
func TestRestoreStopsOnConflictingEntryAtSnapshot(t *testing.T) {
	src, err := store.Open(filepath.Join(t.TempDir(), "src.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.ApplyAt(context.Background(), 14, []store.Op{{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(), Service: "s", Body: [][]byte{[]byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	var copyBuf bytes.Buffer
	if _, err := src.Snapshot(context.Background(), &copyBuf); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		logTerm  uint64 // this node's entry at the snapshot's index (0: none)
		diverged bool
	}{
		{"no entry there", 0, false},
		{"an entry of the snapshot's term", 4, false},
		{"an entry of another term", 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := store.Open(filepath.Join(t.TempDir(), "titanic.db"), store.Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			meta := &raft.SnapshotMeta{ID: "4-14-1", Index: 14, Term: 4}
			f := &fsm{st: st, log: slog.New(slog.DiscardHandler), fatal: make(chan error, 1)}
			f.installed = func() (*raft.SnapshotMeta, uint64) {
				if tc.logTerm == 0 || tc.logTerm == meta.Term {
					return nil, 0
				}
				return meta, tc.logTerm
			}
			err = f.Restore(io.NopCloser(bytes.NewReader(copyBuf.Bytes())))
			applied, aerr := st.AppliedIndex(context.Background())
			if aerr != nil {
				t.Fatal(aerr)
			}
			if !tc.diverged {
				if err != nil || applied != 14 {
					t.Fatalf("Restore: %v, applied %d; want restored to 14", err, applied)
				}
				return
			}
			if !errors.Is(err, store.ErrDiverged) || !errors.Is(f.err(), store.ErrDiverged) {
				t.Fatalf("Restore: %v (fsm: %v); want store.ErrDiverged", err, f.err())
			}
			select {
			case <-f.fatal:
			default:
				t.Fatal("the failure was not reported on fatal")
			}
			if applied != 0 {
				t.Fatalf("store applied %d after a refused snapshot; want it untouched", applied)
			}
		})
	}
}
