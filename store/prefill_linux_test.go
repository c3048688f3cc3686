package store

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The writer prefills the room past the high-water mark (prefill.go):
// after commits that grow the file, blocks are allocated ahead of the
// data, the file's size is bbolt's, and the store still checks clean
// and reads back every ticket after a reopen.
func TestPrefillAllocatesAheadOfTheData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	opts := Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var ids []ID
	body := [][]byte{make([]byte, 900)}
	for range 200 {
		op := Op{Kind: OpSubmit, ID: NewID(), Time: time.Now(), Service: "svc", Body: body}
		res, err := s.Apply(ctx, []Op{op})
		if err == nil {
			err = res[0].Err
		}
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, op.ID)
	}
	// The writer prefills after a commit's answers: one more commit
	// waits for the previous one's prefill.
	if _, err := s.Apply(ctx, []Op{{Kind: OpClose, ID: ids[0], Time: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	var hwm int64
	if err := s.db.View(func(tx *bolt.Tx) error { hwm = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if allocated := st.Blocks * 512; allocated < min(hwm+prefillAhead, st.Size) {
		t.Errorf("%d bytes allocated for a high-water mark of %d in a file of %d: not prefilled", allocated, hwm, st.Size)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, id := range ids[1:] {
		if _, err := s.Get(ctx, id); err != nil {
			t.Fatalf("ticket %s after reopen: %v", id, err)
		}
	}
}
