package e2e

import (
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// TestClientPresence: a client with an id is listed by `titanic clients`
// while connected; it leaves the list when it closes (bye) or when it goes
// silent (presence timeout); each transition is published as a
// notification on topic client.<id>.
func TestClientPresence(t *testing.T) {
	ep, nep := harness.FreeEndpoint(t), harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), append([]string{"--notify-listen", nep, "--presence-timeout", "1s"}, fastBroker...)...)

	zctx, _ := zmq.NewContext()
	defer zctx.Term()
	sub, _ := zctx.NewSocket(zmq.SUB)
	defer sub.Close()
	_ = sub.SetLinger(0)
	_ = sub.SetRcvtimeo(5 * time.Second)
	_ = sub.SetSubscribe(tsp.ClientTopic)
	if err := sub.Connect(nep); err != nil {
		t.Fatal(err)
	}
	next := func() tsp.Event {
		t.Helper()
		msg, err := sub.RecvMessage(0)
		if err != nil {
			t.Fatalf("no presence notification: %v", err)
		}
		ev, err := tsp.ParseEvent(msg)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	listed := func() string {
		out, code := cli(t, "", "clients", "--broker", ep)
		if code != 0 {
			t.Fatalf("clients: exit %d", code)
		}
		return out
	}
	// The subscription needs a moment to reach the publisher: connect
	// clients until the first event arrives.
	var alice *client.Client
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := client.New(client.Config{Brokers: []string{ep}, ID: "alice", PresenceInterval: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		_ = sub.SetRcvtimeo(500 * time.Millisecond)
		if msg, err := sub.RecvMessage(0); err == nil {
			if ev, _ := tsp.ParseEvent(msg); ev.Client == "alice" && ev.State == "connected" {
				alice = c
				break
			}
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("no connected notification")
		}
	}
	_ = sub.SetRcvtimeo(5 * time.Second)
	if out := listed(); !strings.Contains(out, "alice") {
		t.Fatalf("alice not listed:\n%s", out)
	}
	// Close: bye, disconnected at once.
	alice.Close()
	if ev := next(); ev.Client != "alice" || ev.State != "disconnected" {
		t.Fatalf("after close: %+v", ev)
	}
	if out := listed(); strings.Contains(out, "alice") {
		t.Fatalf("alice still listed after bye:\n%s", out)
	}
	// Silence: bob stops saying hello (a huge interval after the first).
	bob, err := client.New(client.Config{Brokers: []string{ep}, ID: "bob", PresenceInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	// Events of the alice clients the loop above gave up on (a hello
	// slower than the wait on a loaded machine, then their bye) may still
	// come: skip alice's.
	nextBob := func() tsp.Event {
		t.Helper()
		ev := next()
		for ev.Client == "alice" {
			ev = next()
		}
		return ev
	}
	if ev := nextBob(); ev.Client != "bob" || ev.State != "connected" {
		t.Fatalf("bob: %+v", ev)
	}
	if ev := nextBob(); ev.Client != "bob" || ev.State != "disconnected" {
		t.Fatalf("bob silent: %+v", ev)
	}
}
