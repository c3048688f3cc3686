package bench

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/notify"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// BenchmarkNotify measures notification latency: from the moment a reply
// is recorded (the event's time, taken right after its commit) to the
// moment a subscriber receives the notice, under a load of round trips
// from 8 clients with 8 echo workers. Reported: p50-ms and p99-ms of that
// latency, and notices/s received.
func BenchmarkNotify(b *testing.B) {
	rawFsyncRate(b)
	pub := notify.New("tcp://127.0.0.1:*", quiet)
	pctx, pcancel := context.WithCancel(context.Background())
	pdone := make(chan error, 1)
	go func() { pdone <- pub.Run(pctx) }()
	defer func() { pcancel(); <-pdone }()
	<-pub.Ready()
	n := startWith(b, 0, func(tc *titanic.Config) { tc.Notifier = pub })
	n.startWorkers(b, 8)
	cs := n.clients(b, 8)

	zctx, err := zmq.NewContext()
	if err != nil {
		b.Fatal(err)
	}
	defer zctx.Term()
	sub, err := zctx.NewSocket(zmq.SUB)
	if err != nil {
		b.Fatal(err)
	}
	_ = sub.SetLinger(0)
	_ = sub.SetRcvhwm(0)
	_ = sub.SetRcvtimeo(200 * time.Millisecond)
	_ = sub.SetSubscribe(tsp.ServiceTopic + service)
	if err := sub.Connect(pub.Endpoint()); err != nil {
		b.Fatal(err)
	}
	var (
		mu    sync.Mutex
		lats  []time.Duration
		stop  = make(chan struct{})
		ready = make(chan struct{})
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() { // owns sub
		defer wg.Done()
		defer sub.Close()
		once := sync.OnceFunc(func() { close(ready) })
		for {
			select {
			case <-stop:
				return
			default:
			}
			msg, err := sub.RecvMessage(0)
			if err != nil {
				continue
			}
			got := time.Now()
			once()
			ev, err := tsp.ParseEvent(msg)
			if err != nil || ev.State != "done" {
				continue
			}
			mu.Lock()
			lats = append(lats, got.Sub(ev.Time))
			mu.Unlock()
		}
	}()
	roundTrip := func(ctx context.Context, c *client.Client) error {
		tk, err := c.Submit(ctx, service, body(), submitOptions())
		if err != nil {
			return err
		}
		_, err = c.Reply(ctx, tk, client.ReplyOptions{Wait: true})
		return err
	}
	// Warm up until the subscription is live.
	deadline := time.Now().Add(10 * time.Second)
	for waiting := true; waiting; {
		if err := roundTrip(context.Background(), cs[0]); err != nil {
			b.Fatal(err)
		}
		select {
		case <-ready:
			waiting = false
		default:
			if time.Now().After(deadline) {
				b.Fatal("no notification within 10s")
			}
		}
	}
	b.Run("clients=8", func(b *testing.B) {
		mu.Lock()
		lats = lats[:0]
		mu.Unlock()
		_, elapsed := drive(b, cs, roundTrip)
		time.Sleep(50 * time.Millisecond) // the last notices in flight
		mu.Lock()
		got := slices.Clone(lats)
		mu.Unlock()
		if len(got) == 0 {
			b.Fatal("no notification received")
		}
		slices.Sort(got)
		b.ReportMetric(percentile(got, 0.50), "p50-ms")
		b.ReportMetric(percentile(got, 0.99), "p99-ms")
		b.ReportMetric(float64(len(got))/elapsed.Seconds(), "notices/s")
	})
	close(stop)
	wg.Wait()
	n.stop(b)
}
