package e2e

import (
	"strings"
	"testing"

	"github.com/titanicmq/titanic/internal/harness"
)

// Issue 12, a new user's first hour: each trap through the built binary.

// Flags after the service name are flags, not the worker's command; flags
// after a ticket are flags too.
func TestFirstHourFlagsAnywhere(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), fastBroker...)
	harness.Start(t, "worker", "worker running", "worker", "upper", "--broker", ep, "--timeout", "10s", "--heartbeat", "200ms", "--", "tr", "a-z", "A-Z")
	out, code := cli(t, "", "submit", "upper", "abc", "--broker", ep)
	ticket := strings.TrimSpace(out)
	if code != 0 || len(ticket) != 32 {
		t.Fatalf("submit SERVICE BODY --broker EP: %q exit %d, want a ticket", out, code)
	}
	if out, code := cli(t, "", "reply", ticket, "--wait", "--broker", ep); code != 0 || out != "ABC" {
		t.Fatalf("reply TICKET --wait --broker EP: %q exit %d, want ABC (the worker ran tr, not --timeout)", out, code)
	}
}
