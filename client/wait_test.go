package client

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// A ticket given to Wait in upper case, or in the dashed UUID form (both
// of which the broker takes), is woken by the notification about it,
// which the broker publishes under the ticket's lowercase 32-hex form:
// not only by its own lookups, up to PollInterval apart.
func TestWaitWokenForTicketInAnotherForm(t *testing.T) {
	for _, form := range []string{strings.ToUpper(ticket), ticket[:8] + "-" + ticket[8:12] + "-" + ticket[12:16] + "-" + ticket[16:20] + "-" + ticket[20:]} {
		t.Run(form, func(t *testing.T) { checkWaitWoken(t, form) })
	}
}

// checkWaitWoken waits for ticket, given as form, and has it answered
// once Wait's lookups are 1.6s apart: the notice must end the Wait well
// before the next lookup.
func checkWaitWoken(t *testing.T, form string) {
	var done atomic.Bool
	f := newFake(t, func(service string, body [][]byte, n int) [][]byte {
		if service == tsp.SvcRole {
			return tsp.EncodeRole(tsp.Role{Serving: true})
		}
		if done.Load() {
			return frames("200", "the reply")
		}
		return frames(tsp.CodePending)
	})
	notify := harness.FreeEndpoint(t)
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := zctx.NewSocket(zmq.PUB)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close(); _ = zctx.Term() })
	_ = pub.SetLinger(0)
	if err := pub.Bind(notify); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Brokers: []string{f.endpoint}, Notify: []string{notify}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	type result struct {
		rep [][]byte
		err error
	}
	res := make(chan result, 1)
	go func() {
		rep, err := c.Wait(testCtx(t), form, WaitOptions{PollInterval: 10 * time.Second})
		res <- result{rep, err}
	}()
	// Lookups come 50, 100, 200, 400 and 800 ms apart: after the sixth
	// the pause is 1.6 s.
	deadline := time.Now().Add(10 * time.Second)
	for len(f.requests()) < 6 {
		if time.Now().After(deadline) {
			t.Fatalf("%d lookups in 10 s, want 6", len(f.requests()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	done.Store(true)
	start := time.Now()
	ev := tsp.Event{Ticket: ticket, State: "done", Service: "echo", Time: time.Now()}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	limit := time.NewTimer(5 * time.Second)
	defer limit.Stop()
	for {
		// The broker publishes once; sent until Wait ends here, the
		// subscription being made at the first lookup long before.
		_, _ = pub.SendMessage(ev.Frames(tsp.TicketTopic + ticket))
		select {
		case r := <-res:
			if r.err != nil || len(r.rep) != 1 || string(r.rep[0]) != "the reply" {
				t.Fatalf("Wait = %q, %v; want the reply", r.rep, r.err)
			}
			if el := time.Since(start); el > 800*time.Millisecond {
				t.Fatalf("Wait ended %s after the notice: woken by its next lookup, not by the notice", el.Round(time.Millisecond))
			}
			return
		case <-tick.C:
		case <-limit.C:
			t.Fatal("Wait did not end within 5 s of the notice")
		}
	}
}
