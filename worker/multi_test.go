package worker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/nodetest"
	"github.com/titanicmq/titanic/worker"
)

var quietLog = slog.New(slog.DiscardHandler)

// titanicNode runs an in-process titanic node (package titanic/node) and
// returns its endpoint.
func titanicNode(t *testing.T) string {
	t.Helper()
	cfg := nodetest.Config(t.TempDir())
	cfg.Broker.HeartbeatInterval = heartbeat
	cfg.Store.NoSync = true
	return nodetest.Start(t, cfg).Endpoint()
}

// heartbeat is the brokers' and workers' heartbeat interval: a worker
// silent for 3 of them is gone.
const heartbeat = 250 * time.Millisecond

func multiConfig() worker.Config {
	return worker.Config{Service: "echo", HeartbeatInterval: heartbeat, ReconnectDelay: 50 * time.Millisecond, Logger: quietLog}
}

func runMulti(t *testing.T, m *worker.Multi) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Multi.Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Multi.Run did not return")
		}
	})
}

func newTestClient(t *testing.T, ep string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Brokers: []string{ep}, Timeout: time.Second, Retries: 5, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestMultiServesBothClusters: one echo handler, two clusters; the
// tickets of both are answered, by the session of their own cluster.
func TestMultiServesBothClusters(t *testing.T) {
	eps := []string{titanicNode(t), titanicNode(t)}
	var perCluster [2]atomic.Int64
	m, err := worker.NewMulti([][]string{{eps[0]}, {eps[1]}}, multiConfig(), func(ctx context.Context, req [][]byte) ([][]byte, error) {
		i, ok := worker.ClusterOf(ctx)
		if !ok {
			return nil, errors.New("no cluster in the context")
		}
		perCluster[i].Add(1)
		return [][]byte{fmt.Appendf(nil, "cluster%d:%s", i, bytes.Join(req, nil))}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if m.Clusters() != 2 {
		t.Fatalf("Clusters = %d", m.Clusters())
	}
	runMulti(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 20
	for c, ep := range eps {
		cl := newTestClient(t, ep)
		var tickets []string
		for i := range n {
			tk, err := cl.Submit(ctx, "echo", [][]byte{fmt.Appendf(nil, "job %d", i)}, client.SubmitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tickets = append(tickets, tk)
		}
		for i, tk := range tickets {
			rep, err := cl.Reply(ctx, tk, client.ReplyOptions{Wait: true})
			if err != nil {
				t.Fatalf("cluster %d ticket %d: %v", c, i, err)
			}
			if got, want := string(bytes.Join(rep, nil)), fmt.Sprintf("cluster%d:job %d", c, i); got != want {
				t.Fatalf("cluster %d ticket %d = %q, want %q", c, i, got, want)
			}
		}
	}
	if perCluster[0].Load() != n || perCluster[1].Load() != n {
		t.Fatalf("jobs per cluster: %d, %d; want %d each", perCluster[0].Load(), perCluster[1].Load(), n)
	}
	if s := m.Stats(); s.Replies != 2*n || m.ClusterStats(0).Replies != n {
		t.Fatalf("stats: %+v, cluster 0: %+v", s, m.ClusterStats(0))
	}
}

// TestMultiMaxConcurrent: with a bound of 1 over 3 clusters, jobs of
// every cluster run one at a time, and none is lost while its session
// waits for the slot (it heartbeats meanwhile).
func TestMultiMaxConcurrent(t *testing.T) {
	eps := []string{titanicNode(t), titanicNode(t), titanicNode(t)}
	var running, peak atomic.Int64
	var mu sync.Mutex
	seen := map[int]int{}
	m, err := worker.NewMulti([][]string{{eps[0]}, {eps[1]}, {eps[2]}}, multiConfig(), func(ctx context.Context, req [][]byte) ([][]byte, error) {
		r := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if r <= p || peak.CompareAndSwap(p, r) {
				break
			}
		}
		i, _ := worker.ClusterOf(ctx)
		mu.Lock()
		seen[i]++
		mu.Unlock()
		// Nine such jobs one at a time: sessions wait for the slot far
		// longer than the broker's liveness (750ms), and keep their lease.
		time.Sleep(200 * time.Millisecond)
		return req, nil
	}, worker.WithMaxConcurrent(1))
	if err != nil {
		t.Fatal(err)
	}
	runMulti(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type sub struct {
		cl     *client.Client
		ticket string
	}
	var subs []sub
	for _, ep := range eps {
		cl := newTestClient(t, ep)
		for i := range 3 {
			tk, err := cl.Submit(ctx, "echo", [][]byte{fmt.Appendf(nil, "job %d", i)}, client.SubmitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			subs = append(subs, sub{cl, tk})
		}
	}
	for _, s := range subs {
		if _, err := s.cl.Reply(ctx, s.ticket, client.ReplyOptions{Wait: true}); err != nil {
			t.Fatal(err)
		}
		st, err := s.cl.Status(ctx, s.ticket)
		if err != nil {
			t.Fatal(err)
		}
		if st.Attempts != 1 {
			t.Errorf("ticket %s took %d attempts, want 1 (no lease lost while waiting for the slot)", s.ticket, st.Attempts)
		}
	}
	if p := peak.Load(); p != 1 {
		t.Fatalf("%d jobs ran at once, want 1", p)
	}
	if seen[0] != 3 || seen[1] != 3 || seen[2] != 3 {
		t.Fatalf("jobs per cluster: %v", seen)
	}
}

func TestNewMultiConfig(t *testing.T) {
	echo := func(_ context.Context, req [][]byte) ([][]byte, error) { return req, nil }
	cfg := multiConfig()
	withBrokers := cfg
	withBrokers.Brokers = []string{"tcp://127.0.0.1:1"}
	for name, tc := range map[string]struct {
		clusters [][]string
		cfg      worker.Config
		h        worker.Handler
	}{
		"no clusters":   {nil, cfg, echo},
		"empty cluster": {[][]string{{"tcp://127.0.0.1:1"}, {}}, cfg, echo},
		"shared":        {[][]string{{"tcp://127.0.0.1:1"}, {"tcp://127.0.0.1:2", "tcp://127.0.0.1:1"}}, cfg, echo},
		"cfg.Brokers":   {[][]string{{"tcp://127.0.0.1:1"}}, withBrokers, echo},
		"no handler":    {[][]string{{"tcp://127.0.0.1:1"}}, cfg, nil},
		"bad endpoint":  {[][]string{{"127.0.0.1:1"}}, cfg, echo},
		"no service":    {[][]string{{"tcp://127.0.0.1:1"}}, worker.Config{}, echo},
	} {
		if _, err := worker.NewMulti(tc.clusters, tc.cfg, tc.h); !errors.Is(err, worker.ErrConfig) {
			t.Errorf("%s: NewMulti = %v, want ErrConfig", name, err)
		}
	}
	m, err := worker.NewMulti([][]string{{"tcp://127.0.0.1:1"}}, cfg, echo)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	// Once the first Run works (its session heartbeats), a second one is
	// refused.
	for deadline := time.Now().Add(5 * time.Second); m.Stats().Heartbeats == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the Multi worker sent no heartbeat within 5s")
		}
	}
	if err := m.Run(ctx); !errors.Is(err, worker.ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
