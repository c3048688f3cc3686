package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
)

// TestBackupCheckDrain: an online backup of a running broker is a sound
// store holding the acknowledged tickets; SIGTERM drains and exits 0;
// `titanic check` verifies the stopped broker's file; a truncated data
// file is refused at start-up, never opened as an empty queue.
func TestBackupCheckDrain(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	dir := t.TempDir()
	br := harness.Broker(t, "broker", ep, dir, fastBroker...)
	cl := newClient(t, ep)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var tickets []string
	for range 20 {
		tk, err := cl.Submit(ctx, "later", [][]byte{[]byte("x")}, client.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tickets = append(tickets, tk)
	}
	out, code := cli(t, "", "backup", "--broker", ep, "snap.db")
	backup := filepath.Join(dir, "backups", "snap.db")
	if code != 0 || !strings.HasPrefix(out, backup) {
		t.Fatalf("backup: exit %d %q", code, out)
	}
	if out, code := cli(t, "", "check", "--file", backup); code != 0 || !strings.Contains(out, "ok, 20 tickets") {
		t.Fatalf("check of the backup: exit %d %q", code, out)
	}
	// While the broker runs, its file is locked: check says so, and
	// restore refuses to replace it, even with --force.
	if _, code := cli(t, "", "check", "--data", dir); code == 0 {
		t.Fatal("check of a running broker's file succeeded")
	}
	if _, code := cli(t, "", "restore", "--force", "--data", dir, backup); code != 1 {
		t.Fatalf("restore over a running broker: exit %d, want 1", code)
	}
	if err := br.Stop(10 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, br.Tail())
	}
	if !strings.Contains(br.Tail(), "drained") {
		t.Fatalf("no drain in the log:\n%s", br.Tail())
	}
	if out, code := cli(t, "", "check", "--data", dir); code != 0 || !strings.Contains(out, "ok, 20 tickets") {
		t.Fatalf("check after stop: exit %d %q", code, out)
	}
	// A data file truncated to zero bytes is an error, not a new queue.
	if err := os.Truncate(filepath.Join(dir, "titanic.db"), 0); err != nil {
		t.Fatal(err)
	}
	if stderr, code := runBroker(t, nil, "--listen", harness.FreeEndpoint(t), "--data", dir); code == 0 || !strings.Contains(stderr, "corrupt") {
		t.Fatalf("broker on a truncated file: exit %d, stderr:\n%s", code, stderr)
	}
	// Restoring the backup brings every acknowledged ticket back (the
	// damaged file is moved aside).
	if out, code := cli(t, "", "restore", "--force", "--data", dir, backup); code != 0 || !strings.Contains(out, "20 tickets") {
		t.Fatalf("restore: exit %d %q", code, out)
	}
	harness.Broker(t, "restored", ep, dir, fastBroker...)
	cl2 := newClient(t, ep)
	for _, tk := range tickets {
		if st, err := cl2.Status(ctx, tk); err != nil || st.State != "pending" {
			t.Fatalf("ticket %s after restore: %+v %v", tk, st, err)
		}
	}
}
