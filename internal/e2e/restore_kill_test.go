package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
)

// A restore killed at any point leaves a directory whose titanic.db is a
// whole store, the old or the restored one (found by a crash tester).
// `titanic restore --force` moved DATA/titanic.db into
// DATA/replaced-TIME/ and only then renamed its checked copy
// (DATA/.titanic.db.restore-N) into place. SIGKILLed between
// the two renames (strace injects the SIGKILL at the install's rename), it
// leaves DATA with no titanic.db at all, and `titanic broker` then starts
// on it as a new, empty queue ("broker ready", every ticket unknown):
// neither the old tickets nor the restored ones are served, and nothing
// says why. `titanic compact` keeps the invariant this asks of restore:
// at every instant DATA/titanic.db names a complete store (the old one or
// the new one), so a kill at any point leaves a broker that serves one of
// the two ticket sets. The old store is now linked aside and replaced by
// the copy's rename.
//
// Needs strace (its fault injection kills the command at its Nth rename).
func TestRestoreForceKilledNeverLeavesNoStore(t *testing.T) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("needs strace (make test-deps installs it): its fault injection kills the command at an exact rename")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Two stores: the one in place (tickets of "old") and a backup
	// (tickets of "new").
	mkStore := func(service string) (string, []string) {
		ep, data := harness.ReservedEndpoint(t), t.TempDir()
		br := harness.Broker(t, "make-"+service, ep, data, fastBroker...)
		cl := newClient(t, ep)
		var tickets []string
		for i := range 20 {
			tk, err := cl.Submit(ctx, service, [][]byte{[]byte(fmt.Sprint(i))}, client.SubmitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tickets = append(tickets, tk)
		}
		cl.Close()
		if err := br.Stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(data, "titanic.db"), tickets
	}
	oldFile, oldTickets := mkStore("old")
	backup, newTickets := mkStore("new")
	oldBytes, err := os.ReadFile(oldFile)
	if err != nil {
		t.Fatal(err)
	}

	for when := 1; when <= 4; when++ {
		data := t.TempDir()
		if err := os.WriteFile(filepath.Join(data, "titanic.db"), oldBytes, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, strace, "-f", "-qq", "-o", "/dev/null",
			"-e", "trace=rename,renameat,renameat2",
			"-e", fmt.Sprintf("inject=rename,renameat,renameat2:signal=SIGKILL:when=%d", when),
			harness.Binary(t), "restore", "--force", "--data", data, backup)
		out, _ := cmd.CombinedOutput()
		killed := !strings.Contains(string(out), "restored")
		ents, _ := os.ReadDir(data)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Logf("SIGKILL at rename %d: killed=%v, DATA holds %v", when, killed, names)

		ep := harness.ReservedEndpoint(t)
		br := harness.Broker(t, fmt.Sprintf("after-kill-%d", when), ep, data, fastBroker...)
		cl := newClient(t, ep)
		served := func(tickets []string) int {
			n := 0
			for _, tk := range tickets {
				if _, err := cl.Status(ctx, tk); err == nil {
					n++
				}
			}
			return n
		}
		o, n := served(oldTickets), served(newTickets)
		cl.Close()
		_ = br.Stop(10 * time.Second)
		if o != len(oldTickets) && n != len(newTickets) {
			t.Errorf("restore --force SIGKILLed at its rename %d: the broker started on DATA (%v) serves %d of the %d old tickets and %d of the %d restored ones: a queue with neither",
				when, names, o, len(oldTickets), n, len(newTickets))
		}
		if !killed {
			break // the restore ran to its end: no later rename to kill at
		}
	}
}
