package client

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// A pipelined submit held in the queue behind a fresher one fails at its
// own deadline (its Retries x Timeout per broker), not at the fresher
// one's. Here submit a is answered busy, and waits between its sends
// apart from the queue; b comes 0.7s later, and the node stops serving:
// both are refused, again and again, b ahead of a (a came back to the
// queue after b).
func TestSubmitAsyncExpiresBehindFresherSubmit(t *testing.T) {
	var refusing atomic.Bool
	f := stoppingNode(t, &refusing, func(body [][]byte) [][]byte {
		return [][]byte{[]byte("500"), []byte(tsp.Busy.Text("test")), body[0]}
	})
	c := newPipeClient(t, Config{Brokers: []string{f.endpoint}, Timeout: 400 * time.Millisecond, Retries: 3})
	start := time.Now()
	a, err := c.SubmitAsync(testCtx(t), "echo", frames("a"), SubmitOptions{IdemKey: "a"})
	if err != nil {
		t.Fatal(err)
	}
	// Busy answers send it again 100ms apart.
	eventually(t, "seven busy answers to a", func() bool { return len(f.requests()) >= 7 })
	refusing.Store(true)
	if _, err := c.SubmitAsync(testCtx(t), "echo", frames("b"), SubmitOptions{IdemKey: "b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Ticket(testCtx(t)); err == nil {
		t.Fatal("a got a ticket; want it to fail at its deadline")
	}
	if el, due := time.Since(start), 1200*time.Millisecond; el > due+350*time.Millisecond {
		t.Fatalf("a failed %s after it was submitted, want about its deadline, %s", el.Round(time.Millisecond), due)
	}
}

// stoppingNode is a node that answers submits with answer(body) until
// refusing is set, then does not serve: it answers the role question so,
// and submits "not active".
func stoppingNode(t *testing.T, refusing *atomic.Bool, answer func(body [][]byte) [][]byte) *fakeBroker {
	return newFake(t, func(service string, body [][]byte, _ int) [][]byte {
		switch {
		case service == tsp.SvcRole:
			return tsp.EncodeRole(tsp.Role{Serving: !refusing.Load(), Star: tsp.StarActive})
		case refusing.Load():
			return frames("500", "not active")
		}
		return answer(body)
	})
}
