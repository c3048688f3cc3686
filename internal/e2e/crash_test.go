package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/worker"
)

// echoWorkers runs n in-process workers of service that answer
// "echo:<body>".
func echoWorkers(t *testing.T, ctx context.Context, ep, service string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for range n {
		w, err := worker.New(worker.Config{
			Brokers: []string{ep}, Service: service,
			HeartbeatInterval: 200 * time.Millisecond, ReconnectDelay: 100 * time.Millisecond,
		}, func(_ context.Context, req [][]byte) ([][]byte, error) {
			return [][]byte{append([]byte("echo:"), bytes.Join(req, nil)...)}, nil
		})
		if err != nil {
			t.Fatalf("worker: %v", err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Run(ctx) }()
	}
	t.Cleanup(wg.Wait)
}

// acked is a submit the broker acknowledged.
type acked struct {
	key, body, ticket string
}

// TestBrokerSIGKILLRepeatedly kills the broker at random moments while
// clients submit, restarts it on the same data, and checks the invariant:
// every acknowledged ticket is found and answered, none is lost, and no
// idempotency key made two tickets.
func TestBrokerSIGKILLRepeatedly(t *testing.T) {
	ep, dir := harness.FreeEndpoint(t), t.TempDir()
	br := harness.Broker(t, "broker-0", ep, dir, fastBroker...)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	echoWorkers(t, ctx, ep, "echo", 4)

	const submitters = 4
	var (
		mu    sync.Mutex
		acks  []acked
		count atomic.Int64
		stop  atomic.Bool
		wg    sync.WaitGroup
		fail  = make(chan error, submitters)
	)
	for s := range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := newClient(t, ep)
			for n := 0; !stop.Load(); n++ {
				key := fmt.Sprintf("s%d-%d", s, n)
				body := "body " + key
				// Retry the same key until it is acknowledged, across
				// crashes, so that every stored ticket has an ack.
				var ticket string
				deadline := time.Now().Add(60 * time.Second)
				for {
					tk, err := cl.Submit(ctx, "echo", [][]byte{[]byte(body)}, client.SubmitOptions{IdemKey: key})
					if err == nil {
						ticket = tk
						break
					}
					if time.Now().After(deadline) || !retryable(err) {
						fail <- fmt.Errorf("submit %s: %w", key, err)
						return
					}
				}
				mu.Lock()
				acks = append(acks, acked{key, body, ticket})
				mu.Unlock()
				count.Add(1)
			}
		}()
	}

	const kills = 10
	for k := 1; k <= kills; k++ {
		// Wait for a random number of further acks: kill mid-flow.
		target := count.Load() + int64(20+rand.IntN(150))
		deadline := time.Now().Add(60 * time.Second)
		for count.Load() < target {
			select {
			case err := <-fail:
				t.Fatalf("%v\nbroker log:\n%s", err, br.Tail())
			case <-time.After(5 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("kill %d: no progress (%d of %d acks) within 60s\nbroker log:\n%s", k, count.Load(), target, br.Tail())
			}
		}
		br.Signal(syscall.SIGKILL)
		br.Kill()
		br = harness.Broker(t, fmt.Sprintf("broker-%d", k), ep, dir, fastBroker...)
	}
	stop.Store(true)
	wg.Wait()
	close(fail)
	for err := range fail {
		t.Fatalf("%v\nbroker log:\n%s", err, br.Tail())
	}
	t.Logf("%d acknowledged submits across %d broker kills", len(acks), kills)

	// Every acknowledged ticket is answered with its own body.
	cl := newClient(t, ep)
	rctx, rcancel := context.WithTimeout(ctx, 3*time.Minute)
	defer rcancel()
	seen := map[string]string{}
	for _, a := range acks {
		if prev, dup := seen[a.ticket]; dup {
			t.Fatalf("ticket %s acknowledged for two keys %s and %s", a.ticket, prev, a.key)
		}
		seen[a.ticket] = a.key
		rep, err := cl.Reply(rctx, a.ticket, client.ReplyOptions{Wait: true})
		if err != nil {
			t.Fatalf("acknowledged ticket %s (key %s) not answered: %v\nbroker log:\n%s", a.ticket, a.key, err, br.Tail())
		}
		if got := string(bytes.Join(rep, nil)); got != "echo:"+a.body {
			t.Fatalf("ticket %s answered %q, want %q", a.ticket, got, "echo:"+a.body)
		}
	}
	// No key made a second ticket: the store holds exactly the acked ones.
	stored := listAll(t, rctx, cl)
	if len(stored) != len(acks) {
		t.Fatalf("store holds %d tickets for %d acknowledged keys", len(stored), len(acks))
	}
	for tk := range stored {
		if _, ok := seen[tk]; !ok {
			t.Fatalf("stored ticket %s was never acknowledged to a client", tk)
		}
	}
}

func retryable(err error) bool {
	return errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrServer)
}

func listAll(t *testing.T, ctx context.Context, cl *client.Client) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	after := ""
	for {
		page, err := cl.List(ctx, client.ListOptions{After: after, Limit: 1000})
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		for _, ti := range page {
			out[ti.Ticket] = true
			after = ti.Ticket
		}
		if len(page) < 1000 {
			return out
		}
	}
}

