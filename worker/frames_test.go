package worker

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/broker/mdp"
)

// A request of the most frames a broker takes from a client (1024 on
// its ROUTER, 1020 of them body) reaches the worker with the REQUEST
// header, 1025 frames: the worker takes it. It dropped it, idle and
// heartbeating, and the broker held the job's lease and the worker for
// good.
func TestWorkerTakesTheLargestRequest(t *testing.T) {
	const interval = 50 * time.Millisecond
	b, err := broker.New(broker.Config{Endpoints: []string{"tcp://127.0.0.1:*"}, HeartbeatInterval: interval, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx)
	<-b.Ready()
	ep := b.Endpoints()[0]
	startWorker(t, Config{Brokers: []string{ep}, Service: "count", HeartbeatInterval: interval},
		func(ctx context.Context, req [][]byte) ([][]byte, error) {
			return [][]byte{[]byte(strconv.Itoa(len(req)))}, nil
		})
	c := newClient(t, ep)
	body := make([][]byte, 1020)
	for i := range body {
		body[i] = []byte("x")
	}
	c.call("count", body, [][]byte{[]byte("1020")})
	c.call("count", [][]byte{[]byte("after")}, [][]byte{[]byte("1")})
}

// The Guide's mdbroker heartbeats idle workers only: a busy worker hears
// nothing from it until it replies. A job longer than HeartbeatInterval x
// Liveness still gets its REPLY out; the worker gave the connection up
// and discarded the result.
func TestWorkerLongJobBesideGuideBroker(t *testing.T) {
	b := newFakeBroker(t)
	startWorker(t, Config{Brokers: []string{b.ep}, HeartbeatInterval: 50 * time.Millisecond},
		func(ctx context.Context, req [][]byte) ([][]byte, error) {
			time.Sleep(400 * time.Millisecond) // 8 intervals, past 3 x 50 ms
			return [][]byte{[]byte("done")}, nil
		})
	id, _, _ := b.expect(mdp.Ready, "connect")
	b.request(id, []byte("c"), []byte("long"))
	b.expect(mdp.Reply, "the long request") // silent toward the busy worker, as the Guide's
}
