package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
)

// TestDiskFull runs a broker on a 8 MiB tmpfs made for the test: when the
// disk is full, submits are refused with an error (500, the client's
// ErrServer), lookups go on, nothing acknowledged is lost, and submits
// resume once space is freed.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a size-limited tmpfs")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	ep := harness.FreeEndpoint(t)
	var br *harness.Process
	t.Cleanup(func() {
		if br != nil {
			br.Kill()
		}
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	data := filepath.Join(mnt, "data")
	br = harness.Broker(t, "broker", ep, data, fastBroker...)
	cl, err := client.New(client.Config{Brokers: []string{ep}, Timeout: 2 * time.Second, Retries: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Fill the disk but for 2 MiB: a filler file takes the rest.
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{1}, 64<<10)
	var size int64
	for {
		n, err := f.Write(chunk)
		size += int64(n)
		if err != nil {
			break
		}
	}
	if err := f.Truncate(max(size-2<<20, 0)); err != nil {
		t.Fatal(err)
	}
	f.Close()

	body := bytes.Repeat([]byte("b"), 16<<10)
	var acked []string
	var refused error
	for i := 0; i < 2000 && refused == nil; i++ {
		tk, err := cl.Submit(ctx, "later", [][]byte{body}, client.SubmitOptions{IdemKey: fmt.Sprintf("k%d", i)})
		switch {
		case err == nil:
			acked = append(acked, tk)
		case errors.Is(err, client.ErrServer):
			refused = err
		default:
			t.Fatalf("submit %d: %v\n%s", i, err, br.Tail())
		}
	}
	if refused == nil {
		t.Fatal("the disk never filled")
	}
	if len(acked) == 0 {
		t.Fatal("no submit acknowledged before the disk filled")
	}
	t.Logf("%d submits acknowledged, then refused: %v", len(acked), refused)
	// Lookups still work and every acknowledged ticket is there.
	for _, tk := range acked {
		if st, err := cl.Status(ctx, tk); err != nil || st.State != "pending" {
			t.Fatalf("acknowledged ticket %s on a full disk: %+v %v", tk, st, err)
		}
	}
	// Space returns: submits resume.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		tk, err := cl.Submit(ctx, "later", [][]byte{body}, client.SubmitOptions{IdemKey: "after"})
		if err == nil {
			acked = append(acked, tk)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("submits did not resume after space was freed: %v\n%s", err, br.Tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Nothing acknowledged is lost across a restart either.
	br.Kill()
	br = harness.Broker(t, "broker2", ep, data, fastBroker...)
	for _, tk := range acked {
		if _, err := cl.Status(ctx, tk); err != nil {
			t.Fatalf("acknowledged ticket %s lost: %v", tk, err)
		}
	}
}
