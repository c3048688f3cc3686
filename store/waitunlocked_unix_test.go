//go:build unix

package store_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
)

// WaitUnlocked returns at once for a free or missing file, at the timeout
// for one another holder keeps locked (shared locks too: Open takes the
// file exclusively), and as soon as its context ends.
func TestWaitUnlockedHeedsItsContext(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "titanic.db")
	if err := store.WaitUnlocked(context.Background(), path, time.Minute, nil); err != nil {
		t.Fatalf("missing file: %v", err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := store.WaitUnlocked(context.Background(), path, time.Minute, func() { t.Error("waiting for a free file") }); err != nil {
		t.Fatalf("free file: %v", err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	waited := 0
	start := time.Now()
	if err := store.WaitUnlocked(context.Background(), path, 200*time.Millisecond, func() { waited++ }); err != nil || waited != 1 || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("held file: %v after %s, waiting called %d times; want nil at the timeout, waiting once", err, time.Since(start), waited)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	if err := store.WaitUnlocked(ctx, path, time.Minute, nil); err != context.Canceled || time.Since(start) > 10*time.Second {
		t.Fatalf("held file, context cancelled: %v after %s; want context.Canceled at once", err, time.Since(start))
	}
}
