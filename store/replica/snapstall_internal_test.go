package replica

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
)

// A raft snapshot's copy of the store does not stall applies. fsm.Persist copies the store
// in one bbolt read transaction (store.BoltStore.Snapshot, tx.WriteTo)
// while raft goes on applying entries. bbolt holds its mmap lock shared
// for every read transaction, and a write transaction whose pages pass
// the end of the mapping remaps under that lock taken exclusively: the
// apply then waits for the whole copy (13 s for the 4.7 GB copy at
// 10,000,000 pending, per the comment on abortPersists), and every read
// begun after it (Go's RWMutex lets no new reader in while a writer
// waits) waits too. Here the copy is held mid-way and the store must
// grow past its mapping: the apply must not wait for the copy (found by
// a review; the store now opens with room to grow, store.mmapRoom).
func TestSnapshotPersistDoesNotStallApplies(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "titanic.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	submit := func(n, size int) []store.Op {
		ops := make([]store.Op, 0, n)
		for range n {
			ops = append(ops, store.Op{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(), Service: "s", Body: [][]byte{make([]byte, size)}})
		}
		return ops
	}
	// Some content, so that the copy has data pages to stop in.
	if _, err := st.Apply(context.Background(), submit(200, 1000)); err != nil {
		t.Fatal(err)
	}
	_, sink, persisted := persistHeld(t, st)
	defer func() {
		close(sink.release)
		<-persisted
	}()

	// An entry applied meanwhile that grows the file well past the
	// mapping a small store has (bbolt maps in powers of two up to 1 GB,
	// then in steps of 1 GB: any store crosses such a line as it grows).
	applied := make(chan error, 1)
	go func() {
		_, err := st.Apply(context.Background(), submit(64, 64<<10))
		applied <- err
	}()
	select {
	case err := <-applied:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		// And a plain read waits too.
		read := make(chan struct{})
		go func() { _, _ = st.AppliedIndex(context.Background()); close(read) }()
		readStalled := false
		select {
		case <-read:
		case <-time.After(500 * time.Millisecond):
			readStalled = true
		}
		t.Fatalf("an apply that grows the store waited for a snapshot copy in progress (3 s and counting); a read begun after it stalled too: %v", readStalled)
	}
}
