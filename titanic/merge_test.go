package titanic

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// A pair node mints tickets with its tag; while its peer may hold a split
// not merged yet, an unknown ticket of the peer's answers 500 "not
// ready" (retry), not 400 (unknown, final); other unknown tickets still
// answer 400.
func TestUnknownPeerTicketNotFinal(t *testing.T) {
	var peerMayHold atomic.Bool
	peerMayHold.Store(true)
	cfg := Config{MintTag: 1, MaybeElsewhere: func(id store.ID) bool { return peerMayHold.Load() && Tagged(id, 2) }}
	h := newHarness(t, cfg, "")
	own := h.submit("echo", "x")
	if id, _ := store.ParseID(own); !Tagged(id, 1) {
		t.Fatalf("ticket %s not tagged 1", own)
	}
	peers := store.NewID()
	peers[15] = peers[15]&0xf0 | 2
	other := store.NewID()
	other[15] = other[15]&0xf0 | 3
	for _, svc := range []string{tsp.SvcReply, tsp.SvcStatus} {
		if r := h.call(svc, peers.String()); codeOf(r) != tsp.CodeError || !strings.HasPrefix(string(r[1]), "not ready") {
			t.Errorf("%s of the peer's unknown ticket = %q, want 500 not ready", svc, r)
		}
		if r := h.call(svc, other.String()); codeOf(r) != tsp.CodeUnknown {
			t.Errorf("%s of an unknown ticket of nobody's = %q, want 400", svc, r)
		}
	}
	// Closing it now would let the peer's handover bring it back.
	if r := h.call(tsp.SvcClose, peers.String()); codeOf(r) != tsp.CodeError || !strings.HasPrefix(string(r[1]), "not ready") {
		t.Errorf("close of the peer's unknown ticket = %q, want 500 not ready", r)
	}
	if r := h.call(tsp.SvcClose, other.String()); codeOf(r) != tsp.CodeOK {
		t.Errorf("close of an unknown ticket of nobody's = %q, want 200", r)
	}
	peerMayHold.Store(false) // merged, or the operator gave up waiting
	if r := h.call(tsp.SvcReply, peers.String()); codeOf(r) != tsp.CodeUnknown {
		t.Errorf("after the merge: %q, want 400", r)
	}
}

// Merge takes in a peer's handover: adopted tickets are dispatched, and
// a handover applied twice changes nothing.
func TestMergeQueuesAdopted(t *testing.T) {
	h := newHarness(t, Config{}, "")
	id := store.NewID()
	ops := []store.Op{{Kind: store.OpAdopt, ID: id, Service: "echo", Body: [][]byte{[]byte("from the peer")}}}
	for range 2 {
		if err := h.svc.Merge(context.Background(), ops); err != nil {
			t.Fatal(err)
		}
	}
	if _, job := h.next("echo"); string(job.Token) != id.String() || string(job.Body[0]) != "from the peer" {
		t.Fatalf("job %q %q, want the adopted ticket", job.Token, job.Body)
	}
	if _, ok := h.svc.Next("echo", "w"); ok {
		t.Fatal("the adopted ticket was queued twice")
	}
	if err := h.svc.Merge(context.Background(), []store.Op{{Kind: store.OpSubmit, ID: store.NewID(), Service: "echo"}}); err == nil {
		t.Fatal("a submit was taken as a merge op")
	}
}

// A pause handed over by the peer (made by an operator on the side that
// yielded) stops the service's dispatch here, as it would have there; a
// resume handed over starts it again.
func TestMergePausesAndResumes(t *testing.T) {
	h := newHarness(t, Config{}, "")
	if err := h.svc.Merge(context.Background(), []store.Op{{Kind: store.OpPause, Service: "billing", Time: h.svc.cfg.Now()}}); err != nil {
		t.Fatalf("merge of a pause: %v", err)
	}
	ticket := h.submit("billing", "x")
	h.submit("other", "barrier") // the submit's completion ran
	if job, ok := h.svc.Next("billing", "w"); ok {
		t.Fatalf("ticket %s of a service paused by the handover dispatched", job.Token)
	}
	if err := h.svc.Merge(context.Background(), []store.Op{{Kind: store.OpResume, Service: "billing"}}); err != nil {
		t.Fatalf("merge of a resume: %v", err)
	}
	if _, job := h.next("billing"); string(job.Token) != ticket {
		t.Fatalf("dispatched %s after the resume, want %s", job.Token, ticket)
	}
}

