package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

// A worker of a reserved service is refused at once, before it dials: the
// broker would refuse its READY and it would reconnect forever.
func TestWorkerRefusesReservedServices(t *testing.T) {
	for _, svc := range []string{"mmi.x", "titanic.request", "titanic.x"} {
		start := time.Now()
		code, _, stderr := runCLI(t, context.Background(), "worker", "--broker", "tcp://127.0.0.1:1", svc, "--", "cat")
		if code != exitError || time.Since(start) > 5*time.Second ||
			!strings.Contains(stderr, `the "mmi." and "titanic." services are reserved`) {
			t.Errorf("worker %s -- cat: exit %d after %s, stderr %q; want %d at once naming both reserved prefixes",
				svc, code, time.Since(start), stderr, exitError)
		}
	}
}

// A submit every broker refuses for good says it failed at once, or after
// the tries it made, each refused at once: not "after 3 tries of 1s",
// which were never waited out.
func TestRefusedSubmitSaysWhatWasTried(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), "--max-message-size", "4KiB")
	dead := harness.FreeEndpoint(t)
	big := strings.Repeat("x", 64<<10)
	for _, tc := range []struct {
		brokers, want string
	}{
		{ep, "titanic.submit failed at once:\n  " + ep + ": the broker closed the connection right after this request"},
		// The live broker is asked each time, and refuses each at once.
		// (6 tries, unless the dead one has refused its connections for
		// --refused-wait by then).
		{ep + "," + dead, " tries, each refused at once:\n"},
	} {
		start := time.Now()
		code, _, stderr := runCLI(t, context.Background(), "submit", "--broker", tc.brokers, "echo", big)
		if el := time.Since(start); code != exitUnavailable || el > 5*time.Second ||
			!strings.Contains(stderr, tc.want) || strings.Contains(stderr, "tries of") {
			t.Errorf("submit --broker %s echo <64 KiB>: exit %d after %s, stderr %q; want %d saying %q", tc.brokers, code, el, stderr, exitUnavailable, tc.want)
		}
	}
}

// close refuses a malformed ticket as reply does (exit 4, the same
// words), before asking a broker (which would answer a close of any
// string with success); a well-formed unknown ticket closes (9/TSP: close
// is idempotent). wait counts an unknown ticket as unknown, not failed,
// and exits 4.
func TestCloseAndWaitOfUnknownTickets(t *testing.T) {
	ctx := context.Background()
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir())
	br := []string{"--broker", ep}
	for _, tk := range []string{"garbage", "0123456789abcdef0123456789abcdeg"} {
		_, _, replyErr := runCLI(t, ctx, append([]string{"reply", tk}, br...)...)
		code, stdout, stderr := runCLI(t, ctx, append([]string{"close", tk}, br...)...)
		if code != exitUnknown || stdout != "" || !strings.Contains(stderr, "malformed ticket id") ||
			strings.TrimPrefix(stderr, "titanic close: ") != strings.TrimPrefix(replyErr, "titanic reply: ") {
			t.Errorf("close %s: exit %d, stdout %q, stderr %q; want %d and reply's words %q", tk, code, stdout, stderr, exitUnknown, replyErr)
		}
	}
	for _, tk := range []string{"0123456789abcdef0123456789abcdef", "01234567-89ab-cdef-0123-456789abcdef"} {
		if code, stdout, stderr := runCLI(t, ctx, append([]string{"close", tk}, br...)...); code != exitOK || stdout+stderr != "" {
			t.Errorf("close %s (well-formed, unknown): exit %d, stdout %q, stderr %q; want success", tk, code, stdout, stderr)
		}
	}
	const unknown = "0123456789abcdef0123456789abcdef"
	code, stdout, stderr := runCLI(t, ctx, append([]string{"wait", unknown}, br...)...)
	if code != exitUnknown || stdout != unknown+"\tunknown\n" ||
		!strings.Contains(stderr, "1/1 answered, 0 failed, 1 unknown") || !strings.Contains(stderr, "1 of 1 tickets unknown") {
		t.Errorf("wait %s: exit %d, stdout %q, stderr %q; want %d, unknown counted as unknown", unknown, code, stdout, stderr, exitUnknown)
	}
}
