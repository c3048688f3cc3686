package upgrade

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runCLI runs a titanic client command of bin and returns its standard
// output, then its standard error after a line "--- stderr", and its exit
// code. lastLine of the result is the output's last line.
func runCLI(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	res := string(out)
	if stderr.Len() > 0 {
		res += "--- stderr\n" + stderr.String()
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return res, 0
	case errors.As(err, &ee):
		return res, ee.ExitCode()
	}
	t.Fatalf("%s %v: %v", bin, args, err)
	return "", -1
}

// stdoutLast is the last line of runCLI's standard output.
func stdoutLast(res string) string {
	out, _, _ := strings.Cut(res, "--- stderr\n")
	out = strings.TrimSpace(out)
	return out[strings.LastIndexByte(out, '\n')+1:]
}

// TestMixedClients: the previous release's CLI client and worker against a
// current broker keep working; the current CLI against a broker of the
// previous release works for what that broker offers and says clearly
// what it does not ("not supported by this broker", exit 8), without
// hanging.
func TestMixedClients(t *testing.T) {
	_, oldBin, newBin := binaries(t)

	t.Run("old-clients-new-broker", func(t *testing.T) {
		n, net := single(t, "new", newBin)
		ep := n.endpoint()
		wh := net.Host("w1")
		if _, err := wh.TryStartBin(t, oldBin, "old-worker", "worker running", "worker", "--broker", ep, "--heartbeat", "200ms", "upper", "--", "tr", "a-z", "A-Z"); err != nil {
			t.Fatalf("old worker: %v", err)
		}
		out, code := runCLI(t, oldBin, "submit", "--broker", ep, "--wait", "upper", "hello")
		if code != 0 || !strings.HasPrefix(stdoutLast(out), "HELLO") {
			t.Fatalf("old submit --wait against the new broker: exit %d %q%s", code, out, diag(n))
		}
		out, code = runCLI(t, oldBin, "submit", "--broker", ep, "--key", "k1", "upper", "again")
		ticket := stdoutLast(out)
		if code != 0 || len(ticket) != 32 {
			t.Fatalf("old keyed submit: exit %d %q", code, out)
		}
		if out, code = runCLI(t, oldBin, "reply", "--broker", ep, "--wait", ticket); code != 0 || stdoutLast(out) != "AGAIN" {
			t.Fatalf("old reply --wait: exit %d %q", code, out)
		}
		if out, code = runCLI(t, oldBin, "status", "--broker", ep, ticket); code != 0 || !strings.Contains(out, "done") {
			t.Fatalf("old status: exit %d %q", code, out)
		}
		if out, code = runCLI(t, oldBin, "close", "--broker", ep, ticket); code != 0 {
			t.Fatalf("old close: exit %d %q", code, out)
		}
	})

	t.Run("new-clients-old-broker", func(t *testing.T) {
		n, net := single(t, "old", oldBin)
		ep := n.endpoint()
		wh := net.Host("w1")
		if _, err := wh.TryStartBin(t, newBin, "new-worker", "worker running", "worker", "--broker", ep, "--heartbeat", "200ms", "upper", "--", "tr", "a-z", "A-Z"); err != nil {
			t.Fatalf("new worker: %v", err)
		}
		out, code := runCLI(t, newBin, "submit", "--broker", ep, "--wait", "upper", "hello")
		if code != 0 || !strings.HasPrefix(stdoutLast(out), "HELLO") {
			t.Fatalf("new submit --wait against the old broker: exit %d %q%s", code, out, diag(n))
		}
		out, code = runCLI(t, newBin, "submit", "--broker", ep, "upper", "x")
		ticket := stdoutLast(out)
		if code != 0 {
			t.Fatalf("new submit: exit %d %q", code, out)
		}
		start := time.Now()
		out, code = runCLI(t, newBin, "retry", "--broker", ep, ticket)
		if code != 8 || !strings.Contains(out, "not supported by this broker") {
			t.Fatalf("new retry against the old broker: exit %d %q, want 8 and \"not supported by this broker\"", code, out)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("the refusal took %s", d)
		}
	})
}
