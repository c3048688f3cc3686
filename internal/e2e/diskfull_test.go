package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
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
	mnt := mountTmpfs(t, "8m")
	ep := harness.FreeEndpoint(t)
	var br *harness.Process
	t.Cleanup(func() {
		if br != nil {
			br.Kill()
		}
	})
	data := filepath.Join(mnt, "data")
	// The reserve off: this test is of the store meeting a full disk.
	br = harness.Broker(t, "broker", ep, data, append([]string{"--disk-reserve", "-1"}, fastBroker...)...)
	cl, err := client.New(client.Config{Brokers: []string{ep}, Timeout: 2 * time.Second, Retries: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Fill the disk but for 2 MiB: a filler file takes the rest.
	filler := fillDisk(t, mnt, 2<<20)

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

// mountTmpfs mounts a tmpfs of size (mount's notation: "8m") on a
// temporary directory for the test, unmounted at its end. It skips where
// mounting is not possible (not root, or no mount in this sandbox).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a size-limited tmpfs")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	// Registered after TempDir's cleanup, so it runs before it (and
	// after the cleanups the test registers later, its brokers' kills).
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}

// fillDisk fills the file system of dir from outside the broker, but for
// leave bytes, with a file whose path it returns.
func fillDisk(t *testing.T, dir string, leave int64) string {
	t.Helper()
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte{1}, 64<<10)
	var size int64
	for {
		n, err := f.Write(chunk)
		size += int64(n)
		if err != nil {
			break
		}
	}
	if err := f.Truncate(max(size-leave, 0)); err != nil {
		t.Fatal(err)
	}
	return filler
}

// TestDiskReserveMode runs a broker on a 64 MiB tmpfs, whose reserve is
// 5% of it (3.2 MiB, under the default 256 MiB), and fills the file system
// from outside: submits are refused with a text saying so while a pending
// ticket's reply is still recorded, lookups and closes go on, and the
// titanic_disk_full gauge is 1; once the space is freed submits are
// accepted again without a restart, and nothing acknowledged is lost.
func TestDiskReserveMode(t *testing.T) {
	mnt := mountTmpfs(t, "64m")
	ep := harness.FreeEndpoint(t)
	addr := harness.FreeAddr(t)
	data := filepath.Join(mnt, "data")
	br := harness.Broker(t, "broker", ep, data, append([]string{"--http-listen", addr}, fastBroker...)...)
	cl, err := client.New(client.Config{Brokers: []string{ep}, Timeout: 2 * time.Second, Retries: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	metric := func(name string) string {
		t.Helper()
		res, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatalf("metrics: %v", err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		for l := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), name+" "); ok {
				return v
			}
		}
		t.Fatalf("no %s in the metrics:\n%s", name, b)
		return ""
	}

	pending, err := cl.Submit(ctx, "later", [][]byte{[]byte("job")}, client.SubmitOptions{IdemKey: "pending"})
	if err != nil {
		t.Fatal(err)
	}
	done, err := cl.Submit(ctx, "later", [][]byte{[]byte("other")}, client.SubmitOptions{IdemKey: "to-close"})
	if err != nil {
		t.Fatal(err)
	}
	acked := []string{pending, done}
	if v := metric("titanic_disk_full"); v != "0" {
		t.Fatalf("titanic_disk_full = %s before the disk filled", v)
	}

	// 1 MiB left: under the reserve.
	filler := fillDisk(t, mnt, 1<<20)
	var refused error
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; refused == nil; i++ {
		tk, err := cl.Submit(ctx, "later", [][]byte{[]byte("x")}, client.SubmitOptions{IdemKey: fmt.Sprintf("k%d", i)})
		switch {
		case err == nil:
			acked = append(acked, tk)
		case errors.Is(err, client.ErrServer):
			refused = err
		default:
			t.Fatalf("submit %d: %v\n%s", i, err, br.Tail())
		}
		if refused == nil && time.Now().After(deadline) {
			t.Fatalf("submits still accepted 10 s after the disk filled (%d)\n%s", i, br.Tail())
		}
	}
	if !strings.Contains(refused.Error(), "disk full: ") || !strings.Contains(refused.Error(), "free on "+data) ||
		!strings.Contains(refused.Error(), "replies, lookups and closes go on") {
		t.Fatalf("refusal on a full disk: %v, want the disk full text", refused)
	}
	if v := metric("titanic_disk_full"); v != "1" {
		t.Fatalf("titanic_disk_full = %s on a full disk", v)
	}
	// A worker's reply is recorded, a lookup answers, a close works.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	echoWorkers(t, wctx, ep, "later", 1)
	rep, err := cl.Reply(ctx, pending, client.ReplyOptions{Wait: true})
	if err != nil || len(rep) != 1 || string(rep[0]) != "echo:job" {
		t.Fatalf("reply of the pending ticket on a full disk: %q %v\n%s", rep, err, br.Tail())
	}
	if err := cl.CloseTicket(ctx, done); err != nil {
		t.Fatalf("close on a full disk: %v", err)
	}
	if _, err := cl.Status(ctx, done); !errors.Is(err, client.ErrUnknown) {
		t.Fatalf("closed ticket's status: %v, want unknown", err)
	}
	acked = slices.DeleteFunc(acked, func(s string) bool { return s == done })

	// Space returns: the mode ends by itself.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		tk, err := cl.Submit(ctx, "later", [][]byte{[]byte("y")}, client.SubmitOptions{IdemKey: "after"})
		if err == nil {
			acked = append(acked, tk)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("submits not accepted 20 s after space was freed: %v\n%s", err, br.Tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if v := metric("titanic_disk_full"); v != "0" {
		t.Fatalf("titanic_disk_full = %s once space returned", v)
	}
	b, err := os.ReadFile(br.Log)
	if err != nil {
		t.Fatal(err)
	}
	logs := string(b)
	if n := strings.Count(logs, "disk full: submits refused"); n != 1 {
		t.Errorf("entering the mode logged %d times, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs, "disk space returned") {
		t.Errorf("leaving the mode not logged:\n%s", logs)
	}
	wcancel()
	br.Kill()
	harness.Broker(t, "broker2", ep, data, fastBroker...)
	for _, tk := range acked {
		if _, err := cl.Status(ctx, tk); err != nil {
			t.Fatalf("acknowledged ticket %s lost: %v", tk, err)
		}
	}
}
