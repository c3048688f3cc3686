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
