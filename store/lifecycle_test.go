package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
)

// What a submit asks beyond 9/TSP is kept with the ticket, survives a
// reopen, and comes back from Unfinished (the dispatcher's start-up).
func TestLifecycleKept(t *testing.T) {
	s, path := newStore(t)
	ctx := context.Background()
	lc := store.Lifecycle{Priority: store.PriorityHigh, Due: at(60000), Deadline: at(120000),
		Retry: store.RetryPolicy{MaxAttempts: 2, Base: time.Second, Max: time.Minute}}
	id := store.NewID()
	o := submit(id, "echo", []byte("b"))
	o.Lifecycle = lc
	mustApply(t, s, o)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	tk, err := s2.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if tk.Priority != lc.Priority || !tk.Due.Equal(lc.Due) || !tk.Deadline.Equal(lc.Deadline) || tk.Retry != lc.Retry {
		t.Fatalf("lifecycle after reopen = %+v, want %+v", tk.Lifecycle, lc)
	}
	us := unfinished(t, s2)
	if len(us) != 1 || us[0].Priority != store.PriorityHigh || !us[0].Due.Equal(lc.Due) {
		t.Fatalf("unfinished = %+v", us)
	}
}

// A failed attempt is recorded (start, end, worker, error, outcome), a
// requeue carries the backoff's due time, a cancel ends an unfinished
// ticket and a late reply to it is refused; close forgets the history.
func TestAttemptsAndCancel(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	id := store.NewID()
	// A submit with a lifecycle option is an op of a newer kind: the
	// store is at format 2, where it keeps the workers' names.
	sub := submit(id, "echo")
	sub.Priority = store.PriorityHigh
	mustApply(t, s, sub)
	mustApply(t, s, store.Op{Kind: store.OpDispatch, ID: id, Time: at(1), Worker: "w1"})
	mustApply(t, s, store.Op{Kind: store.OpRequeue, ID: id, Time: at(2), Reason: "exit 3", Lifecycle: store.Lifecycle{Due: at(500)}})
	tk, err := s.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if tk.State != store.StatePending || !tk.Due.Equal(at(500)) || tk.Worker != "w1" || !tk.Started.Equal(at(1)) {
		t.Fatalf("after requeue: %+v", tk)
	}
	mustApply(t, s, store.Op{Kind: store.OpDispatch, ID: id, Time: at(600), Worker: "w2"})
	if r := applyOne(t, s, store.Op{Kind: store.OpCancel, ID: id, Time: at(601)}); r.Err != nil || r.State != store.StateCancelled || r.Service != "echo" {
		t.Fatalf("cancel of a dispatched ticket: %+v", r)
	}
	if r := applyOne(t, s, store.Op{Kind: store.OpReply, ID: id, Time: at(602), Reply: [][]byte{[]byte("late")}}); !errors.Is(r.Err, store.ErrFinal) {
		t.Fatalf("reply after cancel: %v, want ErrFinal", r.Err)
	}
	if r := applyOne(t, s, store.Op{Kind: store.OpCancel, ID: id, Time: at(603)}); !errors.Is(r.Err, store.ErrFinal) {
		t.Fatalf("second cancel: %v, want ErrFinal", r.Err)
	}
	as, err := s.Attempts(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Attempt{
		{Start: at(1), End: at(2), Worker: "w1", Outcome: store.StatePending, Error: "exit 3"},
		{Start: at(600), End: at(601), Worker: "w2", Outcome: store.StateCancelled},
	}
	if len(as) != len(want) {
		t.Fatalf("attempts = %+v, want %+v", as, want)
	}
	for i := range want {
		a, w := as[i], want[i]
		if !a.Start.Equal(w.Start) || !a.End.Equal(w.End) || a.Worker != w.Worker || a.Outcome != w.Outcome || a.Error != w.Error {
			t.Fatalf("attempt %d = %+v, want %+v", i, a, w)
		}
	}
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := st.Services["echo"]; c.Cancelled != 1 || c.Pending+c.Dispatched != 0 {
		t.Fatalf("counts after cancel: %+v", c)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatalf("check: %v", err)
	}
	mustApply(t, s, op(store.OpClose, id))
	if as, err := s.Attempts(ctx, id); err != nil || len(as) != 0 {
		t.Fatalf("attempts after close: %+v %v", as, err)
	}
	// A pending ticket is cancelled too, and leaves its FIFO.
	p := store.NewID()
	mustApply(t, s, submit(p, "echo"), store.Op{Kind: store.OpCancel, ID: p, Time: at(700), Reason: "by operator"})
	if us := unfinished(t, s); len(us) != 0 {
		t.Fatalf("unfinished after cancel: %+v", us)
	}
	if tk, err := s.Get(ctx, p); err != nil || tk.Reason != "by operator" {
		t.Fatalf("cancelled pending ticket: %+v %v", tk, err)
	}
}

// Pause and resume are kept per service, across a reopen.
func TestPauseResume(t *testing.T) {
	s, path := newStore(t)
	ctx := context.Background()
	r := mustApply(t, s, store.Op{Kind: store.OpPause, Service: "a", Time: at(1)}, store.Op{Kind: store.OpPause, Service: "b", Time: at(2)})
	if r[0].Existed || r[1].Existed {
		t.Fatalf("first pauses report the services paused before: %+v", r)
	}
	if r := applyOne(t, s, store.Op{Kind: store.OpPause, Service: "a", Time: at(3)}); !r.Existed {
		t.Fatalf("second pause of a: %+v", r)
	}
	mustApply(t, s, store.Op{Kind: store.OpResume, Service: "b", Time: at(4)})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	p, err := s2.Paused(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 1 || !p["a"].Equal(at(3)) {
		t.Fatalf("paused after reopen = %v, want a since %v", p, at(3))
	}
	if r := applyOne(t, s2, store.Op{Kind: store.OpPause, Time: at(5)}); !errors.Is(r.Err, store.ErrInvalidOp) {
		t.Fatalf("pause without a service: %v", r.Err)
	}
}

// A store the first release may still open keeps ticket records it reads:
// the start and worker of an attempt are kept only once the store took an
// op of a newer kind (format 2). A dispatch that names its worker is not
// such an op by itself: it leaves the store at format 1 (a rollback still
// works) and its attempt names no worker.
func TestAttemptExtrasWaitForFormat2(t *testing.T) {
	s, path := newStore(t)
	ctx := context.Background()
	id := store.NewID()
	mustApply(t, s, submit(id, "echo"), store.Op{Kind: store.OpDispatch, ID: id, Time: at(1), Worker: "w0"})
	tk, err := s.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !tk.Started.IsZero() || tk.Worker != "" {
		t.Fatalf("format 1 store kept the attempt's start and worker (a v0.1.0 node could not read the record): %+v", tk)
	}
	mustApply(t, s, store.Op{Kind: store.OpFail, ID: id, Time: at(2), Reason: "exit 3"})
	if as, err := s.Attempts(ctx, id); err != nil || len(as) != 1 || as[0].Worker != "" || as[0].Outcome != store.StateFailed {
		t.Fatalf("attempts on a format 1 store: %+v %v, want one failed attempt naming no worker", as, err)
	}
	if s.NewerFormat() {
		t.Fatal("a dispatch naming its worker moved the store to format 2")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = store.Open(path, store.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if s.NewerFormat() {
		t.Fatal("reopened: format 2, want 1")
	}
	// A retry moves the store to format 2; from then on they are kept.
	other := store.NewID()
	mustApply(t, s, submit(other, "echo"), op(store.OpFail, other), store.Op{Kind: store.OpRetry, ID: other, Time: at(2)})
	if !s.NewerFormat() {
		t.Fatal("after a retry: NewerFormat false, want true")
	}
	mustApply(t, s, store.Op{Kind: store.OpDispatch, ID: other, Time: at(3), Worker: "w"})
	if tk, err = s.Get(ctx, other); err != nil || !tk.Started.Equal(at(3)) || tk.Worker != "w" {
		t.Fatalf("format 2 store: %+v %v", tk, err)
	}
	mustApply(t, s, store.Op{Kind: store.OpRequeue, ID: other, Time: at(4), Reason: "lost"})
	if as, err := s.Attempts(ctx, other); err != nil || len(as) != 1 || as[0].Worker != "w" {
		t.Fatalf("attempts on a format 2 store: %+v %v, want the one attempt naming w", as, err)
	}
}
