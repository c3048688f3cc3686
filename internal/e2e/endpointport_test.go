package e2e

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

// TestFirstHourClientEndpointWithoutPort: README says an endpoint without
// its transport is a usage error (exit 2) "that says what to write, in
// client commands and workers alike", and the broker refuses
// `--listen tcp://127.0.0.1` so ("want tcp://HOST:PORT", exit 2). The
// clients and the worker check only the transport:
//
//   - `titanic submit --broker tcp://127.0.0.1 upper x` (port forgotten):
//     "connect tcp://127.0.0.1: invalid argument", libzmq's EINVAL, exit 1;
//     the worker the same, after logging "worker running";
//   - `--broker tcp://127.0.0.1:99999` (a port mistyped): after 2 s,
//     "connection refused (no broker listens there)", exit 6;
//   - TITANIC_PARSE_ONLY=1 says "command line ok" to both.
func TestFirstHourClientEndpointWithoutPort(t *testing.T) {
	for _, ep := range []string{"tcp://127.0.0.1", "tcp://127.0.0.1:99999"} {
		for _, args := range [][]string{
			{"submit", "--broker", ep, "upper", "x"},
			{"status", "--broker", ep, "01a250fa939275a08531b71bda1798f6"},
			{"worker", "--broker", ep, "upper", "--", "cat"},
		} {
			stderr, code := runWithin(t, 10*time.Second, args...)
			if code != 2 || !strings.Contains(stderr, "PORT") {
				t.Errorf("titanic %s: exit %d, want 2 saying what to write (tcp://HOST:PORT); stderr: %s",
					strings.Join(args, " "), code, strings.TrimSpace(lastLines(stderr, 2)))
			}
		}
	}
}

// runWithin runs the binary with args for at most d (a worker runs until
// stopped: -1 then) and returns its stderr and exit code.
func runWithin(t *testing.T, d time.Duration, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.Binary(t), args...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		return errb.String() + "(still running after " + d.String() + ")", -1
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return errb.String(), ee.ExitCode()
	}
	return errb.String(), 0
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
