package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

// A broker waiting for its data file's lock (another process holds it:
// a `titanic check`, a broker being stopped) heeds SIGTERM: README says
// SIGINT/SIGTERM stop the broker, which exits 0 after a drain; a broker
// stopped before it served anything has nothing to drain and stops at
// once and cleanly (systemd's stop of a unit that is starting, a rollout
// cancelled), instead of waiting out store.lock_timeout and then failing
// with "recover: ticket counts: stats: context canceled", exit 1.
func TestSIGTERMWhileWaitingForTheLock(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "titanic.db")
	// A store to wait for: a broker makes it, then stops.
	b := harness.Broker(t, "first", harness.FreeEndpoint(t), dir)
	if err := b.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	p := harness.Start(t, "broker", "", "broker", "--listen", harness.FreeEndpoint(t), "--data", dir,
		"--http-listen", "", "--lock-timeout", "20s")
	time.Sleep(time.Second)
	start := time.Now()
	p.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for !p.Exited() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !p.Exited() {
		// Let it go on: release the lock and see how it ends.
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		for !p.Exited() && time.Since(start) < 30*time.Second {
			time.Sleep(50 * time.Millisecond)
		}
		t.Errorf("SIGTERM to a broker waiting for its store's lock: still running 5 s later; once the lock was released it ended after %s:\n%s",
			time.Since(start).Round(100*time.Millisecond), p.Tail())
		return
	}
	if strings.Contains(p.Tail(), "context canceled") {
		t.Errorf("a broker stopped while starting reports a failure:\n%s", p.Tail())
	}
	if err := p.ExitErr(); err != nil || !strings.Contains(p.Tail(), "stopped while waiting for the data file's lock") {
		t.Errorf("a broker stopped while waiting for the lock: %v, want exit 0 as for a stop, saying so:\n%s", err, p.Tail())
	}
}
