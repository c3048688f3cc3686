package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
)

// A single broker whose store stops writing stops, with an error, and
// started again it serves every ticket it acknowledged (found by a crash
// tester). An fdatasync of the data file fails (EIO, injected by strace
// into every second fdatasync from the 12th: a commit syncs its data
// pages, then its meta page, and only a failed meta sync leaves the
// commit in doubt; a failed data sync loses the commit cleanly, writes go
// on, and shifts the pairs by one, so a meta sync fails within two
// commits; one injection alone hit a data sync now and then). The store then stops writing for good
// (store.afterFailedCommit), rightly: the commit's meta page may never
// reach the disk. The broker kept running, refused every submit with
// "500 not stored ... reopen the store", and GET /healthz went on
// answering 200 "active", so a load balancer kept sending it the traffic
// and a supervisor never restarted it. A replica in the same case exits
// non-zero, and its peer serves.
//
// Needs strace.
func TestSingleNodeStopsWhenStoreStopsWriting(t *testing.T) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("needs strace (make test-deps installs it): it injects the failed fdatasync")
	}
	ep, data := harness.ReservedEndpoint(t), t.TempDir()
	httpAddr := strings.TrimPrefix(harness.ReservedEndpoint(t), "tcp://")
	bin, err := filepath.Abs(harness.Binary(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logPath := filepath.Join(t.TempDir(), "broker.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, strace, "-f", "-qq", "-o", "/dev/null",
		"-P", filepath.Join(data, "titanic.db"), "-e", "trace=fdatasync",
		"-e", "inject=fdatasync:error=EIO:when=12+2",
		bin, "broker", "--data", data, "--listen", ep, "--http-listen", httpAddr, "--heartbeat", "200ms")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// strace and the broker it traces: the whole process group.
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })

	cl, err := client.New(client.Config{Brokers: []string{ep}, Timeout: 500 * time.Millisecond, Retries: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var refused error
	var acked []string
	for i := range 200 {
		tk, err := cl.Submit(ctx, "svc", [][]byte{[]byte(fmt.Sprint(i))}, client.SubmitOptions{})
		if err != nil {
			refused = err
			break
		}
		acked = append(acked, tk)
	}
	if refused == nil {
		t.Skip("no fdatasync failed (the injection did not take)")
	}
	t.Logf("first refused submit after %d acknowledged: %v", len(acked), refused)
	// A failed data sync loses its commit cleanly and writes rightly go
	// on; the store stops at the next failed meta sync, so submits go on
	// until the broker stops (without them no commit followed, and a
	// fresh-clone run under load waited 15 s for a stop nothing caused).
	// Those acknowledged meanwhile must be kept too.
	var stop error
	stopped := false
	bound := time.After(15 * time.Second)
	for i := 200; !stopped; i++ {
		select {
		case stop = <-exited:
			stopped = true
			continue
		case <-bound:
		default:
			tk, err := cl.Submit(ctx, "svc", [][]byte{[]byte(fmt.Sprint(i))}, client.SubmitOptions{})
			if err == nil {
				acked = append(acked, tk)
			}
			continue
		}
		break
	}
	switch {
	case stopped:
		if stop == nil {
			t.Fatal("the broker exited 0 after its store stopped writing: a supervisor restarting on failure would not start it again")
		}
		t.Logf("the broker exited after its store stopped: %v", stop)
	default:
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err != nil {
			t.Fatalf("15 s after its store stopped writing the broker still runs; healthz: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("15 s after its store stopped writing the broker still runs, and GET /healthz answers %d %q", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	logb, _ := os.ReadFile(logPath)
	if !strings.Contains(string(logb), "start the broker again") {
		t.Errorf("the broker's log does not say why it stopped and what to do:\n%s", logb)
	}

	// Started again, it reopens the store and has every ticket it
	// acknowledged.
	ep2 := harness.ReservedEndpoint(t)
	harness.Broker(t, "restarted", ep2, data, fastBroker...)
	cl2 := newClient(t, ep2)
	for _, tk := range acked {
		if _, err := cl2.Status(ctx, tk); err != nil {
			t.Fatalf("ticket %s, acknowledged before the store stopped, after a restart: %v", tk, err)
		}
	}
}
