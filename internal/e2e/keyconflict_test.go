package e2e

import (
	"strings"
	"testing"

	"github.com/titanicmq/titanic/internal/harness"
)

// submit --key: a resend (same service, same body, from an argument or
// standard input) prints the original ticket; another body or another
// service exits 7 naming the key and the original ticket, and prints no
// ticket. Once the original is closed the key is free again.
func TestCLISubmitKeyConflict(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), fastBroker...)
	submit := func(stdin string, args ...string) (string, string, int) {
		t.Helper()
		out, errText, code := cliStderr(t, stdin, append([]string{"submit", "--broker", ep, "--timeout", "1s", "--key", "order-7"}, args...)...)
		return strings.TrimSpace(out), errText, code
	}
	orig, _, code := submit("", "ship", "box 1")
	if code != 0 || len(orig) != 32 {
		t.Fatalf("first submit: %q exit %d, want a ticket", orig, code)
	}
	if tk, _, code := submit("", "ship", "box 1"); code != 0 || tk != orig {
		t.Fatalf("resend: %q exit %d, want %s", tk, code, orig)
	}
	if tk, _, code := submit("box 1", "ship", "-"); code != 0 || tk != orig {
		t.Fatalf("resend through standard input: %q exit %d, want %s", tk, code, orig)
	}
	for _, tc := range []struct {
		name string
		args []string
		what string
	}{
		{"other body", []string{"ship", "box 2"}, "another body"},
		{"other service", []string{"mail", "box 1"}, "another service"},
	} {
		out, errText, code := submit("", tc.args...)
		if code != 7 || out != "" {
			t.Fatalf("%s: stdout %q exit %d, want nothing and exit 7 (key conflict); stderr %q", tc.name, out, code, errText)
		}
		for _, want := range []string{`key "order-7"`, "ticket " + orig, tc.what} {
			if !strings.Contains(errText, want) {
				t.Fatalf("%s: stderr %q does not say %q", tc.name, errText, want)
			}
		}
	}
	if out, code := cli(t, "", "tickets", "--broker", ep); code != 0 || strings.Count(out, "\n") != 1 || !strings.Contains(out, orig) {
		t.Fatalf("tickets after the conflicts: %q exit %d, want the original only", out, code)
	}
	// Closing the original frees its key: another body is a new ticket.
	if _, code := cli(t, "", "close", "--broker", ep, orig); code != 0 {
		t.Fatalf("close: exit %d", code)
	}
	if tk, errText, code := submit("", "ship", "box 2"); code != 0 || len(tk) != 32 || tk == orig {
		t.Fatalf("after close: %q exit %d (stderr %q), want a new ticket", tk, code, errText)
	}
}
