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
	nc := nodetest.Config(t.TempDir())
	nc.Service = titanic.DefaultConfig()
	nc.Service.NoWorkerTimeout = 100 * time.Millisecond
	nc.Service.Logger = nodetest.Quiet
	nd := nodetest.Start(t, nc)
	c, err := client.New(client.Config{Brokers: []string{nd.Endpoint()}, Timeout: time.Second, Retries: 3, Logger: nodetest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
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
	if p, f := counts(); p != 0 || f != 1 {
		t.Fatalf("before the retry: %d pending, %d failed; want 0 and 1", p, f)
	}
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
	if p, f := counts(); st.State == "pending" && (p != 1 || f != 0) {
		t.Fatalf("after the retry: %d pending, %d failed; want 1 and 0", p, f)
	}
	failed(ticket) // no worker still: it fails again for the same cause

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
