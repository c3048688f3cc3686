package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

// README: titanic clients lists "titanic's own waiting commands while
// they wait". A wait that ends at --wait-timeout (exit 3) leaves its
// command listed, and counted in titanic_connected_clients, for the
// broker's presence timeout (15 s) after it exited: it says no
// titanic.bye on that path (Ctrl-C and an answered wait do).
func TestWaitTimeoutSaysBye(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir())
	br := []string{"--broker", ep}
	code, out, stderr := binCLI(t, append([]string{"submit", "nobody", "x"}, br...)...)
	if code != exitOK {
		t.Fatalf("submit: exit %d, %s", code, stderr)
	}
	ticket := strings.TrimSpace(out)
	for _, args := range [][]string{
		{"reply", "--wait", "--wait-timeout", "1s", ticket},
		{"wait", "--wait-timeout", "1s", ticket},
		{"submit", "--wait", "--wait-timeout", "1s", "nobody", "y"},
	} {
		if code, _, stderr := binCLI(t, append(args, br...)...); code != exitPending {
			t.Fatalf("%v: exit %d (%s), want %d", args, code, stderr, exitPending)
		}
		_, out, _ := binCLI(t, append([]string{"clients"}, br...)...)
		if strings.Contains(out, "titanic-"+args[0]+"@") {
			t.Errorf("titanic %s ended (exit 3) but titanic clients still lists it:\n%s", strings.Join(args, " "), out)
		}
	}
}

// The same for a wait ended by SIGTERM (exit 130): its call in flight is
// abandoned, and the bye still goes out.
func TestWaitInterruptedSaysBye(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir())
	code, out, stderr := binCLI(t, "submit", "--broker", ep, "nobody", "x")
	if code != exitOK {
		t.Fatalf("submit: exit %d, %s", code, stderr)
	}
	p := harness.Start(t, "reply", "", "reply", "--wait", "--broker", ep, strings.TrimSpace(out))
	listed := func() bool {
		_, out, _ := binCLI(t, "clients", "--broker", ep)
		return strings.Contains(out, "titanic-reply@")
	}
	deadline := time.Now().Add(10 * time.Second)
	for !listed() {
		if time.Now().After(deadline) {
			t.Fatalf("titanic reply --wait not listed by titanic clients within 10s:\n%s", p.Tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.Signal(syscall.SIGTERM)
	for !p.Exited() {
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatalf("titanic reply --wait did not end on SIGTERM:\n%s", p.Tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if listed() {
		t.Errorf("titanic reply --wait ended by SIGTERM but titanic clients still lists it")
	}
}
