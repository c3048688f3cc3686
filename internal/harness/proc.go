package harness

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Proc is what Process and netns's Process share: a command started in a
// process group of its own (Setpgid), the one goroutine that waits for it
// calling Done, and the log its output is captured in.
type Proc struct {
	Name string
	Log  string // path of its captured output
	cmd  *exec.Cmd
	exit chan struct{}
	err  error
}

// NewProc is the Proc of cmd, named name, its output captured in the file
// at log. The caller starts cmd and calls Done with what its Wait returns
// (or with the error of a start that failed).
func NewProc(name, log string, cmd *exec.Cmd) Proc {
	return Proc{Name: name, Log: log, cmd: cmd, exit: make(chan struct{})}
}

// Done records that the process has exited with err (exec.Cmd.Wait's).
func (p *Proc) Done(err error) {
	p.err = err
	close(p.exit)
}

// ExitC is closed once the process has exited.
func (p *Proc) ExitC() <-chan struct{} { return p.exit }

// PID is the process ID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill sends SIGKILL to the process and its process group (a worker's
// commands) and waits for it to exit. It does nothing when the process
// has exited.
func (p *Proc) Kill() {
	select {
	case <-p.exit:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	_ = p.cmd.Process.Kill()
	<-p.exit
}

// Stop sends SIGTERM and waits up to d for a clean exit, then kills.
func (p *Proc) Stop(d time.Duration) error {
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-p.exit:
		return p.err
	case <-time.After(d):
		p.Kill()
		return fmt.Errorf("%s did not stop within %s after SIGTERM", p.Name, d)
	}
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.exit:
		return true
	default:
		return false
	}
}

// ExitErr is the process's exit error (nil for exit 0) once it has
// exited (see Exited), nil before.
func (p *Proc) ExitErr() error {
	select {
	case <-p.exit:
		return p.err
	default:
		return nil
	}
}

// Wait waits for the process to exit and returns what exec.Cmd.Wait did.
func (p *Proc) Wait() error {
	<-p.exit
	return p.err
}

// Tail returns the last 30 lines of the process's captured output, for
// failure messages.
func (p *Proc) Tail() string {
	b, _ := os.ReadFile(p.Log)
	return Tail(b, 30)
}

// Tail returns the last n lines of b.
func Tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ForEachLine calls fn with each line of the file at path (a process's
// log), lines up to 4 MiB long; a file that cannot be opened has none.
func ForEachLine(path string, fn func(string)) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		fn(sc.Text())
	}
}
