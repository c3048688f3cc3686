package notify

import (
	"context"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/titanic/tsp"
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
