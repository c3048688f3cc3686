package netns

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

// Process is a titanic process running on a host. It is harness.Process's
// counterpart, and shares its harness.Proc (PID, Kill, Stop, Tail...):
// `ip netns exec NS BIN args...` execs the binary in place, so PID is the
// titanic process itself.
type Process struct {
	harness.Proc // Log: its captured stdout and stderr
	Host         *Host

	readyLine string
	bin       string
	args      []string
	ready     chan struct{}
}

// Start runs the titanic binary (harness.Binary) with args in the host's
// namespace. When readyLine is not empty, Start waits (up to
// harness.ReadyWithin, 20 s by default) until the process writes a line
// containing it. The process is killed when the test ends, and when the
// Net is cleaned up.
func (h *Host) Start(tb testing.TB, name, readyLine string, args ...string) *Process {
	tb.Helper()
	p, err := h.TryStart(tb, name, readyLine, args...)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// ErrNotReady is wrapped by TryStart's error when the process exited, or
// stayed silent, before its ready line.
var ErrNotReady = errors.New("process not ready")

// TryStart is Start for processes that may legitimately refuse to start
// (a node that finds its data diverged, say): when the process exits
// before its ready line, or does not write it within harness.ReadyWithin, TryStart
// returns an error wrapping ErrNotReady (and the process, killed) instead
// of failing the test. It still fails the test when the process cannot be
// started at all.
func (h *Host) TryStart(tb testing.TB, name, readyLine string, args ...string) (*Process, error) {
	tb.Helper()
	return h.TryStartBin(tb, harness.Binary(tb), name, readyLine, args...)
}

// TryStartBin is TryStart with the binary at bin instead of harness.Binary:
// the mixed-version tests run an older release's build beside the current
// one on the same Net.
func (h *Host) TryStartBin(tb testing.TB, bin, name, readyLine string, args ...string) (*Process, error) {
	tb.Helper()
	bin, err := filepath.Abs(bin)
	if err != nil {
		tb.Fatal(err)
	}
	logPath := filepath.Join(tb.TempDir(), name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.NS, bin}, args...)...)
	p := &Process{
		Proc: harness.NewProc(name, logPath, cmd), Host: h,
		readyLine: readyLine, bin: bin, args: args,
		ready: make(chan struct{}),
	}
	lw := &lineWriter{f: logf, match: readyLine, onMatch: func() { close(p.ready) }}
	cmd.Stdout, cmd.Stderr = lw, lw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 2 * time.Second // a child keeping the output open
	if !h.net.track(p) {
		logf.Close()
		tb.Fatalf("netns: start %s: the Net is already cleaned up", name)
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		p.Done(err)
		tb.Fatalf("netns: start %s on %s: %v", name, h.Name, err)
	}
	go func() {
		err := cmd.Wait()
		lw.flush()
		logf.Close()
		p.Done(err)
	}()
	tb.Cleanup(p.Kill)
	if readyLine != "" {
		select {
		case <-p.ready:
		case <-p.ExitC():
			return p, fmt.Errorf("%w: %s exited before it was ready: %v\n%s", ErrNotReady, name, p.ExitErr(), p.Tail())
		case <-time.After(harness.ReadyWithin()):
			p.Kill()
			return p, fmt.Errorf("%w: %s not ready within %s\n%s", ErrNotReady, name, harness.ReadyWithin(), p.Tail())
		}
	}
	return p, nil
}

// Broker starts a broker listening on Endpoint(5555) with its data in dir
// and waits until it has bound its socket.
func (h *Host) Broker(tb testing.TB, name, dir string, extra ...string) *Process {
	tb.Helper()
	args := append([]string{"broker", "--listen", h.Endpoint(5555), "--data", dir}, extra...)
	return h.Start(tb, name, "broker ready", args...)
}

