// Package harness runs the built titanic binary as real processes for
// end-to-end, crash and benchmark tests: it builds (or finds) the binary,
// starts brokers and workers, waits for them to be ready, and kills them by
// PID when the test ends, even when it fails.
package harness

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// Binary returns the path of the titanic binary: $TITANIC_BIN when set (the
// Makefile sets it), otherwise one built once per test process.
func Binary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("TITANIC_BIN"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "titanic-bin-")
		if err != nil {
			buildErr = err
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		builtBin = filepath.Join(dir, "titanic")
		cmd := exec.Command("go", "build", "-o", builtBin, "./cmd/titanic")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatalf("build titanic: %v", buildErr)
	}
	return builtBin
}

// FreeEndpoint returns a tcp://127.0.0.1:PORT endpoint whose port stays
// this test's until it ends (see ReservedEndpoint).
func FreeEndpoint(tb testing.TB) string {
	tb.Helper()
	return ReservedEndpoint(tb)
}

// FreeAddr returns a 127.0.0.1:PORT address (for raft, HTTP) whose port
// stays this test's until it ends. A port found free by listening and
// closing may be handed out again, to this test binary or another, before
// its node binds it (CI saw two nodes of one test given the same port).
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	return strings.TrimPrefix(ReservedEndpoint(tb), "tcp://")
}

// Process is a titanic process started by the harness; Log is its
// captured stderr.
type Process struct {
	Proc
	ready chan struct{}
}

// ReadyWithin is how long Start (and netns's) waits for the ready line:
// 20 s, or TITANIC_READY_WITHIN (a Go duration) for runs whose nodes start
// over stores of millions of tickets on a busy disk (make backlog-pair).
func ReadyWithin() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("TITANIC_READY_WITHIN")); err == nil && d > 0 {
		return d
	}
	return 20 * time.Second
}

// Start runs the binary with args. When readyLine is not empty, Start waits
// (up to 20 s) until the process writes a line containing it to stderr.
// The process is killed when the test ends.
func Start(tb testing.TB, name, readyLine string, args ...string) *Process {
	tb.Helper()
	logPath := filepath.Join(tb.TempDir(), name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(Binary(tb), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	p := &Process{Proc: NewProc(name, logPath, cmd), ready: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	go func() {
		defer logf.Close()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		seen := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if !seen && readyLine != "" && strings.Contains(line, readyLine) {
				seen = true
				close(p.ready)
			}
		}
		_, _ = io.Copy(logf, stderr)
		p.Done(cmd.Wait())
	}()
	tb.Cleanup(func() { p.Kill() })
	if readyLine != "" {
		select {
		case <-p.ready:
		case <-p.ExitC():
			tb.Fatalf("%s exited before it was ready: %v\n%s", name, p.ExitErr(), p.Tail())
		case <-time.After(ReadyWithin()):
			tb.Fatalf("%s not ready within %s\n%s", name, ReadyWithin(), p.Tail())
		}
	}
	return p
}

// Broker starts a broker on endpoint with its data in dir and waits until
// it has bound its socket.
func Broker(tb testing.TB, name, endpoint, dir string, extra ...string) *Process {
	tb.Helper()
	args := append([]string{"broker", "--listen", endpoint, "--data", dir}, extra...)
	if !slices.ContainsFunc(extra, func(a string) bool { return strings.HasPrefix(a, "--http-listen") }) {
		// Many brokers share the test host: no HTTP listener unless asked.
		args = append(args, "--http-listen", "")
	}
	return Start(tb, name, "broker ready", args...)
}