// A ticket handed over while it ran on the yielding side (adopted
// dispatched, with its attempts there) had that attempt cut short: it
// fails for good when it was its last, and is dispatched again, its
// attempts counted on, otherwise.
func TestMergeAdoptedRunningCountsCutShort(t *testing.T) {
	h := newHarness(t, Config{BackoffBase: -1}, "")
	last, more := store.NewID(), store.NewID()
	ops := []store.Op{
		{Kind: store.OpAdopt, ID: last, Service: "echo", Body: [][]byte{[]byte("l")}, Attempts: 1, Dispatched: true,
			Lifecycle: store.Lifecycle{Retry: store.RetryPolicy{MaxAttempts: 1}}},
		{Kind: store.OpAdopt, ID: more, Service: "echo", Body: [][]byte{[]byte("m")}, Attempts: 1, Dispatched: true,
			Lifecycle: store.Lifecycle{Retry: store.RetryPolicy{MaxAttempts: 3}}},
	}
	if err := h.svc.Merge(context.Background(), ops); err != nil {
		t.Fatal(err)
	}
	_, job := h.next("echo")
	if string(job.Token) != more.String() {
		t.Fatalf("dispatched %q, want %s (the one with attempts left)", job.Token, more)
	}
	if r := h.call(tsp.SvcStatus, more.String()); codeOf(r) != tsp.CodeOK || string(r[2]) != "2" {
		t.Fatalf("status of the redelivered ticket = %q, want attempts 2", r)
	}
	h.idle()
	r := h.call(tsp.SvcReply, last.String())
	if codeOf(r) != tsp.CodeError || !strings.Contains(string(r[1]), "attempt 1 of 1 failed: "+CutShortReason) {
		t.Fatalf("the ticket whose last attempt was cut short = %q, want failed, cut short", r)
	}
}

// Tickets the yielding side took in alone and finished there come as an
// adoption and its answer in one batch: the dispatcher never held them,
// so they must not be counted out of it (in flight went below 0, and
// pending down with it, once per such ticket).
func TestMergeAdoptedAndFinishedKeepsCounts(t *testing.T) {
	h := newHarness(t, Config{}, "")
	for i := range 2 {
		h.submit("svc", fmt.Sprint("pending ", i))
	}
	var ops []store.Op
	for range 3 {
		id := store.NewID()
		ops = append(ops,
			store.Op{Kind: store.OpAdopt, ID: id, Service: "svc", Body: [][]byte{[]byte("b")}},
			store.Op{Kind: store.OpFail, ID: id, Reason: "expired: not dispatched by then"})
	}
	if err := h.svc.Merge(context.Background(), ops); err != nil {
		t.Fatal(err)
	}
	q := queueOf(t, h, "svc")
	if q.Pending != 2 || q.Delayed != 0 || q.InFlight != 0 || q.Failed != 3 {
		t.Fatalf("after the merge: pending %d delayed %d in flight %d failed %d, want 2 0 0 3", q.Pending, q.Delayed, q.InFlight, q.Failed)
	}
}

// A purge handed over by the peer (made by a client on the side that
// yielded) closes a ticket still failed here and leaves alone one this
// node's client retried meanwhile: that refusal (ErrNotFailed) is no
// failure of the merge, which the peer would send again at every try.
// Merge refused every OpPurge (not a merge op): the peer sent its purges
// as closes, which deleted the retried ticket.
func TestMergePurgeLeavesRetriedAlone(t *testing.T) {
	h := newHarness(t, Config{}, "")
	ctx := context.Background()
	retried, failed := store.NewID(), store.NewID()
	var ops []store.Op
	for _, id := range []store.ID{retried, failed} {
		ops = append(ops, store.Op{Kind: store.OpAdopt, ID: id, Service: "echo", Body: [][]byte{[]byte("x")}, Time: h.svc.cfg.Now()},
			store.Op{Kind: store.OpFail, ID: id, Reason: "failed on the peer", Time: h.svc.cfg.Now()})
	}
	if err := h.svc.Merge(ctx, ops); err != nil {
		t.Fatal(err)
	}
	if r := h.call(tsp.SvcRetry, retried.String()); codeOf(r) != tsp.CodeOK {
		t.Fatalf("retry: %q", r)
	}
	if err := h.svc.Merge(ctx, []store.Op{{Kind: store.OpPurge, ID: retried}, {Kind: store.OpPurge, ID: failed}}); err != nil {
		t.Fatalf("merge of two purges, one of a ticket retried here: %v", err)
	}
	if r := h.call(tsp.SvcStatus, failed.String()); codeOf(r) != tsp.CodeUnknown {
		t.Fatalf("the ticket still failed here after the peer's purge: %q, want unknown", r)
	}
	if _, job := h.next("echo"); string(job.Token) != retried.String() {
		t.Fatalf("dispatched %s, want the ticket retried here", job.Token)
	}
}
