package main

import (
	"strings"
	"testing"

	"github.com/titanicmq/titanic/internal/harness"
)

// titanic wait's progress does not count an unknown ticket as answered
// (it said "1/1 answered, 0 failed, 1 unknown" for one ticket nobody
// knows). README: the progress shows "answered, failed and, when any,
// unknown": three counts, of which an unknown ticket is the third, not
// the first. Nothing was answered.
func TestWaitProgressDoesNotCountUnknownAsAnswered(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir())
	code, _, stderr := binCLI(t, "wait", "--broker", ep, "--wait-timeout", "1s", "0123456789abcdef0123456789abcdef")
	if code != exitUnknown {
		t.Fatalf("wait of an unknown ticket: exit %d, want %d; %s", code, exitUnknown, stderr)
	}
	if strings.Contains(stderr, "1/1 answered") {
		t.Errorf("wait of one unknown ticket says it was answered:\n%s", stderr)
	}
}
