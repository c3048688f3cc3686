package titanic

import (
	"context"
	"errors"
	"testing"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// takeOver has the service stop serving and serve again, as a node of a
// pair or group that lost and regained its role: the dispatcher is reset
// and recovered from the store.
func (h *harness) takeOver() {
	h.t.Helper()
	h.svc.Deactivate()
	if err := h.svc.Activate(context.Background()); err != nil {
		h.t.Fatal(err)
	}
}

// A lease given out before the node stopped serving (a job forwarded to
// a peer cluster outlives that) ends late, after the ticket was recovered
// and dispatched again. Its FAIL must not end the current dispatch: the
// ticket is not dispatched a second time while a worker holds it, no
// attempt is counted for it, and the current worker's reply is the
// ticket's. Before the dispatch tag, the FAIL requeued the ticket (and,
// with its attempts used up, failed it for good while the worker ran it).
func TestStaleLeaseFailLeavesCurrentDispatch(t *testing.T) {
	h := newHarness(t, Config{BackoffBase: -1, MaxAttempts: 2}, "")
	ticket := h.submit("s", "x")
	old, _ := h.next("s")
	h.submit("other", "barrier") // the dispatch mark is durable
	h.takeOver()
	cur, job := h.next("s")
	if string(job.Token) != ticket {
		t.Fatalf("recovered job %s, want %s", job.Token, ticket)
	}
	h.svc.Failed(old, "peer P: boom")
	h.submit("other", "barrier") // whatever the FAIL committed has completed
	if j, ok := h.svc.Next("s", "w3"); ok {
		t.Fatalf("ticket %s dispatched again while the current lease holds it", j.Token)
	}
	h.svc.Completed(cur, [][]byte{[]byte("ok")})
	h.b.release(t)
	h.submit("other", "barrier")
	if r := h.call(tsp.SvcReply, ticket); codeOf(r) != tsp.CodeOK || string(r[1]) != "ok" {
		t.Fatalf("the current worker answered, yet titanic.reply = %q", r)
	}
}

// A late reply of an older dispatch whose commit fails leaves the
// ticket's current entry alone: the recovered ticket is dispatched
// again. It was dropped (forgotten by its ID), and the ticket stayed
// "dispatched" until the next takeover.
func TestStaleReplyFailedCommitKeepsEntry(t *testing.T) {
	h, gs := newStallHarness(t)
	ticket := h.submit("s", "x")
	old, _ := h.next("s")
	h.submit("other", "barrier")
	h.takeOver()
	gs.failNext(errors.New("disk hiccup"))
	h.svc.Completed(old, [][]byte{[]byte("late")})
	h.b.release(t)
	if _, job := h.next("s"); string(job.Token) != ticket {
		t.Fatalf("dispatched %s, want the recovered %s", job.Token, ticket)
	}
}
