package titanic_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/nodetest"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/worker"
)

// An attempt a broker restart cuts short counts as an attempt: found by an
// outside-in test of the job lifecycle.

// restartPort returns a free port of 127.0.0.1 in 44000-44999 (the range
// this machine's tests may use), so that a node restarted in the same
// test listens where its clients and workers already point.
func restartPort(t *testing.T) string {
	t.Helper()
	base := 44000 + int(time.Now().UnixNano()%900)
	for i := range 1000 {
		p := 44000 + (base-44000+i)%1000
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		return fmt.Sprintf("tcp://127.0.0.1:%d", p)
	}
	t.Fatal("no free port in 44000-44999")
	return ""
}

// restartNode starts a single node in dir on ep.
func restartNode(t *testing.T, dir, ep string, tune func(*titanic.Config)) *nodetest.Node {
	t.Helper()
	nc := nodetest.Config(dir)
	nc.Broker.Endpoints = []string{ep}
	nc.Service = titanic.DefaultConfig()
	nc.Service.Logger = nodetest.Quiet
	if tune != nil {
		tune(&nc.Service)
	}
	return nodetest.Start(t, nc)
}

func restartClient(t *testing.T, ep string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Brokers: []string{ep}, Timeout: time.Second, Retries: 5, Logger: nodetest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// restartWorker runs a Go worker of service on ep until the test ends,
// or until stop, which waits for it.
func restartWorker(t *testing.T, ep, service string, h worker.Handler) (stop func()) {
	t.Helper()
	w, err := worker.New(worker.Config{Brokers: []string{ep}, Service: service, HeartbeatInterval: 100 * time.Millisecond, Logger: nodetest.Quiet}, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stop = sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(stop)
	return stop
}

func restartWaitState(t *testing.T, c *client.Client, ticket, state string, within time.Duration) client.Status {
	t.Helper()
	var st client.Status
	var err error
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		st, err = c.Status(ctx, ticket)
		cancel()
		if err == nil && st.State == state {
			return st
		}
	}
	t.Fatalf("ticket %s not %s within %s: last %+v %v", ticket, state, within, st, err)
	return st
}

// restartedNode is a node restartWhileDispatched restarted, a client of
// it and the ticket the restart cut short.
type restartedNode struct {
	ctx context.Context // ends with the test, or after a minute
	c   *client.Client
	ep  string
	tk  string
}

// restartWhileDispatched starts a node in a new directory, runs a worker
// of service that answers with h, submits a ticket of service with opts
// and, once it is dispatched, stops the node (a crash: no drain) and
// starts it again in the same directory on the same endpoint. The worker
// is stopped with the node unless keepWorker (a long job the restart
// does not end): then it runs until the test ends.
func restartWhileDispatched(t *testing.T, service string, opts client.SubmitOptions, h worker.Handler, keepWorker bool) restartedNode {
	t.Helper()
	dir, ep := t.TempDir(), restartPort(t)
	nd := restartNode(t, dir, ep, nil)
	r := restartedNode{c: restartClient(t, ep), ep: ep}
	var cancel context.CancelFunc
	r.ctx, cancel = context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	stopWorker := restartWorker(t, ep, service, h)
	var err error
	r.tk, err = r.c.Submit(r.ctx, service, [][]byte{[]byte("x")}, opts)
	if err != nil {
		t.Fatal(err)
	}
	restartWaitState(t, r.c, r.tk, "dispatched", 10*time.Second)
	nd.Stop()
	if !keepWorker {
		stopWorker()
	}
	restartNode(t, dir, ep, nil)
	return r
}

// waitUntilStopped is a worker's handler that holds its request until
// the worker stops.
func waitUntilStopped(ctx context.Context, _ [][]byte) ([][]byte, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// A ticket submitted with attempts N is dispatched at most N times
// (README: `"attempts": 3` (dispatches at most); `--attempts N`: "this
// ticket's dispatches before it fails for good"; Guarantees: "after
// --max-attempts dispatches it fails"). A broker restart while its last
// allowed attempt runs gives it one more dispatch (attempts 3 of 2), so a
// ticket with attempts 1 can run twice, and the still-running first
// worker and the new one run it at once.
func TestRestartCutShortAttemptCountsTowardMaxAttempts(t *testing.T) {
	var runs atomic.Int32
	hold := make(chan struct{})
	defer close(hold)
	// A crash while the only allowed attempt runs.
	r := restartWhileDispatched(t, "once", client.SubmitOptions{MaxAttempts: 1}, func(ctx context.Context, req [][]byte) ([][]byte, error) {
		runs.Add(1)
		select { // the first run hangs (a long job) until the test ends
		case <-hold:
		case <-ctx.Done():
		}
		return req, nil
	}, true)
	var second atomic.Int32
	restartWorker(t, r.ep, "once", func(_ context.Context, req [][]byte) ([][]byte, error) {
		second.Add(1)
		return req, nil
	})
	time.Sleep(3 * time.Second)
	st, err := r.c.Status(r.ctx, r.tk)
	if err != nil {
		t.Fatal(err)
	}
	if second.Load() > 0 || st.Attempts > 1 {
		t.Fatalf("a ticket of attempts 1 was dispatched again after a restart: %d more run(s), status %+v (want at most 1 dispatch: failed, or held until the first run answers)", second.Load(), st)
	}
}

// After a restart, a ticket that was dispatched when the broker stopped
// is redelivered: its lease died with the process (Recover), and stats
// counts it PENDING (waiting for a worker). Its lookups still say
// "dispatched" (status, titanic.list, 9/TSP `300 dispatched`, the HTTP
// API's /services) for as long as no worker takes it, though README says
// IN-FLIGHT is "given to a worker, reply not recorded yet: what `status`
// calls dispatched" and that the counts follow lookups within moments.
// `titanic tickets --state pending` does not list it, `--state
// dispatched` lists a ticket nobody holds.
func TestRedeliveredAfterRestartIsPending(t *testing.T) {
	// A crash while it runs; its worker goes too.
	r := restartWhileDispatched(t, "held", client.SubmitOptions{}, waitUntilStopped, false)
	time.Sleep(2 * time.Second)
	st, err := r.c.Status(r.ctx, r.tk)
	if err != nil {
		t.Fatal(err)
	}
	qs, err := r.c.QueueStats(r.ctx, "held")
	if err != nil {
		t.Fatal(err)
	}
	var q client.ServiceQueue
	for _, s := range qs.Services {
		if s.Service == "held" {
			q = s
		}
	}
	if (st.State == "dispatched") != (q.InFlight == 1) {
		t.Fatalf("2s after the restart, no worker: status says %s, stats say pending %d in flight %d (want them to agree: pending, as it waits for a worker)", st.State, q.Pending, q.InFlight)
	}
}

// README: `titanic status --attempts TICKET` is "the attempt history:
// each attempt that ended without a reply (when, worker, how long,
// outcome ...)", and a lost worker "is a failure like any other ... the
// attempt counts". An attempt cut short by a broker restart (its lease
// died with the process) is counted (attempts 2 once redelivered and
// answered) but leaves no record: the history is empty, so the count
// and the history disagree and the lost attempt is invisible.
func TestRestartCutShortAttemptInHistory(t *testing.T) {
	// A crash during attempt 1.
	r := restartWhileDispatched(t, "cut", client.SubmitOptions{MaxAttempts: 3, BackoffBase: 10 * time.Millisecond}, waitUntilStopped, false)
	restartWorker(t, r.ep, "cut", func(_ context.Context, req [][]byte) ([][]byte, error) { return req, nil })
	st := restartWaitState(t, r.c, r.tk, "done", 15*time.Second)
	hist, err := r.c.Attempts(r.ctx, r.tk)
	if err != nil {
		t.Fatal(err)
	}
	if st.Attempts-1 != len(hist) {
		t.Fatalf("done after %d attempts, yet the history of attempts that ended without a reply has %d: %+v (want the attempt the restart cut short)", st.Attempts, len(hist), hist)
	}
}
