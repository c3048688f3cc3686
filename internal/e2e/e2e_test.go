// Package e2e tests the built titanic binary end to end: real broker and
// worker processes, real sockets, real crashes.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
)

// fast timings, so that crashes are noticed within a second.
var fastBroker = []string{"--heartbeat", "200ms", "--log-level", "debug"}

func newClient(t testing.TB, ep string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Brokers: []string{ep}, Timeout: 500 * time.Millisecond, Retries: 40})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCommandWorkerThousandSubmits(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	br := harness.Broker(t, "broker", ep, t.TempDir(), fastBroker...)
	for i := range 4 {
		harness.Start(t, fmt.Sprintf("worker%d", i), "worker running",
			"worker", "--broker", ep, "--heartbeat", "200ms", "upper", "--", "tr", "a-z", "A-Z")
	}
	const n, clients = 1000, 8
	tickets := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := newClient(t, ep)
			for i := c; i < n; i += clients {
				tk, err := cl.Submit(ctx, "upper", [][]byte{fmt.Appendf(nil, "request number %d", i)}, client.SubmitOptions{})
				if err != nil {
					errs <- fmt.Errorf("submit %d: %w", i, err)
					return
				}
				tickets[i] = tk
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("%v\nbroker log:\n%s", err, br.Tail())
	}
	cl := newClient(t, ep)
	for i, tk := range tickets {
		rep, err := cl.Reply(ctx, tk, client.ReplyOptions{Wait: true})
		if err != nil {
			t.Fatalf("reply %d (%s): %v\nbroker log:\n%s", i, tk, err, br.Tail())
		}
		want := fmt.Sprintf("REQUEST NUMBER %d", i)
		if got := string(bytes.Join(rep, nil)); got != want {
			t.Fatalf("reply %d = %q, want %q", i, got, want)
		}
	}
}

// runBroker runs `titanic broker args...` expecting it to stop by itself
// within 15 s; it returns its stderr and exit code.
func runBroker(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.Binary(t), append([]string{"broker"}, args...)...)
	cmd.Env = append(cmd.Environ(), env...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("titanic broker %v: still running after 15 s; stderr:\n%s", args, errb.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return errb.String(), code
}

// cli runs the binary and returns its stdout and exit code.
func cli(t *testing.T, stdin string, args ...string) (string, int) {
	t.Helper()
	out, _, code := cliStderr(t, stdin, args...)
	return out, code
}

// cliStderr is cli that also returns the standard error.
func cliStderr(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(harness.Binary(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	if code != 0 {
		t.Logf("titanic %v: exit %d, stderr: %s", args, code, errb.String())
	}
	return out.String(), errb.String(), code
}

func TestCLI(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), fastBroker...)
	b := []string{"--broker", ep, "--timeout", "1s"}

	// Submit with no worker: the ticket is pending; reply says so (exit 3).
	out, code := cli(t, "", append(append([]string{"submit"}, b...), "rev", "abc")...)
	ticket := strings.TrimSpace(out)
	if code != 0 || len(ticket) != 32 {
		t.Fatalf("submit: %q exit %d, want a 32-character ticket", out, code)
	}
	if _, code := cli(t, "", append(append([]string{"reply"}, b...), ticket)...); code != 3 {
		t.Fatalf("reply of a pending ticket: exit %d, want 3", code)
	}
	if out, code := cli(t, "", append(append([]string{"status"}, b...), ticket)...); code != 0 || !strings.Contains(out, "state:    pending") {
		t.Fatalf("status: %q exit %d", out, code)
	}
	harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "--heartbeat", "200ms", "rev", "--", "rev")
	if out, code := cli(t, "", append(append([]string{"reply", "--wait"}, b...), ticket)...); code != 0 || strings.TrimSpace(out) != "cba" {
		t.Fatalf("reply --wait: %q exit %d, want cba", out, code)
	}
	// submit --wait reads the body from stdin.
	if out, code := cli(t, "hello\n", append(append([]string{"submit", "--wait"}, b...), "rev", "-")...); code != 0 || strings.TrimSpace(out) != "olleh" {
		t.Fatalf("submit --wait: %q exit %d, want olleh", out, code)
	}
	if out, code := cli(t, "", append([]string{"tickets", "--state", "done"}, b...)...); code != 0 || !strings.Contains(out, ticket) {
		t.Fatalf("tickets: %q exit %d, want %s listed", out, code, ticket)
	}
	// `cluster` against a single broker: it answered, so it is reached,
	// and there is nothing replicated to show (exit 0).
	if out, code := cli(t, "", append([]string{"cluster"}, b...)...); code != 0 || !strings.Contains(out, "single node (no replication)") || !strings.Contains(out, "no pair or group") {
		t.Fatalf("cluster against a single broker: %q exit %d, want it reached as a single node, exit 0", out, code)
	}
	// A page cut at the limit says so, on stderr (two tickets are done).
	page := exec.Command(harness.Binary(t), append([]string{"tickets", "--state", "done", "--limit", "1"}, b...)...)
	var pout, perr bytes.Buffer
	page.Stdout, page.Stderr = &pout, &perr
	if err := page.Run(); err != nil || strings.Count(pout.String(), "\n") != 1 || !strings.Contains(perr.String(), "there may be more: --after ") {
		t.Fatalf("tickets --limit 1: %v, stdout %q, stderr %q; want one ticket and a hint to page on", err, pout.String(), perr.String())
	}
	if _, code := cli(t, "", append(append([]string{"close"}, b...), ticket)...); code != 0 {
		t.Fatalf("close: exit %d", code)
	}
	if _, code := cli(t, "", append(append([]string{"reply"}, b...), ticket)...); code != 4 {
		t.Fatalf("reply of a closed ticket: exit %d, want 4", code)
	}
	if _, code := cli(t, "", "submit"); code != 2 {
		t.Fatalf("submit without service: exit %d, want 2", code)
	}
	if _, code := cli(t, "", "nosuchcommand"); code != 2 {
		t.Fatalf("unknown command: exit %d, want 2", code)
	}
	// A command that fails is a failed attempt, and after the attempts the
	// ticket fails with its stderr tail.
	harness.Start(t, "failer", "worker running", "worker", "--broker", ep, "--heartbeat", "200ms", "fail", "--", "sh", "-c", "echo doomed >&2; exit 7")
	out, _ = cli(t, "", append(append([]string{"submit"}, b...), "fail", "x")...)
	if _, code := cli(t, "", append(append([]string{"reply", "--wait"}, b...), strings.TrimSpace(out))...); code != 5 {
		t.Fatalf("reply of a failing ticket: exit %d, want 5", code)
	}
	if out, _ := cli(t, "", append(append([]string{"status"}, b...), strings.TrimSpace(out))...); !strings.Contains(out, "doomed") || !strings.Contains(out, "state:    failed") {
		t.Fatalf("status of a failed ticket does not carry the stderr tail: %q", out)
	}
}
