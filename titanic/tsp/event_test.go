package tsp_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/titanic/tsp"
)

func TestEventFrames(t *testing.T) {
	ev := tsp.Event{Ticket: "t1", State: "done", Service: "echo", Time: time.Unix(0, 1700000000000000000)}
	if got := ev.Topics(); !slices.Equal(got, []string{"ticket.t1", "service.echo"}) {
		t.Fatalf("topics %q", got)
	}
	for _, topic := range ev.Topics() {
		fr := ev.Frames(topic)
		if want := []string{topic, "t1", "done", "echo", "1700000000000000000"}; !slices.Equal(fr, want) {
			t.Fatalf("frames %q, want %q", fr, want)
		}
		got, err := tsp.ParseEvent(fr)
		if err != nil || got != ev {
			t.Fatalf("ParseEvent(%q) = %+v, %v; want %+v", fr, got, err, ev)
		}
	}
	c := tsp.Event{Client: "alice", State: "connected", Time: time.Unix(0, 1)}
	if got := c.Topics(); !slices.Equal(got, []string{"client.alice"}) {
		t.Fatalf("presence topics %q", got)
	}
	if got, err := tsp.ParseEvent(c.Frames("client.alice")); err != nil || got.Client != "alice" || got.State != "connected" {
		t.Fatalf("presence event: %+v, %v", got, err)
	}
	for state, final := range map[string]bool{"done": true, "failed": true, "closed": true, "pending": false, "dispatched": false} {
		if (tsp.Event{State: state}).Final() != final {
			t.Errorf("Final of %s: want %t", state, final)
		}
	}
}

func FuzzParseEvent(f *testing.F) {
	f.Add("ticket.t|t|done|echo|1700000000000000000")
	f.Add("client.c1||connected||1")
	f.Add("x|y")
	f.Add("ticket.t|t|done|echo|notanumber")
	f.Fuzz(func(t *testing.T, in string) {
		frames := strings.Split(in, "|")
		ev, err := tsp.ParseEvent(frames)
		if err != nil {
			return
		}
		if len(frames) < 5 || ev.Ticket != frames[1] || ev.State != frames[2] || ev.Service != frames[3] {
			t.Fatalf("ParseEvent(%q) = %+v", frames, ev)
		}
	})
}

// A later version's event (more frames) is read by this one: its first
// five frames mean what they mean here.
func TestParseEventLaterVersion(t *testing.T) {
	ev, err := tsp.ParseEvent([]string{"ticket.t", "t", "done", "echo", "1700000000000000000", "a frame of a later version"})
	if err != nil || ev.Ticket != "t" || ev.State != "done" || ev.Service != "echo" || ev.Time.UnixNano() != 1700000000000000000 {
		t.Fatalf("ParseEvent = %+v, %v", ev, err)
	}
	if _, err := tsp.ParseEvent([]string{"ticket.t", "t", "done", "echo"}); err == nil {
		t.Fatal("a 4-frame event was accepted")
	}
}
