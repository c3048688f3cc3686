package main

import (
	"context"

	"github.com/titanicmq/titanic/client"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

// Strings that come from the wire (a service name any client may submit
// to; a failure reason built from a worker's stderr) are printed by the
// operator's commands escaped: an escape sequence would reach the
// operator's terminal (ESC[2J clears it; others retitle it or rewrite
// what is shown), and a newline would forge lines: a row of `titanic
// stats`, a "ticket:" line of `titanic status`. So are errors on stderr
// (reply's, here), which carry the same text.
func TestCLIOutputEscapesWireStrings(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir())
	br := []string{"--broker", ep}
	evil := "ev\x1b[31mil\nforged  9  9  9"
	if code, _, stderr := binCLI(t, append([]string{"submit", evil, "x"}, br...)...); code != exitOK {
		t.Fatalf("submit to %q: exit %d, %s", evil, code, stderr)
	}
	harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "--heartbeat", "200ms", "esc", "--",
		"sh", "-c", `printf 'boom\033[2J\nticket:   forged\n' >&2; exit 3`)
	code, out, stderr := binCLI(t, append([]string{"submit", "--attempts", "1", "esc", "x"}, br...)...)
	if code != exitOK {
		t.Fatalf("submit esc: exit %d, %s", code, stderr)
	}
	ticket := strings.TrimSpace(out)
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, out, _ := binCLI(t, append([]string{"status", ticket}, br...)...)
		if strings.Contains(out, "failed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ticket did not fail within 20s: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Errors on stderr too: the reason is reply's error (exit 5). It
	// reached the terminal raw, ESC and forged line alike.
	if code, _, stderr := binCLI(t, append([]string{"reply", ticket}, br...)...); code != exitFailed || !strings.Contains(stderr, "boom") {
		t.Errorf("reply of the failed ticket: exit %d, %q: want %d with its reason", code, stderr, exitFailed)
	} else if strings.ContainsRune(stderr, '\x1b') || strings.Contains(stderr, "\nticket:") || !strings.Contains(stderr, `boom\x1b[2J\nticket:`) {
		t.Errorf("titanic reply printed the worker's words on stderr unescaped (a raw ESC, or a forged line):\n%q", stderr)
	}
	for _, args := range [][]string{{"stats"}, {"tickets"}, {"status", ticket}, {"status", "--attempts", ticket}, {"dead"}} {
		code, out, stderr := binCLI(t, append(args, br...)...)
		if code != exitOK {
			t.Fatalf("%v: exit %d, %s", args, code, stderr)
		}
		if strings.ContainsRune(out, '\x1b') {
			t.Errorf("titanic %s printed a raw ESC from the wire:\n%q", strings.Join(args, " "), out)
		}
		// The reason's text, escaped, still holds "ticket:": a forged
		// line is one that starts with it.
		if strings.Contains(out, "\nforged") || strings.Count("\n"+out, "\nticket:") > 1 {
			t.Errorf("titanic %s printed a line forged by a wire string's newline:\n%s", strings.Join(args, " "), out)
		}
	}
}

// The same for client IDs: any client names itself in titanic.hello (the
// Go client's Config.ID, checked for length only), and titanic clients
// prints the ID escaped. An ID with white space in it ("billing worker
// 1", a legitimate name) is listed whole, text and --json alike:
// titanic.clients answers one "ID SINCE SEEN" frame per client, whose ID
// is all before the last two fields.
func TestClientsListsAndEscapesClientIDs(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir())
	for _, id := range []string{"app\x1b[2J", "billing worker 1"} {
		c, err := client.New(client.Config{Brokers: []string{ep}, ID: id, Timeout: 2 * time.Second, Retries: 3})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.QueueStats(context.Background(), ""); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	code, out, stderr := binCLI(t, "clients", "--broker", ep)
	if code != exitOK {
		t.Fatalf("clients: exit %d, %s", code, stderr)
	}
	if strings.ContainsRune(out, '\x1b') {
		t.Errorf("titanic clients printed a client's ID raw (ESC):\n%q", out)
	}
	if !strings.Contains(out, "app") {
		t.Errorf("titanic clients does not list the client %q:\n%q", "app\x1b[2J", out)
	}
	if !strings.Contains(out, "billing") {
		t.Errorf("titanic clients does not list the client \"billing worker 1\" (an ID with spaces), present for 0.5 s:\n%q%s", out, stderr)
	}
	_, js, _ := binCLI(t, "clients", "--json", "--broker", ep)
	if !strings.Contains(js, "billing") {
		t.Errorf("titanic clients --json does not list \"billing worker 1\": %s", js)
	}
}
