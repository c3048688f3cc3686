package store_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/titanicmq/titanic/store"
)

// A store opened while another process holds its file (titanic compact)
// waits for the lock of the file it opened. When that process renames a
// new file over the path before it lets go (compact's swap), the store
// must open the new file, not serve from the old one under its new name:
// what it acknowledged there would be gone at the next start. The lock
// holder here is the test, which swaps the file once the waiting Open has
// the old file open (seen in /proc/self/fd).
func TestOpenWaitingThroughSwapOpensNewFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "titanic.db")
	for _, p := range []string{path, path + ".new"} {
		s, err := store.Open(p, store.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	held, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	type opened struct {
		s   *store.BoltStore
		err error
	}
	done := make(chan opened, 1)
	go func() {
		s, err := store.Open(path, store.Options{LockTimeout: 20 * time.Second})
		done <- opened{s, err}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for openCount(t, old) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the waiting Open did not open the file within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	if err := held.Close(); err != nil {
		t.Fatal(err)
	}
	o := <-done
	if o.err != nil {
		t.Fatalf("Open through the swap: %v", o.err)
	}
	id := store.NewID()
	if _, err := o.s.Apply(ctx, []store.Op{submit(id, "svc", []byte("acknowledged"))}); err != nil {
		t.Fatal(err)
	}
	if err := o.s.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Get(ctx, id); err != nil {
		t.Fatalf("a submit acknowledged by the store opened during the swap is not in %s: %v", path, err)
	}
}

// openCount counts this process's descriptors open on the file fi.
func openCount(t *testing.T, fi os.FileInfo) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		if got, err := os.Stat(filepath.Join("/proc/self/fd", e.Name())); err == nil && os.SameFile(fi, got) {
			n++
		}
	}
	return n
}
