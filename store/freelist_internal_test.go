package store

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// testSyncAbove stands for freelistSyncAbove in these tests, so that they
// need not write half a gigabyte.
const testSyncAbove = 8 << 20

func openSyncAbove(t *testing.T, path string) *BoltStore {
	t.Helper()
	s, err := Open(path, Options{NoSync: true, Logger: slog.New(slog.DiscardHandler), freelistSyncAbove: testSyncAbove})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dataSize is the file's data size as syncFreelist sees it (tx.Size).
func dataSize(t *testing.T, s *BoltStore) int64 {
	t.Helper()
	var size int64
	if err := s.view(context.Background(), func(tx *bolt.Tx) error { size = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	return size
}

// inUse is the data size less the free pages. The writer must be idle.
func inUse(t *testing.T, s *BoltStore) int64 {
	t.Helper()
	st, pageSize := s.db.Stats(), s.db.Info().PageSize
	return dataSize(t, s) - int64((st.FreePageN+st.PendingPageN)*pageSize)
}

// fileFreelist reports whether the meta page bbolt would use for the file
// at path records a free page list. When it does, bbolt's Open reads that
// list; when not, it rebuilds it by reading every page of the file.
func fileFreelist(t *testing.T, path string) bool {
	t.Helper()
	m, err := latestMeta(path)
	if err != nil {
		t.Fatal(err)
	}
	return m.freelist != boltNoFreelist
}

// fillPast submits tickets of 64 KiB, 16 per commit, until the data size
// reaches limit, and returns their IDs.
func fillPast(t *testing.T, s *BoltStore, limit int64) []ID {
	t.Helper()
	body := [][]byte{make([]byte, 64<<10)}
	var ids []ID
	for dataSize(t, s) < limit {
		ops := make([]Op, 16)
		for i := range ops {
			ops[i] = Op{Kind: OpSubmit, ID: NewID(), Time: time.Now(), Service: "s", Body: body}
			ids = append(ids, ops[i].ID)
		}
		if _, err := s.Apply(context.Background(), ops); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

func closeAll(t *testing.T, s *BoltStore, ids []ID) {
	t.Helper()
	ops := make([]Op, 0, len(ids))
	for _, id := range ids {
		ops = append(ops, Op{Kind: OpClose, ID: id, Time: time.Now()})
	}
	if _, err := s.Apply(context.Background(), ops); err != nil {
		t.Fatal(err)
	}
}

// A store with more than the threshold in use and few free pages writes
// bbolt's free page list at every commit, so that a copy of its file
// taken while it is open (what a SIGKILL or a crash of the host leaves)
// opens with that list read, not rebuilt by reading every page, and with
// nothing lost: bbolt's check (part of Check) finds every page either in
// use or in the list, never both nor neither. A small store's commits
// leave the list out.
func TestFreelistSyncedAboveThreshold(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "t.db")
	s := openSyncAbove(t, path)
	defer s.Close()
	small := submitOp("s")
	if _, err := s.Apply(ctx, []Op{small}); err != nil {
		t.Fatal(err)
	}
	if fileFreelist(t, path) {
		t.Fatal("a small store's commit wrote the free page list")
	}

	ids := fillPast(t, s, testSyncAbove*3/2)
	// Some free pages, far fewer than those in use.
	closed, kept := ids[:16], ids[16:]
	closeAll(t, s, closed)
	last := submitOp("s")
	if _, err := s.Apply(ctx, []Op{last}); err != nil {
		t.Fatal(err)
	}
	kept = append(kept, small.ID, last.ID)
	if !fileFreelist(t, path) {
		t.Fatalf("no free page list in the file after commits with %d bytes in use", inUse(t, s))
	}
	// The writer is idle: every Apply above returned.
	st, pageSize := s.db.Stats(), s.db.Info().PageSize
	crash := filepath.Join(dir, "crash.db")
	copyTestFile(t, path, crash)

	c := openSyncAbove(t, crash)
	defer c.Close()
	if got := c.db.Stats().FreePageN; got < 1<<20/pageSize || got != st.FreePageN+st.PendingPageN {
		t.Fatalf("reopened with %d free pages, the store had %d free and %d pending", got, st.FreePageN, st.PendingPageN)
	}
	if err := c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range kept {
		if _, err := c.Get(ctx, id); err != nil {
			t.Fatalf("ticket %s lost: %v", id, err)
		}
	}
	for _, id := range closed {
		if _, err := c.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("closed ticket %s: %v, want ErrNotFound", id, err)
		}
	}
	// Pages handed out from the list read are free indeed.
	fillPast(t, c, dataSize(t, c)+4<<20)
	if err := c.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// A file with more pages free than freelistMaxFreeShare allows (a
// drained backlog) goes without the list at each commit, where it would
// be long, even with more than the threshold in use.
func TestFreelistFragmented(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "t.db")
	s := openSyncAbove(t, path)
	defer s.Close()
	ids := fillPast(t, s, testSyncAbove*4)
	if !fileFreelist(t, path) {
		t.Fatal("no free page list in the file after commits past the threshold")
	}
	closeAll(t, s, ids[:len(ids)*2/3])
	if _, err := s.Apply(ctx, []Op{submitOp("s")}); err != nil {
		t.Fatal(err)
	}
	if n := inUse(t, s); n < testSyncAbove {
		t.Fatalf("%d bytes in use, want at least %d", n, testSyncAbove)
	}
	if fileFreelist(t, path) {
		t.Fatal("a commit to a fragmented file wrote the free page list")
	}
	// And back: once the free pages are reused, commits write it again.
	fillPast(t, s, dataSize(t, s)+1)
	if !fileFreelist(t, path) {
		t.Fatal("no free page list in the file once its free pages were reused")
	}
}

// A clean Close leaves bbolt's free page list in a file past
// saveFreelistAbove even when its commits did not write it (less than
// freelistSyncAbove in use), so that the next Open reads it instead of
// reading every page to rebuild it.
func TestCloseSavesFreelist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	s := openTest(t, path)
	big := [][]byte{make([]byte, 1<<20)}
	for range saveFreelistAbove>>20 + 1 {
		if _, err := s.Apply(context.Background(), []Op{{Kind: OpSubmit, ID: NewID(), Time: time.Now(), Service: "s", Body: big}}); err != nil {
			t.Fatal(err)
		}
	}
	if fileFreelist(t, path) {
		t.Fatal("free page list written by a commit below freelistSyncAbove")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !fileFreelist(t, path) {
		t.Fatal("no free page list after Close")
	}
	s = openTest(t, path)
	defer s.Close()
	if err := s.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func copyTestFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
