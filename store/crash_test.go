//go:build unix

package store_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
)

// crashEnv names the store file a helper process works on; the helper
// runs only when it is set. modeEnv says which helper: "crash" (the
// default) or "diskfull".
const (
	crashEnv = "TITANIC_STORE_CRASH_CHILD"
	modeEnv  = "TITANIC_STORE_CHILD_MODE"
)

// Lines the helper prints, each only after the Apply it reports returned:
//
//	S <id>  submitted
//	D <id>  dispatched and replied (done)
//	C <id>  closed
//
// A ticket is closed after its reply only when closes(id), so the parent
// knows which tickets may have vanished without a C line.
func closes(id store.ID) bool { return id[15]%4 == 0 }

var crashServices = []string{"alpha", "beta", "gamma"}

// TestHelperProcess is the child of TestCrashConsistency, not a test.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("helper process for TestCrashConsistency")
	}
	if os.Getenv(modeEnv) == "diskfull" {
		os.Exit(diskFullChild(path))
	}
	os.Exit(crashChild(path))
}

// crashChild writes to the store until it is killed. It returns (for an
// exit status) only on failure, or after a minute if no one kills it.
func crashChild(path string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	s, err := store.Open(path, store.Options{Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: open:", err)
		return 2
	}
	ctx := context.Background()
	var outMu sync.Mutex
	ack := func(kind byte, id store.ID) {
		line := append([]byte{kind, ' '}, id.String()+"\n"...)
		outMu.Lock()
		defer outMu.Unlock()
		if _, err := os.Stdout.Write(line); err != nil {
			os.Exit(4) // the parent is gone
		}
	}
	fail := make(chan error, 1)
	apply := func(ops ...store.Op) bool {
		res, err := s.Apply(ctx, ops)
		for _, r := range res {
			err = errors.Join(err, r.Err)
		}
		if err != nil {
			select {
			case fail <- err:
			default:
			}
			return false
		}
		return true
	}
	submitted := make(chan store.ID, 1024)
	for w := range 8 {
		go func() {
			for i := 0; ; i++ {
				id := store.NewID()
				o := store.Op{Kind: store.OpSubmit, ID: id, Time: time.Now(),
					Service: crashServices[(w+i)%len(crashServices)], Body: [][]byte{id[:], {}, []byte("payload")}}
				if !apply(o) {
					return
				}
				ack('S', id)
				if i%2 == 0 {
					select {
					case submitted <- id:
					default:
					}
				}
			}
		}()
	}
	for range 2 {
		go func() {
			for id := range submitted {
				now := time.Now()
				if !apply(store.Op{Kind: store.OpDispatch, ID: id, Time: now},
					store.Op{Kind: store.OpReply, ID: id, Time: now, Reply: [][]byte{[]byte("re: "), id[:]}}) {
					return
				}
				ack('D', id)
				if closes(id) {
					if !apply(store.Op{Kind: store.OpClose, ID: id, Time: now}) {
						return
					}
					ack('C', id)
				}
			}
		}()
	}
	select {
	case err := <-fail:
		fmt.Fprintln(os.Stderr, "child: apply:", err)
		return 3
	case <-time.After(time.Minute):
		fmt.Fprintln(os.Stderr, "child: not killed within a minute")
		return 5
	}
}

// TestCrashConsistency kills a writing child process with SIGKILL at
// random points, several times over the same file, and checks after each
// kill that the file is sound and holds every acknowledged op.
func TestCrashConsistency(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	acked := make(map[store.ID]byte) // the last line seen per ticket
	for round := range 6 {
		lines := runChild(t, path, 20+rng.IntN(500))
		for _, l := range lines {
			kind, idText, ok := strings.Cut(l, " ")
			id, err := store.ParseID(idText)
			if !ok || err != nil || len(kind) != 1 || !strings.Contains("SDC", kind) {
				t.Fatalf("round %d: child printed %q", round, l)
			}
			acked[id] = kind[0]
		}
		verifyAfterCrash(t, path, acked)
		t.Logf("round %d: %d acknowledgements, %d tickets tracked", round, len(lines), len(acked))
	}
}

// runChild starts the helper on path, kills it after it has acknowledged
// target ops, and returns every line it printed.
func runChild(t *testing.T, path string, target int) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	lineCh := make(chan string)
	go func() {
		defer close(lineCh)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lineCh <- sc.Text()
		}
	}()
	var lines []string
	deadline := time.NewTimer(2 * time.Minute)
	defer deadline.Stop()
	for len(lines) < target {
		select {
		case l, ok := <-lineCh:
			if !ok {
				err := cmd.Wait()
				killed = true
				t.Fatalf("child exited after %d of %d acknowledgements (%v); stderr:\n%s", len(lines), target, err, stderr.String())
			}
			lines = append(lines, l)
		case <-deadline.C:
			t.Fatalf("child acknowledged %d of %d ops in 2 minutes; stderr:\n%s", len(lines), target, stderr.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Lines written before the kill are acknowledgements too; the pipe
	// ends when the child is gone.
	for {
		select {
		case l, ok := <-lineCh:
			if ok {
				lines = append(lines, l)
				continue
			}
		case <-deadline.C:
			t.Fatal("child's output did not end after SIGKILL")
		}
		break
	}
	err = cmd.Wait()
	killed = true
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v; stderr:\n%s", err, stderr.String())
	}
	return lines
}

// verifyAfterCrash reopens the store and checks it against the
// acknowledgements.
func verifyAfterCrash(t *testing.T, path string, acked map[store.ID]byte) {
	t.Helper()
	ctx := context.Background()
	s, err := store.Open(path, store.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer s.Close()
	if err := s.Check(ctx); err != nil {
		t.Fatalf("check after kill: %v", err)
	}
	for id, kind := range acked {
		tk, reply, err := s.Reply(ctx, id)
		switch {
		case kind == 'C':
			if !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("closed ticket %s: err = %v, want ErrNotFound", id, err)
			}
		case closes(id) && errors.Is(err, store.ErrNotFound):
			// closed, but killed before the C line: allowed
		case err != nil:
			t.Fatalf("acknowledged ticket %s lost: %v", id, err)
		case kind == 'D' && (tk.State != store.StateDone || len(reply) != 2 || !bytes.Equal(reply[1], id[:])):
			t.Fatalf("replied ticket %s: state %s, reply %q", id, tk.State, reply)
		}
		if kind == 'S' && err == nil {
			full, err := s.Get(ctx, id)
			if err != nil || len(full.Body) != 3 || !bytes.Equal(full.Body[0], id[:]) {
				t.Fatalf("ticket %s body %q, %v", id, full.Body, err)
			}
		}
	}
	var prev store.Ticket
	if err := s.Unfinished(ctx, func(tk store.Ticket) error {
		if tk.Service == prev.Service && tk.Seq <= prev.Seq {
			return fmt.Errorf("unfinished order: seq %d after %d in %s", tk.Seq, prev.Seq, tk.Service)
		}
		if tk.Service < prev.Service {
			return fmt.Errorf("unfinished order: service %s after %s", tk.Service, prev.Service)
		}
		prev = tk
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
