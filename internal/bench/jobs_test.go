package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/titanicmq/titanic/client"
)

// jobClients is the number of clients submitting while one worker runs
// the jobs in BenchmarkJobs1Worker.
const jobClients = 64

// BenchmarkJobs1Worker measures durable jobs per second through one
// worker: 64 clients submit b.N tickets (durable submits, one in flight
// each) while one spec-only 7/MDP echo worker (a plain DEALER, not package
// worker) answers them; the clock runs from the first submit until the
// b.N-th reply is durable (counted by the service once its commit
// completed). It shows what one worker pays per job on top of the work
// itself: while a worker was released only once its reply was durable
// (before issue 10), a whole commit cycle.
func BenchmarkJobs1Worker(b *testing.B) {
	rawFsyncRate(b)
	n := startNode(b)
	n.mdpWorker(b)
	cs := n.clients(b, jobClients)
	submit := func(ctx context.Context, c *client.Client) error {
		_, err := c.Submit(ctx, service, body(), submitOptions())
		return err
	}
	// Connect every client, and let the worker answer those jobs, before
	// the clock starts.
	want := n.svc.Stats().Replies + uint64(len(cs))
	for _, c := range cs {
		if err := submit(context.Background(), c); err != nil {
			b.Fatal(err)
		}
	}
	n.waitReplies(b, want)
	b.Run(fmt.Sprintf("workers=1/clients=%d", jobClients), func(b *testing.B) {
		before := n.counts(b)
		want := n.svc.Stats().Replies + uint64(b.N)
		var (
			next atomic.Int64
			wg   sync.WaitGroup
		)
		b.ResetTimer()
		start := time.Now()
		for _, c := range cs {
			wg.Go(func() {
				for next.Add(1) <= int64(b.N) {
					if err := submit(context.Background(), c); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		submitted := time.Since(start)
		n.waitReplies(b, want)
		elapsed := time.Since(start)
		b.StopTimer()
		after := n.counts(b)
		rate := float64(b.N) / elapsed.Seconds()
		b.ReportMetric(rate, "jobs/s")
		b.ReportMetric(float64(b.N)/submitted.Seconds(), "submits/s")
		b.ReportMetric(float64(after.commits-before.commits)/float64(b.N), "commits/job")
		b.ReportMetric(rate/rawFsyncRate(b), "x-fsync")
	})
	n.stop(b)
}

// waitReplies waits until the service has recorded (made durable) want
// replies in all. It polls the service's counter every millisecond: the
// counter has no event to wait on, and a millisecond is noise against
// runs of seconds.
func (n *node) waitReplies(b *testing.B, want uint64) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for n.svc.Stats().Replies < want {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d replies durable after 10 minutes", n.svc.Stats().Replies, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// 7/MDP (MDPW01) worker commands.
const (
	mdpwReady      = 0x01
	mdpwRequest    = 0x02
	mdpwReply      = 0x03
	mdpwHeartbeat  = 0x04
	mdpwDisconnect = 0x05
)

// mdpWorker starts one spec-only 7/MDP echo worker of service, stopped by
// n.stop, and waits until the broker has it. Its goroutine owns its
// socket and its own ZeroMQ context.
func (n *node) mdpWorker(b *testing.B) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n.stopWorkers = cancel
	started := make(chan error, 1)
	n.workers.Go(func() {
		zctx, err := zmq.NewContext()
		if err != nil {
			started <- err
			return
		}
		defer func() { _ = zctx.Term() }()
		sock, err := zctx.NewSocket(zmq.DEALER)
		if err != nil {
			started <- err
			return
		}
		defer func() { _ = sock.Close() }()
		_ = sock.SetLinger(0)
		if err := sock.Connect(n.endpoint); err != nil {
			started <- err
			return
		}
		started <- nil
		if err := mdpEcho(ctx, sock); err != nil {
			b.Errorf("mdp worker: %v", err)
		}
	})
	if err := <-started; err != nil {
		b.Fatalf("mdp worker: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := n.brk.Stats(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if ss, _ := st.Service(service); ss.Workers >= 1 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatal("the mdp worker did not register within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
