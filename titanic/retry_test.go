package titanic_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/nodetest"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/worker"
)

// titanic.retry on a single node (which has no cluster version to wait
// for): a failed ticket is pending again and counted as such, a ticket
// that has not failed and an unknown one are refused, each with its own
// error, and the retried ticket fails again for the same cause.
func TestRetryFailedTicket(t *testing.T) {
	nd, c := lifecycleNodeWith(t, t.TempDir(), func(sc *titanic.Config) { sc.NoWorkerTimeout = 100 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	failed := func(ticket string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err := c.Status(ctx, ticket)
			if err == nil && st.State == "failed" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("ticket %s not failed within 10s: %+v %v", ticket, st, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ticket, err := c.Submit(ctx, "nobody", [][]byte{[]byte("job")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	failed(ticket)
	counts := func() (pending, fails int) {
		t.Helper()
		qs, err := c.QueueStats(ctx, "nobody")
		if err != nil || len(qs.Services) != 1 {
			t.Fatalf("stats: %+v %v", qs, err)
		}
		return qs.Services[0].Pending, qs.Services[0].Failed
	}
	// The stats' tally follows the commit a moment after a lookup can
	// see it (the completer counts after the store answered).
	countsBecome := func(what string, wantP, wantF int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			p, f := counts()
			if p == wantP && f == wantF {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d pending, %d failed; want %d and %d", what, p, f, wantP, wantF)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	countsBecome("before the retry", 0, 1)
	if err := c.Retry(ctx, ticket); err != nil {
		t.Fatalf("retry: %v", err)
	}
	st, err := c.Status(ctx, ticket)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "pending" && st.State != "failed" || st.Attempts != 0 {
		t.Fatalf("after the retry: %+v, want pending (or failed again, no worker) with 0 attempts", st)
	}
	failed(ticket) // no worker still: it fails again for the same cause
	// Failed once more, counted once: the retry moved it from failed
	// to pending in the tally (a missing move would leave 2 failed, or
	// -1 pending, here).
	countsBecome("after the retried ticket failed again", 0, 1)

	// A done ticket has its answer: it is not retried.
	w, err := worker.New(worker.Config{Brokers: []string{nd.Endpoint()}, Service: "echo", HeartbeatInterval: 100 * time.Millisecond, Logger: nodetest.Quiet},
		func(_ context.Context, req [][]byte) ([][]byte, error) { return req, nil })
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	wdone := make(chan error, 1)
	go func() { wdone <- w.Run(wctx) }()
	defer func() { wcancel(); <-wdone }()
	done, err := c.Submit(ctx, "echo", [][]byte{[]byte("b")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Reply(ctx, done, client.ReplyOptions{Wait: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.Retry(ctx, done); !errors.Is(err, client.ErrNotFailed) {
		t.Fatalf("retry of a done ticket: %v, want ErrNotFailed", err)
	}
	if err := c.Retry(ctx, fmt.Sprintf("%032x", 7)); !errors.Is(err, client.ErrUnknown) {
		t.Fatalf("retry of an unknown ticket: %v, want ErrUnknown", err)
	}
}

// A lost worker counts as a failed attempt: its ticket waits out the
// backoff before it is redelivered, as after a reported failure, so that a
// job that kills its workers cannot burn its attempts (and the workers) at
// once. The pause is the equal-jitter backoff: at least half the base. The
// attempt history says the attempt was retried because the worker left.
func TestWorkerLossBacksOff(t *testing.T) {
	const base = 2 * time.Second
	nd, c := lifecycleNodeWith(t, t.TempDir(), func(sc *titanic.Config) { sc.BackoffBase, sc.BackoffMax = base, base })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The first worker takes the job and is stopped while it runs: its
	// handler is cancelled and the worker disconnects without a reply.
	took := make(chan struct{})
	w1, err := worker.New(worker.Config{Brokers: []string{nd.Endpoint()}, Service: "crashy", HeartbeatInterval: 100 * time.Millisecond, Logger: nodetest.Quiet},
		func(hctx context.Context, _ [][]byte) ([][]byte, error) {
			close(took)
			<-hctx.Done()
			return nil, hctx.Err()
		})
	if err != nil {
		t.Fatal(err)
	}
	w1ctx, w1stop := context.WithCancel(ctx)
	w1done := make(chan error, 1)
	go func() { w1done <- w1.Run(w1ctx) }()
	ticket, err := c.Submit(ctx, "crashy", [][]byte{[]byte("job")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-took:
	case <-ctx.Done():
		t.Fatal("the first worker never got the job")
	}
	w1stop()
	<-w1done
	lost := time.Now()

	// A second worker is there at once; it must not get the job before
	// the backoff.
	got := make(chan time.Time, 1)
	w2, err := worker.New(worker.Config{Brokers: []string{nd.Endpoint()}, Service: "crashy", HeartbeatInterval: 100 * time.Millisecond, Logger: nodetest.Quiet},
		func(_ context.Context, req [][]byte) ([][]byte, error) {
			select {
			case got <- time.Now():
			default:
			}
			return req, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	w2ctx, w2stop := context.WithCancel(ctx)
	w2done := make(chan error, 1)
	go func() { w2done <- w2.Run(w2ctx) }()
	defer func() { w2stop(); <-w2done }()
	if _, err := c.Reply(ctx, ticket, client.ReplyOptions{Wait: true}); err != nil {
		t.Fatalf("reply: %v", err)
	}
	if at := <-got; at.Sub(lost) < base/2 {
		t.Fatalf("redelivered %s after the worker was lost, want the backoff (at least %s)", at.Sub(lost), base/2)
	}
	as, err := c.Attempts(ctx, ticket)
	if err != nil || len(as) != 1 || as[0].Outcome != "retried" || as[0].Error == "" {
		t.Fatalf("attempts: %+v %v, want the lost attempt, retried, with why", as, err)
	}
}
