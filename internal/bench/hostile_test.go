package bench

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/internal/harness"
)

// hostilePhase is how long the well-behaved client is measured, alone and
// then beside the hostile clients.
const hostilePhase = 5 * time.Second

// BenchmarkHostile measures a well-behaved, spec-only 9/TSP client (one
// titanic.request at a time on its own DEALER, no extensions) submitting
// in a loop to the binary, alone and then while the hostile clients of
// the self-defence test (harness.Hostile: oversized frames, a flood from
// one connection, 2,000 connections that never read, fuzz garbage,
// frame-count bombs) attack it every 500 ms. It reports both latency
// percentiles, the p99 ratio (issue 13 asks at most 2) and the broker's
// peak anonymous RSS (RssAnon sampled every 20 ms) in each phase. The
// broker runs with the hostile test's settings (--max-message-size 1MiB,
// --submit-rate 2000). Run it with -benchtime 1x: each phase lasts
// hostilePhase whatever b.N.
func BenchmarkHostile(b *testing.B) {
	ep := harness.FreeEndpoint(b)
	br := harness.Broker(b, "bench-broker", ep, b.TempDir(), "--max-message-size", "1048576", "--submit-rate", "2000")
	corpus := filepath.Join("..", "..", "broker", "mdp", "testdata", "fuzz")

	// peak samples the broker's RssAnon until stop is closed.
	peak := func(stop <-chan struct{}, out *int64, done *sync.WaitGroup) {
		defer done.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := harness.ProcStatus(br.PID(), "RssAnon"); err == nil {
				*out = max(*out, v)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}
	measure := func(hostile bool) (lats []time.Duration, rss int64) {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		stop := make(chan struct{})
		wg.Add(1)
		go peak(stop, &rss, &wg)
		attackErr := make(chan error, 1)
		if hostile {
			wg.Add(1)
			go func() {
				defer wg.Done()
				closeAll, err := harness.Hostile(ctx, ep, corpus, 0, 500*time.Millisecond)
				if closeAll != nil {
					closeAll()
				}
				attackErr <- err
			}()
		} else {
			attackErr <- nil
		}
		lats = goodClient(b, ep, hostilePhase)
		cancel()
		close(stop)
		wg.Wait()
		if err := <-attackErr; err != nil {
			b.Fatalf("hostile clients: %v", err)
		}
		if br.Exited() {
			b.Fatalf("broker died:\n%s", br.Tail())
		}
		return lats, rss
	}
	b.ResetTimer()
	alone, rssAlone := measure(false)
	attacked, rssAttacked := measure(true)
	b.StopTimer()
	p99a, p99h := percentile(alone, 0.99), percentile(attacked, 0.99)
	b.ReportMetric(percentile(alone, 0.50), "p50-ms")
	b.ReportMetric(p99a, "p99-ms")
	b.ReportMetric(percentile(attacked, 0.50), "hostile-p50-ms")
	b.ReportMetric(p99h, "hostile-p99-ms")
	b.ReportMetric(p99h/p99a, "p99-ratio")
	b.ReportMetric(float64(len(alone))/hostilePhase.Seconds(), "submits/s")
	b.ReportMetric(float64(len(attacked))/hostilePhase.Seconds(), "hostile-submits/s")
	b.ReportMetric(float64(rssAlone)/(1<<20), "rss-anon-MiB")
	b.ReportMetric(float64(rssAttacked)/(1<<20), "hostile-rss-anon-MiB")
}

// goodClient submits one titanic.request at a time for d, as a client
// knowing only 9/TSP would, and returns the sorted latencies. A submit
// answered with anything but 200 or not answered within 5 s fails the
// benchmark: the well-behaved client must be served.
func goodClient(b *testing.B, ep string, d time.Duration) []time.Duration {
	s, err := zmq.NewSocket(zmq.DEALER)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	_ = s.SetLinger(0)
	if err := s.Connect(ep); err != nil {
		b.Fatal(err)
	}
	poller := zmq.NewPoller()
	poller.Add(s, zmq.POLLIN)
	var lats []time.Duration
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		start := time.Now()
		if _, err := s.SendMessage("", "MDPC01", "titanic.request", service, "ok"); err != nil {
			b.Fatal(err)
		}
		polled, err := poller.Poll(5 * time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if len(polled) == 0 {
			b.Fatalf("well-behaved submit %d not answered within 5 s", len(lats))
		}
		msg, err := s.RecvMessage(0)
		if err != nil {
			b.Fatal(err)
		}
		// "", MDPC01, titanic.request, 200, ticket
		if len(msg) != 5 || msg[3] != "200" {
			b.Fatalf("well-behaved submit %d answered %q", len(lats), msg)
		}
		lats = append(lats, time.Since(start))
	}
	slices.Sort(lats)
	return lats
}
