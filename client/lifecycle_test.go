package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/nodetest"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/worker"
)

// lifecycleNode is an in-process node whose tickets fail on their first
// failed attempt, with a client of it.
func lifecycleNode(t *testing.T) (*nodetest.Node, *client.Client) {
	t.Helper()
	cfg := nodetest.Config(t.TempDir())
	cfg.Store.NoSync = true
	cfg.Service = titanic.DefaultConfig()
	cfg.Service.Logger = nodetest.Quiet
	cfg.Service.MaxAttempts = 1
	nd := nodetest.Start(t, cfg)
	c, err := client.New(client.Config{Brokers: []string{nd.Endpoint()}, Timeout: patient, Retries: 3, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return nd, c
}

// runWorker serves service with h until the test ends.
func runWorker(t *testing.T, ep, service string, h worker.Handler) {
	t.Helper()
	w, err := worker.New(worker.Config{Brokers: []string{ep}, Service: service, HeartbeatInterval: 100 * time.Millisecond, Logger: quietLog}, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// Submits with lifecycle options go as titanic.submit2: a ticket, the
// same one for a resend with the key, and options no broker takes are
// refused before they are sent.
func TestSubmitWithOptions(t *testing.T) {
	_, c := lifecycleNode(t)
	ctx := ctxFor(t, time.Minute)
	opt := client.SubmitOptions{IdemKey: "job-1", Delay: time.Hour, Priority: client.PriorityHigh, TTL: 2 * time.Hour, MaxAttempts: 3, BackoffBase: time.Second, BackoffMax: time.Minute}
	tk, err := c.Submit(ctx, "later", [][]byte{[]byte("x")}, opt)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := c.Submit(ctx, "later", [][]byte{[]byte("x")}, opt); err != nil || again != tk {
		t.Fatalf("resend with the key = %q, %v; want %s", again, err, tk)
	}
	if _, err := c.Submit(ctx, "later", [][]byte{[]byte("other")}, opt); !errors.Is(err, client.ErrKeyConflict) {
		t.Fatalf("another body with the key: %v, want ErrKeyConflict", err)
	}
	if st, err := c.Status(ctx, tk); err != nil || st.State != "pending" || st.Service != "later" {
		t.Fatalf("status %+v, %v; want pending", st, err)
	}
	// Pipelined, without a key of the caller's.
	f, err := c.SubmitAsync(ctx, "later", [][]byte{[]byte("y")}, client.SubmitOptions{At: time.Now().Add(time.Hour), Priority: client.PriorityLow})
	if err != nil {
		t.Fatal(err)
	}
	if tk2, err := f.Ticket(ctx); err != nil || len(tk2) != 32 || tk2 == tk {
		t.Fatalf("pipelined submit2 = %q, %v", tk2, err)
	}
	for _, bad := range []client.SubmitOptions{
		{Delay: time.Second, At: time.Now()},
		{TTL: time.Second, Deadline: time.Now().Add(time.Hour)},
		{Priority: "urgent"},
		{Delay: -time.Second},
		{BackoffMax: time.Second},
	} {
		if _, err := c.Submit(ctx, "later", [][]byte{[]byte("x")}, bad); !errors.Is(err, client.ErrRejected) {
			t.Errorf("%+v: Submit %v, want ErrRejected", bad, err)
		}
		if _, err := c.SubmitAsync(ctx, "later", [][]byte{[]byte("x")}, bad); !errors.Is(err, client.ErrRejected) {
			t.Errorf("%+v: SubmitAsync %v, want ErrRejected", bad, err)
		}
	}
	// What only the broker can check comes back as a rejection too.
	if _, err := c.Submit(ctx, "later", [][]byte{[]byte("x")}, client.SubmitOptions{Deadline: time.Now().Add(-time.Hour)}); !errors.Is(err, client.ErrRejected) || !strings.Contains(err.Error(), "passed") {
		t.Fatalf("a past deadline: %v, want ErrRejected saying it has passed", err)
	}
}

// Cancel, Pause and Resume through the client: a cancelled ticket's
// lookups fail with ErrCancelled and ErrFailed; a second cancel is
// ErrFinished; an unknown ticket ErrUnknown; a paused service's ticket
// waits for Resume.
func TestCancelPauseResume(t *testing.T) {
	nd, c := lifecycleNode(t)
	ctx := ctxFor(t, time.Minute)
	if err := c.Pause(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	ran := make(chan string, 4)
	runWorker(t, nd.Endpoint(), "echo", func(_ context.Context, req [][]byte) ([][]byte, error) {
		ran <- string(req[0])
		return req, nil
	})
	keep, err := c.Submit(ctx, "echo", [][]byte{[]byte("keep")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	drop, err := c.Submit(ctx, "echo", [][]byte{[]byte("drop")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Cancel(ctx, drop); err != nil {
		t.Fatal(err)
	}
	_, err = c.Reply(ctx, drop, client.ReplyOptions{Wait: true})
	var fe *client.FailedError
	if !errors.Is(err, client.ErrCancelled) || !errors.Is(err, client.ErrFailed) || !errors.As(err, &fe) || !fe.Cancelled {
		t.Fatalf("reply of a cancelled ticket: %v, want a *FailedError matching ErrCancelled and ErrFailed", err)
	}
	if err := c.Cancel(ctx, drop); !errors.Is(err, client.ErrFinished) {
		t.Fatalf("second cancel: %v, want ErrFinished", err)
	}
	if err := c.Cancel(ctx, "0123456789abcdef0123456789abcdef"); !errors.Is(err, client.ErrUnknown) {
		t.Fatalf("cancel of an unknown ticket: %v, want ErrUnknown", err)
	}
	if st, err := c.Status(ctx, keep); err != nil || st.State != "pending" {
		t.Fatalf("paused ticket: %+v, %v; want pending", st, err)
	}
	if err := c.Resume(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	if rep, err := c.Reply(ctx, keep, client.ReplyOptions{Wait: true}); err != nil || string(rep[0]) != "keep" {
		t.Fatalf("reply after resume: %q, %v", rep, err)
	}
	if got := <-ran; got != "keep" {
		t.Fatalf("ran %q, want keep", got)
	}
	select {
	case got := <-ran:
		t.Fatalf("ran %q after keep: the cancelled ticket ran", got)
	default:
	}
	if err := c.Pause(ctx, ""); !errors.Is(err, client.ErrRejected) {
		t.Fatalf("pause of no service: %v, want ErrRejected", err)
	}
}

// Attempts gives a failed ticket's history; RetryFailed gives every
// failed ticket of a service another round and only those.
func TestAttemptsAndRetryFailed(t *testing.T) {
	nd, c := lifecycleNode(t)
	ctx := ctxFor(t, time.Minute)
	var healthy = make(chan struct{})
	runWorker(t, nd.Endpoint(), "flaky", func(ctx context.Context, req [][]byte) ([][]byte, error) {
		select {
		case <-healthy:
			return req, nil
		default:
			return nil, errors.New("disk on fire")
		}
	})
	var failed []string
	for range 3 {
		tk, err := c.Submit(ctx, "flaky", [][]byte{[]byte("x")}, client.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Reply(ctx, tk, client.ReplyOptions{Wait: true}); !errors.Is(err, client.ErrFailed) || errors.Is(err, client.ErrCancelled) {
			t.Fatalf("reply: %v, want failed, not cancelled", err)
		}
		failed = append(failed, tk)
	}
	as, err := c.Attempts(ctx, failed[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 1 || as[0].Outcome != "failed" || !strings.Contains(as[0].Error, "disk on fire") || as[0].Took < 0 || as[0].Start.IsZero() {
		t.Fatalf("attempts = %+v, want one failed with the worker's error", as)
	}
	// Another service's failed ticket is not retried.
	other, err := c.Submit(ctx, "nobody", [][]byte{[]byte("x")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	close(healthy)
	n, err := c.RetryFailed(ctx, "flaky")
	if err != nil || n != len(failed) {
		t.Fatalf("RetryFailed = %d, %v; want %d", n, err, len(failed))
	}
	for _, tk := range failed {
		if rep, err := c.Reply(ctx, tk, client.ReplyOptions{Wait: true}); err != nil || string(rep[0]) != "x" {
			t.Fatalf("retried %s: %q, %v", tk, rep, err)
		}
	}
	if n, err := c.RetryFailed(ctx, "flaky"); err != nil || n != 0 {
		t.Fatalf("RetryFailed with none failed = %d, %v", n, err)
	}
	if st, err := c.Status(ctx, other); err != nil || st.State != "pending" {
		t.Fatalf("other service's ticket %+v, %v", st, err)
	}
}
