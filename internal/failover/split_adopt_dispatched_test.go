package failover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/worker"
)

// A split brain's handover keeps a ticket's dispatches: found by an
// outside-in test of the job lifecycle.

// splitWorkerOf runs a worker of service on brokers until ctx ends.
func splitWorkerOf(t *testing.T, ctx context.Context, brokers []string, service string, h worker.Handler) {
	t.Helper()
	w, err := worker.New(worker.Config{Brokers: brokers, Service: service, HeartbeatInterval: 200 * time.Millisecond, ReconnectDelay: 100 * time.Millisecond, Logger: quiet}, h)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = w.Run(ctx) }()
	t.Cleanup(wg.Wait)
}

// README (Deadlines): "A ticket dispatched once does not expire, even
// when a failed attempt sends it back." and (split brain) the yielding
// node hands over "tickets it took in alone, with their ID, body, key and
// answer"; "A job may run on both sides (at-least-once)". A ticket with a
// TTL taken in by the backup alone during a split brain, dispatched there
// before its deadline (one still running, one failed once and waiting out
// its backoff), is adopted by the primary as never dispatched (attempts
// 0, the deadline kept) and fails at once as "expired: not dispatched by
// ..." after the merge: no redelivery, the running one's work is lost,
// the other's remaining attempts are never made.
func TestSplitAdoptKeepsDispatchedTicket(t *testing.T) {
	p, cp := splitPair(t)
	primary, backup, ctx, dg := p.primary, p.backup, p.ctx, p.dg

	t.Logf("cutting the pair link; a client and workers reach only the backup")
	primary.host.Partition(t, backup.host)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	hold := make(chan struct{})
	var heldRuns, failRuns atomic.Int32
	splitWorkerOf(t, wctx, []string{backup.endpoint()}, "held", func(ctx context.Context, req [][]byte) ([][]byte, error) {
		heldRuns.Add(1)
		select {
		case <-hold:
		case <-ctx.Done():
		}
		return req, nil
	})
	splitWorkerOf(t, wctx, []string{backup.endpoint()}, "flaky", func(_ context.Context, req [][]byte) ([][]byte, error) {
		failRuns.Add(1)
		return nil, errors.New("fails")
	})
	cb, err := client.New(client.Config{Brokers: []string{backup.endpoint()}, Timeout: clientTimeout, Retries: 40, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	var held, flaky string
	eventually(t, 60*time.Second, "submit to the backup alone", func() error {
		var err error
		held, err = cb.Submit(ctx, "held", [][]byte{[]byte("h")}, client.SubmitOptions{TTL: 3 * time.Second})
		return err
	}, dg)
	flaky, err = cb.Submit(ctx, "flaky", [][]byte{[]byte("f")}, client.SubmitOptions{TTL: 3 * time.Second, MaxAttempts: 3, BackoffBase: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "held dispatched, flaky failed once", func() error {
		st, err := cb.Status(ctx, held)
		if err != nil {
			return err
		}
		if st.State != "dispatched" || failRuns.Load() < 1 {
			return fmt.Errorf("held %s, flaky runs %d", st.State, failRuns.Load())
		}
		return nil
	}, dg)
	time.Sleep(4 * time.Second) // both deadlines pass, both were dispatched
	for _, tk := range []string{held, flaky} {
		st, err := cb.Status(ctx, tk)
		t.Logf("on the backup before the heal: %+v %v", st, err)
	}
	primary.host.Heal(t)
	waitForkHandedOver(t, backup, 60*time.Second, "the backup yields and hands its fork over", dg)
	waitPairHealthy(t, ctx, primary, backup, 60*time.Second)
	time.Sleep(2 * time.Second)
	for _, tk := range []string{held, flaky} {
		st, err := cp.Status(ctx, tk)
		t.Logf("after the merge: %+v %v", st, err)
		if err == nil && st.State == "failed" && strings.HasPrefix(st.Reason, "expired") {
			t.Errorf("ticket %s was dispatched before its deadline, yet expired after the merge: %+v (README: a ticket dispatched once does not expire)", tk, st)
		}
	}
	close(hold)
}
