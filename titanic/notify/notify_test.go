package notify

import (
	"context"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// startPublisher runs a Publisher on a free port until cancel; done
// carries Run's result.
func startPublisher(t *testing.T) (*Publisher, context.CancelFunc, <-chan error) {
	t.Helper()
	p := New("tcp://127.0.0.1:*", nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-p.Ready():
	case err := <-done:
		cancel()
		t.Fatal(err)
	}
	return p, cancel, done
}

func TestPublishAndParse(t *testing.T) {
	p, cancel, done := startPublisher(t)
	defer cancel()
	zctx, _ := zmq.NewContext()
	defer zctx.Term()
	sub, _ := zctx.NewSocket(zmq.SUB)
	defer sub.Close()
	_ = sub.SetLinger(0)
	_ = sub.SetRcvtimeo(100 * time.Millisecond)
	_ = sub.SetSubscribe(tsp.ServiceTopic + "echo")
	if err := sub.Connect(p.Endpoint()); err != nil {
		t.Fatal(err)
	}
	// Publish until the slow-joining subscription sees one.
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.Publish(tsp.Event{Ticket: "t1", State: "done", Service: "echo"})
		msg, err := sub.RecvMessage(0)
		if err == nil {
			ev, err := tsp.ParseEvent(msg)
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
	np.Publish(tsp.Event{Ticket: "x"})
}

// A subscription (a topic, under 300 bytes) larger than the publisher
// takes is not taken: the subscriber gets nothing, while one of a normal
// topic does. Any size was read whole and kept for the connection's life
// (a 256 MiB one took a broker from 20 to 276 MiB; found by an outside-in
// tester).
func TestHugeSubscriptionRefused(t *testing.T) {
	p, cancel, _ := startPublisher(t)
	defer cancel()
	zctx, _ := zmq.NewContext()
	defer zctx.Term()
	sub := func(topic string) *zmq.Socket {
		s, _ := zctx.NewSocket(zmq.SUB)
		_ = s.SetLinger(0)
		_ = s.SetRcvtimeo(50 * time.Millisecond)
		_ = s.SetSubscribe(topic)
		if err := s.Connect(p.Endpoint()); err != nil {
			t.Fatal(err)
		}
		return s
	}
	// The huge topic is a prefix of the events' topic, so it would match.
	huge := sub(tsp.ServiceTopic + "echo" + strings.Repeat("x", 64<<10))
	defer huge.Close()
	normal := sub(tsp.ServiceTopic + "echo")
	defer normal.Close()
	service := "echo" + strings.Repeat("x", 64<<10)
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.Publish(tsp.Event{Ticket: "t1", State: "done", Service: service})
		if _, err := huge.RecvMessage(0); err == nil {
			t.Fatal("a subscriber with a 64 KiB subscription got an event")
		}
		if _, err := normal.RecvMessage(0); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the normal subscriber got nothing within 5s")
		}
	}
	// The normal one hears events, and a few more rounds: still none for
	// the huge one.
	for range 10 {
		p.Publish(tsp.Event{Ticket: "t2", State: "done", Service: service})
		if _, err := huge.RecvMessage(0); err == nil {
			t.Fatal("a subscriber with a 64 KiB subscription got an event")
		}
	}
}
