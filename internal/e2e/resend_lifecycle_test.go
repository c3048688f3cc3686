package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

// slowCommits makes the broker's next commits slower than a client's try:
// strace, attached to the running broker, holds each thread's first
// fdatasync of the data file for 1.5 s (a disk that stalls for a moment).
// A client command with --try-timeout 1s then sends its request again on
// a new connection while the broker commits the first one, and gets the
// answer to the resend, which the broker judges on a ticket its first
// send has already changed. It returns a stop that detaches strace.
func slowCommits(t *testing.T, b *lcBroker) (stop func()) {
	t.Helper()
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("needs strace (make test-deps installs it): it delays the broker's fdatasync")
	}
	out := filepath.Join(t.TempDir(), "strace.out")
	cmd := exec.Command(strace, "-f", "-qq", "-o", out, "-P", filepath.Join(b.data, "titanic.db"),
		"-e", "trace=fdatasync", "-e", "inject=fdatasync:delay_enter=1500000:when=1",
		"-p", fmt.Sprint(b.p.PID()))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	t.Cleanup(stop)
	// strace writes its output file once it is attached; a moment more
	// for every thread (attaching is not reported otherwise).
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(out); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("strace did not attach within 10 s")
		}
		time.Sleep(20 * time.Millisecond) // polling for the file strace creates
	}
	time.Sleep(500 * time.Millisecond) // strace attaches the broker's threads one by one after creating its file
	return stop
}

// A lifecycle command whose request the client sent again (its first try
// unanswered within --try-timeout while the broker committed it) reported
// the outcome of the resend, not of the command: `titanic cancel` exited 1
// "ticket already finished: ... cancelled" for the ticket it had itself
// just cancelled, `titanic retry` exited 1 "ticket has not failed:
// pending" for the ticket it had itself just retried, and `titanic purge
// --service S --yes` said "closed 0 failed tickets ... left 1 alone" after
// closing it. A script reading those exit codes takes a cancelled job for
// one that finished (or ran), and a retried one for one it must look at.
// The broker answers each send rightly; the client, knowing it sent more
// than once, must not pass the resend's verdict on a state its own first
// send made. Needs strace.
func TestLifecycleCommandResent(t *testing.T) {
	b := newLCBroker(t)
	try := []string{"--try-timeout", "1s", "--retries", "10"}

	// cancel
	cancelled := b.submit("nobody", "a")
	stop := slowCommits(t, b)
	out, code := b.cli(append([]string{"cancel"}, append(try, cancelled)...)...)
	stop()
	st, _ := b.cli("status", cancelled)
	if !strings.Contains(st, "state:    cancelled") {
		t.Fatalf("after titanic cancel (exit %d, %q) the ticket is not cancelled:\n%s", code, out, st)
	}
	if code != 0 {
		t.Errorf("titanic cancel exited %d for the ticket it cancelled (its request was sent again while the broker committed it); want 0", code)
	}

	// retry: a ticket failed (expired) in a paused service, so that it stays pending once retried.
	if _, code := b.cli("pause", "held"); code != 0 {
		t.Fatal("pause failed")
	}
	failed := b.submit("--ttl", "1s", "held", "b")
	waitFor(t, 10*time.Second, "the ticket expired", func() bool {
		st, _ := b.cli("status", failed)
		return strings.Contains(st, "state:    failed")
	})
	stop = slowCommits(t, b)
	out, code = b.cli(append([]string{"retry"}, append(try, failed)...)...)
	stop()
	st, _ = b.cli("status", failed)
	if !strings.Contains(st, "state:    pending") {
		t.Fatalf("after titanic retry (exit %d, %q) the ticket is not pending:\n%s", code, out, st)
	}
	if code != 0 {
		t.Errorf("titanic retry exited %d for the ticket it retried (its request was sent again while the broker committed it); want 0", code)
	}

	// purge --service
	purged := b.submit("--ttl", "1s", "held", "c")
	waitFor(t, 10*time.Second, "the ticket expired", func() bool {
		st, _ := b.cli("status", purged)
		return strings.Contains(st, "state:    failed")
	})
	stop = slowCommits(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.Binary(t), append([]string{"purge", "--broker", b.ep, "--service", "held", "--yes"}, try...)...)
	pout, err := cmd.CombinedOutput()
	stop()
	if _, code := b.cli("status", purged); code != 4 {
		t.Fatalf("after titanic purge (%v, %q) the ticket is still there", err, pout)
	}
	if err != nil || !strings.Contains(string(pout), "closed 1 failed ticket") {
		t.Errorf("titanic purge --service held --yes closed the one failed ticket but said (%v):\n%s", err, pout)
	}
}