// TestWorkerKilledMidJob kills a worker process while it runs jobs; its
// requests are redelivered to another worker and all are answered.
func TestWorkerKilledMidJob(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	br := harness.Broker(t, "broker", ep, t.TempDir(), fastBroker...)
	slow := harness.Start(t, "slow-worker", "worker running",
		"worker", "--broker", ep, "--heartbeat", "200ms", "job", "--", "sh", "-c", "sleep 30; cat")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := newClient(t, ep)
	var tickets []string
	for i := range 5 {
		tk, err := cl.Submit(ctx, "job", [][]byte{fmt.Appendf(nil, "job %d", i)}, client.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tickets = append(tickets, tk)
	}
	// Wait until the slow worker holds the first job, then kill it.
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := cl.Status(ctx, tickets[0])
		if err != nil {
			t.Fatal(err)
		}
		if st.State == "dispatched" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("first job never dispatched (state %s)\n%s", st.State, br.Tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	slow.Kill()
	harness.Start(t, "good-worker", "worker running", "worker", "--broker", ep, "--heartbeat", "200ms", "job", "--", "cat")
	for i, tk := range tickets {
		rep, err := cl.Reply(ctx, tk, client.ReplyOptions{Wait: true})
		if err != nil {
			t.Fatalf("ticket %d not answered after its worker died: %v\n%s", i, err, br.Tail())
		}
		if got := string(bytes.Join(rep, nil)); got != fmt.Sprintf("job %d", i) {
			t.Fatalf("ticket %d = %q", i, got)
		}
	}
	st, err := cl.Status(ctx, tickets[0])
	if err != nil {
		t.Fatal(err)
	}
	if st.Attempts < 2 {
		t.Fatalf("the killed worker's job has %d attempts, want a redelivery (>= 2)", st.Attempts)
	}
}

// TestBrokerKilledBetweenReplyAndCommit: a worker is given its next job as
// soon as its reply arrives, before the reply is durable. The broker runs
// with the test hook TITANIC_TESTHOOK_STALL_AT_REPLY (cmd/titanic), which
// stalls every commit from the first reply on, and is killed while the
// reply waits for its commit: lookups never saw the reply, the job is
// redelivered after the restart, and the ticket ends with exactly one
// reply, the redelivery's.
func TestBrokerKilledBetweenReplyAndCommit(t *testing.T) {
	ep, dir := harness.FreeEndpoint(t), t.TempDir()
	t.Setenv("TITANIC_TESTHOOK_STALL_AT_REPLY", "1")
	br := harness.Broker(t, "broker-stalled", ep, dir, fastBroker...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := newClient(t, ep)
	a, err := cl.Submit(ctx, "job", [][]byte{[]byte("a")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := cl.Submit(ctx, "job", [][]byte{[]byte("b")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// The first worker answers a, then holds b: getting b proves it was
	// released while a's reply cannot have been committed.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	gotB := make(chan struct{})
	first := newJobWorker(t, ep, func(ctx context.Context, req [][]byte) ([][]byte, error) {
		if string(bytes.Join(req, nil)) == "a" {
			return [][]byte{[]byte("first:a")}, nil
		}
		close(gotB)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	firstDone := make(chan struct{})
	go func() { defer close(firstDone); _ = first.Run(wctx) }()
	select {
	case <-gotB:
	case <-time.After(20 * time.Second):
		t.Fatalf("the worker did not get its second job within 20s of replying to the first: released only once the reply is durable?\n%s", br.Tail())
	}
	if _, err := cl.Reply(ctx, a, client.ReplyOptions{}); !errors.Is(err, client.ErrPending) {
		t.Fatalf("reply of %s before its commit: %v, want ErrPending (not durable yet)\n%s", a, err, br.Tail())
	}
	if st, err := cl.Status(ctx, a); err != nil || st.State != "dispatched" {
		t.Fatalf("status of %s before its commit: %+v %v, want dispatched", a, st, err)
	}

	br.Signal(syscall.SIGKILL)
	br.Kill()
	wcancel()
	<-firstDone
	t.Setenv("TITANIC_TESTHOOK_STALL_AT_REPLY", "")
	br = harness.Broker(t, "broker-restarted", ep, dir, fastBroker...)
	var ran sync.Map // bodies the second worker ran
	second := newJobWorker(t, ep, func(_ context.Context, req [][]byte) ([][]byte, error) {
		body := string(bytes.Join(req, nil))
		ran.Store(body, true)
		return [][]byte{[]byte("second:" + body)}, nil
	})
	sctx, scancel := context.WithCancel(ctx)
	secondDone := make(chan struct{})
	go func() { defer close(secondDone); _ = second.Run(sctx) }()
	defer func() { scancel(); <-secondDone }()
	for tk, body := range map[string]string{a: "a", b: "b"} {
		rep, err := cl.Reply(ctx, tk, client.ReplyOptions{Wait: true})
		if err != nil {
			t.Fatalf("ticket %s (%s) not answered after the restart: %v\n%s", tk, body, err, br.Tail())
		}
		if got := string(bytes.Join(rep, nil)); got != "second:"+body {
			t.Fatalf("ticket %s answered %q, want %q: the only reply is the redelivery's", tk, got, "second:"+body)
		}
		if _, ok := ran.Load(body); !ok {
			t.Fatalf("job %s was not redelivered", body)
		}
		st, err := cl.Status(ctx, tk)
		if err != nil || st.State != "done" || st.Attempts < 1 {
			t.Fatalf("status of %s: %+v %v, want done", tk, st, err)
		}
	}
}

// newJobWorker is an in-process worker of service "job" that runs handle.
func newJobWorker(t *testing.T, ep string, handle worker.Handler) *worker.Worker {
	t.Helper()
	w, err := worker.New(worker.Config{
		Brokers: []string{ep}, Service: "job",
		HeartbeatInterval: 200 * time.Millisecond, ReconnectDelay: 100 * time.Millisecond,
	}, handle)
	if err != nil {
		t.Fatalf("worker: %v", err)
	}
	return w
}