// TryBroker is Broker with TryStart's error instead of a failed test when
// the broker exits (or stays silent) before it is ready.
func (h *Host) TryBroker(tb testing.TB, name, dir string, extra ...string) (*Process, error) {
	tb.Helper()
	args := append([]string{"broker", "--listen", h.Endpoint(5555), "--data", dir}, extra...)
	return h.TryStart(tb, name, "broker ready", args...)
}

// TryBrokerBin is TryBroker running the binary at bin.
func (h *Host) TryBrokerBin(tb testing.TB, bin, name, dir string, extra ...string) (*Process, error) {
	tb.Helper()
	args := append([]string{"broker", "--listen", h.Endpoint(5555), "--data", dir}, extra...)
	return h.TryStartBin(tb, bin, name, "broker ready", args...)
}

// Restart kills the process if it still runs and starts it again on the
// same host with the same binary and arguments, waiting for the same ready
// line.
func (p *Process) Restart(tb testing.TB) *Process {
	tb.Helper()
	p.Kill()
	q, err := p.Host.TryStartBin(tb, p.bin, p.Name, p.readyLine, p.args...)
	if err != nil {
		tb.Fatal(err)
	}
	return q
}

// Signal sends sig to the process: SIGSTOP freezes it (its sockets stay
// open and silent), SIGCONT resumes it. For SIGSTOP it returns once every
// thread has stopped: kill(2) only queues the stop, and a thread busy in
// the kernel (an fsync, a recv) runs on until it leaves it, long enough
// under load to answer a request sent right after.
func (p *Process) Signal(sig syscall.Signal) error {
	if err := p.Proc.Signal(sig); err != nil {
		return err
	}
	if sig != syscall.SIGSTOP {
		return nil
	}
	return waitStopped(p.PID(), 10*time.Second)
}

// waitStopped waits until every thread of pid is in a stopped state
// (T or t in /proc/PID/task/TID/stat).
func waitStopped(pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		running, err := runningThreads(pid)
		if err != nil {
			return fmt.Errorf("pid %d after SIGSTOP: %w", pid, err)
		}
		if running == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d: thread %s still not stopped %s after SIGSTOP", pid, running, limit)
		}
		time.Sleep(time.Millisecond) // polling /proc: the kernel sends no event for it
	}
}

// procState is the state letter of a /proc stat file (/proc/PID/stat,
// /proc/PID/task/TID/stat): R, S, D, T, t, Z, X...
func procState(path string) (byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The state follows the command name, which is in parentheses and
	// may itself hold ") ".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, fmt.Errorf("%s: no state in %q", path, b)
	}
	return b[i+2], nil
}

// runningThreads returns a thread of pid not stopped yet ("" when all are).
func runningThreads(pid int) (string, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, t := range tasks {
		state, err := procState(filepath.Join(dir, t.Name(), "stat"))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // the thread exited
			}
			return "", err
		}
		switch state {
		case 'T', 't', 'Z', 'X':
		default:
			return t.Name() + " (" + string(state) + ")", nil
		}
	}
	return "", nil
}

// lineWriter copies a process's output to its log and calls onMatch once
// at the first line containing match. exec.Cmd calls Write from one
// goroutine at a time (Stdout and Stderr are the same writer).
type lineWriter struct {
	f       *os.File
	match   string
	onMatch func()
	mu      sync.Mutex
	partial []byte
	matched bool
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, _ = w.f.Write(b)
	if w.matched || w.match == "" {
		return len(b), nil
	}
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		if strings.Contains(line, w.match) {
			w.matched = true
			w.partial = nil
			w.onMatch()
			break
		}
	}
	if len(w.partial) > 1<<20 { // a line that long is no ready line
		w.partial = w.partial[len(w.partial)-len(w.match):]
	}
	return len(b), nil
}

// flush checks an unterminated last line.
func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.matched && w.match != "" && strings.Contains(string(w.partial), w.match) {
		w.matched = true
		w.onMatch()
	}
}
