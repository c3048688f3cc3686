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
// apart from the queue; b comes once a was answered busy ten times
// (100ms apart: 1s, more on a loaded machine), and the node stops
// serving: both are refused, again and again, b ahead of a (a came back
// to the queue after b). a must fail nearer its own deadline than b's:
// the bound is half-way between them, so that the time b came later,
// which grows with the machine's load, is also the test's margin. (With
// a 1.2s deadline and seven busy answers, a loaded machine failed a
// before its seventh answer, and the test waited for them in vain.)
func TestSubmitAsyncExpiresBehindFresherSubmit(t *testing.T) {
	var refusing atomic.Bool
	f := stoppingNode(t, &refusing, func(body [][]byte) [][]byte {
		return [][]byte{[]byte("500"), []byte(tsp.Busy.Text("test")), body[0]}
	})
	const timeout, retries = time.Second, 3
	c := newPipeClient(t, Config{Brokers: []string{f.endpoint}, Timeout: timeout, Retries: retries})
	start := time.Now()
	a, err := c.SubmitAsync(testCtx(t), "echo", frames("a"), SubmitOptions{IdemKey: "a"})
	if err != nil {
		t.Fatal(err)
	}
	// Busy answers send it again 100ms apart.
	eventually(t, "ten busy answers to a", func() bool { return len(f.requests()) >= 10 })
	refusing.Store(true)
	later := time.Since(start)
	if _, err := c.SubmitAsync(testCtx(t), "echo", frames("b"), SubmitOptions{IdemKey: "b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Ticket(testCtx(t)); err == nil {
		t.Fatal("a got a ticket; want it to fail at its deadline")
	}
	due := retries * timeout
	if el := time.Since(start); el > due+later/2 {
		t.Fatalf("a failed %s after it was submitted, want about its deadline, %s (b, submitted %s after a, has its deadline %s later)",
			el.Round(time.Millisecond), due, later.Round(time.Millisecond), later.Round(time.Millisecond))
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
