//go:build unix

package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
)

// TestDiskFull fills the store until the file cannot grow (a helper
// process with RLIMIT_FSIZE, so that the limit does not touch this one)
// and checks that the failure is answered as an error, that the store
// stays consistent and writable, and that space freed by closing tickets
// can be used again.
func TestDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	path := filepath.Join(t.TempDir(), "full.db")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+path, modeEnv+"=diskfull")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("helper: %s", strings.TrimSpace(stdout.String()))
	if err != nil || !strings.Contains(stdout.String(), "OK") {
		t.Fatalf("helper failed: %v\nstderr:\n%s", err, stderr.String())
	}
	// Without the limit, the file opens and is sound.
	s := mustOpen(t, path)
	if err := s.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// diskFullChild is TestDiskFull's helper; it prints OK when all is well.
func diskFullChild(path string) int {
	const limit = 1 << 20
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: limit}); err != nil {
		fmt.Fprintln(os.Stderr, "setrlimit:", err)
		return 2
	}
	if err := diskFull(path); err != nil {
		fmt.Fprintln(os.Stderr, "diskfull:", err)
		return 1
	}
	fmt.Println("OK")
	return 0
}

func diskFull(path string) error {
	ctx := context.Background()
	opts := store.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	s, err := store.Open(path, opts)
	if err != nil {
		return err
	}
	body := [][]byte{bytes.Repeat([]byte("x"), 2000)}
	var acked []store.ID
	var fullErr error
	for fullErr == nil {
		if len(acked) > 10000 {
			return errors.New("the file limit never hit")
		}
		ops := make([]store.Op, 10)
		for i := range ops {
			ops[i] = store.Op{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(), Service: "svc", Body: body}
		}
		if _, fullErr = s.Apply(ctx, ops); fullErr == nil {
			for _, o := range ops {
				acked = append(acked, o.ID)
			}
		}
	}
	fmt.Printf("full after %d tickets: %v\n", len(acked), fullErr)
	if errors.Is(fullErr, store.ErrClosed) {
		return fmt.Errorf("a full disk stopped the store: %w", fullErr)
	}
	if err := s.Check(ctx); err != nil {
		return err
	}
	for _, id := range acked {
		if _, err := s.Get(ctx, id); err != nil {
			return fmt.Errorf("acknowledged ticket lost: %w", err)
		}
	}
	// Close half of the tickets, a few at a time (a commit needs some
	// free pages itself), then the freed space takes new tickets.
	for i := 0; i < len(acked)/2; i += 5 {
		var ops []store.Op
		for _, id := range acked[i : i+5] {
			ops = append(ops, store.Op{Kind: store.OpClose, ID: id, Time: time.Now()})
		}
		if _, err := s.Apply(ctx, ops); err != nil {
			return fmt.Errorf("close on a full disk: %w", err)
		}
	}
	o := store.Op{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(), Service: "svc", Body: body}
	if _, err := s.Apply(ctx, []store.Op{o}); err != nil {
		return fmt.Errorf("submit after freeing space: %w", err)
	}
	if err := s.Check(ctx); err != nil {
		return err
	}
	return s.Close()
}
