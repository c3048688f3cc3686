package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
)

// rendezvous is a worker command that proves its runs overlap: each run
// leaves a file in the directory named by its request body and waits (up
// to 20s) until 3 runs have left theirs, then answers "together DIR". A
// worker running fewer than 3 at once fails them all.
const rendezvous = `d="$(cat)"; : > "$(mktemp "$d/run.XXXXXX")"; i=0
while [ "$(ls "$d" | wc -l)" -lt 3 ]; do
  i=$((i+1)); if [ $i -gt 400 ]; then echo "only $(ls "$d" | wc -l) of 3 runs at once" >&2; exit 1; fi
  sleep 0.05
done
echo "together $d"`

// submitAll submits one ticket per body and returns the tickets.
func submitAll(t *testing.T, ctx context.Context, cl *client.Client, service string, bodies []string) []string {
	t.Helper()
	var tks []string
	for _, b := range bodies {
		tk, err := cl.Submit(ctx, service, [][]byte{[]byte(b)}, client.SubmitOptions{})
		if err != nil {
			t.Fatalf("submit %q: %v", b, err)
		}
		tks = append(tks, tk)
	}
	return tks
}

// TestWorkerConcurrency: `titanic worker --concurrency 3` runs 3 commands
// at once (each a rendezvous of 3: with --max-attempts 1 a run that waits
// alone fails its ticket for good), and goes on doing so once the broker
// was killed and restarted: each slot reconnects.
func TestWorkerConcurrency(t *testing.T) {
	const n = 3
	ep := harness.FreeEndpoint(t)
	data := t.TempDir()
	brokerFlags := append([]string{"--max-attempts", "1"}, fastBroker...)
	br := harness.Broker(t, "broker", ep, data, brokerFlags...)
	wk := harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "--heartbeat", "200ms",
		"--concurrency", fmt.Sprint(n), "rdv", "--", "sh", "-c", rendezvous)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	round := func(name string) {
		t.Helper()
		dir := filepath.Join(t.TempDir(), name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		cl := newClient(t, ep)
		bodies := make([]string, n)
		for i := range bodies {
			bodies[i] = dir
		}
		for i, tk := range submitAll(t, ctx, cl, "rdv", bodies) {
			rep, err := cl.Reply(ctx, tk, client.ReplyOptions{Wait: true})
			if err != nil {
				t.Fatalf("%s: ticket %d (%s): %v\nworker log:\n%s\nbroker log:\n%s", name, i, tk, err, wk.Tail(), br.Tail())
			}
			if got, want := string(bytes.Join(rep, nil)), "together "+dir+"\n"; got != want {
				t.Fatalf("%s: ticket %d = %q, want %q", name, i, got, want)
			}
		}
	}
	round("first")

	br.Kill()
	br = harness.Broker(t, "broker-restarted", ep, data, brokerFlags...)
	round("after-restart")
	if wk.Exited() {
		t.Fatalf("the worker exited\n%s", wk.Tail())
	}
	log, err := os.ReadFile(wk.Log)
	if err != nil {
		t.Fatal(err)
	}
	for slot := range n {
		if !hasLine(string(log), "lost broker", fmt.Sprintf("slot=%d ", slot)) {
			t.Errorf("no reconnect of slot %d in the worker log:\n%s", slot, log)
		}
	}
	if hasLine(string(log), "slot=3 ") {
		t.Errorf("the worker log names a slot 3 with --concurrency 3:\n%s", log)
	}
}

// TestWorkerConcurrencyDrain: SIGTERM to a worker whose 3 slots run a
// command each lets the commands finish: their replies are recorded on the
// first attempt, and the worker exits 0.
func TestWorkerConcurrencyDrain(t *testing.T) {
	const n = 3
	ep := harness.FreeEndpoint(t)
	br := harness.Broker(t, "broker", ep, t.TempDir(), fastBroker...)
	// Each run says it started, then waits for the file "go".
	const held = `d="$(cat)"; : > "$(mktemp "$d/started.XXXXXX")"; i=0
while [ ! -e "$d/go" ]; do i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.05; done
echo finished`
	wk := harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "--heartbeat", "200ms",
		"--concurrency", fmt.Sprint(n), "--log-level", "debug", "held", "--", "sh", "-c", held)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	cl := newClient(t, ep)
	tks := submitAll(t, ctx, cl, "held", []string{dir, dir, dir})
	waitFor(t, 20*time.Second, fmt.Sprintf("%d commands running at once", n), func() bool {
		runs, _ := filepath.Glob(filepath.Join(dir, "started.*"))
		return len(runs) == n
	})
	wk.Signal(syscall.SIGTERM)
	waitFor(t, 10*time.Second, "every slot draining after SIGTERM", func() bool {
		log, _ := os.ReadFile(wk.Log)
		return strings.Count(string(log), "waiting for the running request") == n
	})
	if wk.Exited() {
		t.Fatalf("the worker exited with its commands running\n%s", wk.Tail())
	}
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Stop's own SIGTERM changes nothing: the drain is under way.
	if err := wk.Stop(15 * time.Second); err != nil {
		t.Fatalf("worker after the drain: %v\n%s", err, wk.Tail())
	}
	for i, tk := range tks {
		rep, err := cl.Reply(ctx, tk, client.ReplyOptions{Wait: true})
		if err != nil {
			t.Fatalf("ticket %d: %v\n%s", i, err, br.Tail())
		}
		if got := string(bytes.Join(rep, nil)); got != "finished\n" {
			t.Fatalf("ticket %d = %q, want finished", i, got)
		}
		if st, err := cl.Status(ctx, tk); err != nil || st.Attempts != 1 {
			t.Errorf("ticket %d: status %+v, %v; want done on its first attempt (not redelivered)", i, st, err)
		}
	}
}

// hasLine reports whether a line of log contains every one of parts.
func hasLine(log string, parts ...string) bool {
	for line := range strings.Lines(log) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// waitFor polls cond until it holds, or fails the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(d)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("not within %s: %s", d, what)
		}
	}
}
