package client

import (
	"sync/atomic"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker/zsock"
	"github.com/titanicmq/titanic/internal/harness"
)

// An unexpected failure of the pipeline's sockets (here: no socket can be
// made, the ZeroMQ context's ZMQ_MAX_SOCKETS reached while the pipeline
// looks for the active broker again) ends the submits it holds with the
// error, as a plain call ends with it; the next submits, once sockets can
// be made again, are served. It stopped the pipeline for good: every
// later SubmitAsync of the Client failed.
func TestSubmitAsyncAfterSocketFailure(t *testing.T) {
	var refusing atomic.Bool
	f := stoppingNode(t, &refusing, keyedAnswer)
	c := newPipeClient(t, Config{Brokers: []string{f.endpoint, harness.FreeEndpoint(t)}, Timeout: 300 * time.Millisecond, Retries: 2})
	checkTickets(t, submitN(t, c, 1))

	// Every socket the context can hold, made.
	var fill []*zmq.Socket
	defer func() {
		for _, s := range fill {
			_ = s.Close()
		}
	}()
	for len(fill) < 2*zsock.MaxSockets {
		s, err := c.zc.ZMQ().NewSocket(zmq.PAIR)
		if err != nil {
			break
		}
		_ = s.SetLinger(0)
		fill = append(fill, s)
	}
	// The node stops serving: the pipeline drops its socket and asks
	// every broker which serves, which takes new sockets.
	refusing.Store(true)
	held, err := c.SubmitAsync(testCtx(t), "echo", frames("held"), SubmitOptions{IdemKey: "held"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := held.Ticket(testCtx(t)); err == nil {
		t.Fatal("a submit got a ticket from a node answering \"not active\"")
	}
	for _, s := range fill {
		_ = s.Close()
	}
	fill = nil
	// libzmq frees a closed socket's slot in its reaper thread, later.
	eventually(t, "sockets to be made again", func() bool {
		var made []*zmq.Socket
		defer func() {
			for _, s := range made {
				_ = s.Close()
			}
		}()
		for range 64 {
			s, err := c.zc.ZMQ().NewSocket(zmq.PAIR)
			if err != nil {
				return false
			}
			made = append(made, s)
		}
		return true
	})
	refusing.Store(false)
	f2, err := c.SubmitAsync(testCtx(t), "echo", frames("after"), SubmitOptions{IdemKey: "after"})
	if err != nil {
		t.Fatalf("SubmitAsync after the sockets were freed = %v; want the pipeline to go on", err)
	}
	checkTickets(t, []*SubmitFuture{f2})
}
