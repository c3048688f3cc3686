package notify

import (
	"context"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
)

func TestPublishAndParse(t *testing.T) {
	p := New("tcp://127.0.0.1:*", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-p.Ready():
	case err := <-done:
		t.Fatal(err)
	}
	zctx, _ := zmq.NewContext()
	defer zctx.Term()
	sub, _ := zctx.NewSocket(zmq.SUB)
	defer sub.Close()
	_ = sub.SetLinger(0)
	_ = sub.SetRcvtimeo(100 * time.Millisecond)
	_ = sub.SetSubscribe(ServiceTopic + "echo")
	if err := sub.Connect(p.Endpoint()); err != nil {
		t.Fatal(err)
	}
	// Publish until the slow-joining subscription sees one.
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.Publish(Event{Ticket: "t1", State: "done", Service: "echo"})
		msg, err := sub.RecvMessage(0)
		if err == nil {
			ev, err := Parse(msg)
			if err != nil || ev.Ticket != "t1" || ev.State != "done" || ev.Service != "echo" || msg[0] != "service.echo" {
				t.Fatalf("got %q -> %+v, %v", msg, ev, err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no notification within 5s")
		}
	}
	if sent, _ := p.Stats(); sent == 0 {
		t.Fatal("nothing counted as sent")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A nil publisher is a no-op.
	var np *Publisher
	np.Publish(Event{Ticket: "x"})
}

func FuzzParse(f *testing.F) {
	f.Add("ticket.t|t|done|echo|1700000000000000000")
	f.Add("client.c1||connected||1")
	f.Add("x|y")
	f.Add("ticket.t|t|done|echo|notanumber")
	f.Fuzz(func(t *testing.T, in string) {
		frames := strings.Split(in, "|")
		ev, err := Parse(frames)
		if err != nil {
			return
		}
		if len(frames) < 5 || ev.Ticket != frames[1] || ev.State != frames[2] || ev.Service != frames[3] {
			t.Fatalf("Parse(%q) = %+v", frames, ev)
		}
	})
}

// A later version's event (more frames) is read by this one: its first
// five frames mean what they mean here.
func TestParseLaterVersion(t *testing.T) {
	ev, err := Parse([]string{"ticket.t", "t", "done", "echo", "1700000000000000000", "a frame of a later version"})
	if err != nil || ev.Ticket != "t" || ev.State != "done" || ev.Service != "echo" || ev.Time.UnixNano() != 1700000000000000000 {
		t.Fatalf("Parse = %+v, %v", ev, err)
	}
	if _, err := Parse([]string{"ticket.t", "t", "done", "echo"}); err == nil {
		t.Fatal("a 4-frame event was accepted")
	}
}
