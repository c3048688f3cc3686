package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
)

// TestSubmitFromAndWait: `titanic submit --from FILE` makes one ticket per
// line (a rerun with the same --key gives the same tickets), `titanic wait`
// waits for them all and reports each; `titanic completion bash` knows the
// commands and their flags.
func TestSubmitFromAndWait(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), fastBroker...)
	harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "--heartbeat", "200ms", "up", "--", "tr", "a-z", "A-Z")
	file := filepath.Join(t.TempDir(), "lines")
	var lines []string
	for i := range 50 {
		lines = append(lines, strings.Repeat("x", i%7)+"line")
	}
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := cli(t, "", "submit", "--broker", ep, "--from", file, "--key", "run1", "up")
	got := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(got) != 50 {
		t.Fatalf("submit --from: exit %d, %d lines", code, len(got))
	}
	again, _ := cli(t, "", "submit", "--broker", ep, "--from", file, "--key", "run1", "up")
	if again != out {
		t.Fatal("a rerun with the same --key made other tickets")
	}
	res, code := cli(t, out, "wait", "--broker", ep, "-")
	if code != 0 || strings.Count(res, "\tdone\n") != 50 {
		t.Fatalf("wait: exit %d\n%s", code, res)
	}
	comp, code := cli(t, "", "completion", "bash")
	if code != 0 || !strings.Contains(comp, "complete -F _titanic titanic") || !strings.Contains(comp, "--from") {
		t.Fatalf("completion: exit %d", code)
	}
}

// TestSubmitFromPipelined: `titanic submit --from FILE` of 1,000 lines
// pipelines the submits on one connection and prints one ticket per line
// in input order; workers answer every ticket with its own line's reply.
// Against no broker it fails with a clear exit code and nothing printed.
func TestSubmitFromPipelined(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	br := harness.Broker(t, "broker", ep, t.TempDir(), fastBroker...)
	for i := range 4 {
		harness.Start(t, fmt.Sprintf("worker%d", i), "worker running",
			"worker", "--broker", ep, "--heartbeat", "200ms", "upper", "--", "tr", "a-z", "A-Z")
	}
	const n = 1000
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf("request number %d", i+1))
	}
	file := filepath.Join(t.TempDir(), "lines")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := cli(t, "", "submit", "--broker", ep, "--from", file, "--parallel", "128", "upper")
	got := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(got) != n {
		t.Fatalf("submit --from: exit %d, %d lines\nbroker log:\n%s", code, len(got), br.Tail())
	}
	tickets := make([]string, n)
	seen := map[string]bool{}
	for i, l := range got {
		tk, num, ok := strings.Cut(l, "\t")
		if !ok || num != fmt.Sprint(i+1) || len(tk) != 32 || seen[tk] {
			t.Fatalf("output line %d = %q, want a new ticket and line number %d", i+1, l, i+1)
		}
		seen[tk], tickets[i] = true, tk
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := newClient(t, ep)
	for i, tk := range tickets {
		rep, err := cl.Reply(ctx, tk, client.ReplyOptions{Wait: true})
		if err != nil {
			t.Fatalf("reply %d (%s): %v\nbroker log:\n%s", i+1, tk, err, br.Tail())
		}
		if want := strings.ToUpper(lines[i]); string(bytes.Join(rep, nil)) != want {
			t.Fatalf("reply %d = %q, want %q", i+1, bytes.Join(rep, nil), want)
		}
	}
	// No broker: every submit fails, the command says so and exits 6.
	out, code = cli(t, "a\nb\n", "submit", "--broker", harness.FreeEndpoint(t), "--timeout", "100ms", "--retries", "1", "--from", "-", "upper")
	if code != 6 || out != "" {
		t.Fatalf("submit --from with no broker: exit %d, output %q; want 6 and nothing", code, out)
	}
}
