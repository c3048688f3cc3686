package main

import (
	"context"
	"strings"
	"testing"

	"github.com/titanicmq/titanic/internal/harness"
)

// `titanic wait` when no broker answers has not seen the ticket fail: it
// exits 6 (no broker answered), as `titanic reply --wait` does, not 5
// (ticket failed), so that a script resubmitting failed tickets does not
// resubmit one that may well be done while the broker was only down.
func TestWaitWithNoBrokerIsNotATicketFailure(t *testing.T) {
	const ticket = "0123456789abcdef0123456789abcdef"
	dead := harness.FreeEndpoint(t) // reserved, never listening: refused
	code, stdout, stderr := runCLI(t, context.Background(), "wait", "--broker", dead, ticket)
	if code != exitUnavailable || strings.Contains(stderr, "failed:") || strings.Contains(stderr, "1 failed") {
		t.Errorf("wait with no broker listening: exit %d, stderr %q; want %d (no broker answered) and no ticket called failed",
			code, stderr, exitUnavailable)
	}
	if !strings.HasPrefix(stdout, ticket+"\terror: no broker answered") {
		t.Errorf("wait with no broker listening: stdout %q; want the ticket's line to say no broker answered", stdout)
	}
	if code, _, _ := runCLI(t, context.Background(), "reply", "--wait", "--broker", dead, ticket); code != exitUnavailable {
		t.Errorf("reply --wait with no broker listening: exit %d, want %d", code, exitUnavailable)
	}
}

// The progress report is redrawn with "\r" four times a second only on a
// terminal: written to a file or a pipe (a CI log), it is one final line,
// not one per tick joined by carriage returns.
func TestProgressOnlyOnATerminal(t *testing.T) {
	dead := harness.FreeEndpoint(t)
	// Refused for 1.5s: six ticks of the report on a terminal.
	_, _, stderr := runCLI(t, context.Background(), "wait", "--broker", dead, "--refused-wait", "1500ms", "0123456789abcdef0123456789abcdef")
	if strings.Contains(stderr, "\r") || strings.Count(stderr, "1/1 ended") != 1 {
		t.Errorf("wait, its standard error not a terminal: stderr %q; want one progress line, no carriage return", stderr)
	}
}
