package worker_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/worker"
)

// TestConcurrencyBoundWithTitanic: against a titanic node with 9 tickets
// queued, a worker of Concurrency 3 starts exactly 3 jobs at once, starts
// no fourth while they run, and answers every ticket on its first attempt.
func TestConcurrencyBoundWithTitanic(t *testing.T) {
	const n, tickets = 3, 9
	ep := titanicNode(t)
	var running, peak atomic.Int64
	arrivals := make(chan struct{}, tickets*2)
	gate := make(chan struct{})
	cfg := multiConfig()
	cfg.Brokers = []string{ep}
	cfg.Concurrency = n
	w, err := worker.New(cfg, func(ctx context.Context, req [][]byte) ([][]byte, error) {
		r := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); r > p && !peak.CompareAndSwap(p, r); p = peak.Load() {
		}
		arrivals <- struct{}{}
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return req, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := newTestClient(t, ep)
	var tks []string
	for i := range tickets {
		tk, err := cl.Submit(ctx, "echo", [][]byte{fmt.Appendf(nil, "job %d", i)}, client.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tks = append(tks, tk)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s")
		}
	})
	for i := range n {
		select {
		case <-arrivals:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d jobs started at once within 10s (%d tickets queued)", i, n, tickets)
		}
	}
	// Longer than a heartbeat round: a fourth slot would have its job by now.
	select {
	case <-arrivals:
		t.Fatalf("a job started while %d ran: Concurrency %d ran more", n, n)
	case <-time.After(3 * time.Duration(cfg.HeartbeatInterval)):
	}
	close(gate)
	for i, tk := range tks {
		rep, err := cl.Reply(ctx, tk, client.ReplyOptions{Wait: true})
		if err != nil {
			t.Fatalf("ticket %d: %v", i, err)
		}
		if got, want := string(rep[0]), fmt.Sprintf("job %d", i); got != want {
			t.Fatalf("ticket %d = %q, want %q", i, got, want)
		}
		st, err := cl.Status(ctx, tk)
		if err != nil {
			t.Fatal(err)
		}
		if st.Attempts != 1 {
			t.Errorf("ticket %d took %d attempts, want 1", i, st.Attempts)
		}
	}
	if p := peak.Load(); p != n {
		t.Fatalf("at most %d jobs ran at once, want exactly %d", p, n)
	}
	if s := w.Stats(); s.Replies != tickets {
		t.Fatalf("stats %+v, want %d replies", s, tickets)
	}
}
