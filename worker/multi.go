package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Multi is a worker that serves one service on several independent
// clusters at once (the shards of a client.Sharded, say): one worker
// session per cluster, each a Worker with the cluster's own failover list
// of brokers, all calling the same Handler. It merges the clusters' queues
// into one stream of work for the handler.
//
// Each cluster's Worker runs cfg.Concurrency slots (default 1), each
// holding at most one request, so the handler may run concurrently, up to
// Concurrency times per cluster: a Multi of three clusters with the
// default runs up to three jobs at a time, one from each. The handler
// must be safe for that. ClusterOf (and SlotOf) tell a job's cluster (and
// slot) from its context.
//
// WithMaxConcurrent bounds the jobs running at once below the number of
// clusters times Concurrency. A session that receives a request while the
// bound is reached holds it and waits for room inside its handler
// goroutine, while its Run goroutine keeps heartbeating, so the broker keeps the lease and the
// job is neither lost nor redelivered; it starts when another job ends.
// Such a job is not available to other workers of its cluster while it
// waits: run Multi with a bound for a merged stream of a few clusters, and
// plain Workers where throughput matters.
//
// A lost connection, a DISCONNECT or a Run that stops behaves per session
// exactly as on a Worker (with its DrainTimeout): the other sessions are
// not affected.
type Multi struct {
	workers []*Worker
	sem     chan struct{} // nil: no bound
	running atomic.Bool
}

// MultiOption tunes NewMulti.
type MultiOption func(*multiOptions)

type multiOptions struct{ maxConcurrent int }

// WithMaxConcurrent bounds the handler calls running at once across the
// clusters; n <= 0 or n >= the number of clusters times Config.Concurrency:
// no bound beyond Concurrency per cluster.
func WithMaxConcurrent(n int) MultiOption {
	return func(o *multiOptions) { o.maxConcurrent = n }
}

type clusterKey struct{}

// ClusterOf returns the index, in NewMulti's clusters, of the cluster a
// Multi's handler call serves; false for a context not from a Multi.
func ClusterOf(ctx context.Context) (int, bool) {
	i, ok := ctx.Value(clusterKey{}).(int)
	return i, ok
}

// NewMulti returns a worker serving cfg.Service on each cluster of
// clusters, each a failover list of broker endpoints (as Config.Brokers;
// cfg.Brokers must be empty). Every other field of cfg applies to every
// session; the logger gets a "cluster" attribute. An endpoint in two
// clusters is an error wrapping ErrConfig, like any invalid cfg.
func NewMulti(clusters [][]string, cfg Config, h Handler, opts ...MultiOption) (*Multi, error) {
	if len(clusters) == 0 {
		return nil, fmt.Errorf("%w: no clusters", ErrConfig)
	}
	if len(cfg.Brokers) > 0 {
		return nil, fmt.Errorf("%w: Multi takes its brokers from clusters; cfg.Brokers must be empty", ErrConfig)
	}
	if h == nil {
		return nil, fmt.Errorf("%w: nil handler", ErrConfig)
	}
	var o multiOptions
	for _, opt := range opts {
		opt(&o)
	}
	seen := map[string]int{}
	for i, eps := range clusters {
		for _, ep := range eps {
			if j, dup := seen[ep]; dup && j != i {
				return nil, fmt.Errorf("%w: endpoint %s is in clusters %d and %d", ErrConfig, ep, j, i)
			}
			seen[ep] = i
		}
	}
	m := &Multi{}
	if o.maxConcurrent > 0 && o.maxConcurrent < len(clusters)*max(cfg.Concurrency, 1) {
		m.sem = make(chan struct{}, o.maxConcurrent)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	for i, eps := range clusters {
		c := cfg
		c.Brokers = eps
		c.Logger = logger.With("cluster", i)
		w, err := New(c, m.wrap(i, h))
		if err != nil {
			return nil, fmt.Errorf("cluster %d: %w", i, err)
		}
		m.workers = append(m.workers, w)
	}
	return m, nil
}

// wrap is cluster i's handler: h, with the cluster in the context and,
// with a bound, a slot of the semaphore held while it runs.
func (m *Multi) wrap(i int, h Handler) Handler {
	return func(ctx context.Context, req [][]byte) ([][]byte, error) {
		ctx = context.WithValue(ctx, clusterKey{}, i)
		if m.sem != nil {
			select {
			case m.sem <- struct{}{}:
				defer func() { <-m.sem }()
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return h(ctx, req)
	}
}

// Run runs every cluster's session until ctx is done, then stops them all
// (each sends DISCONNECT to its broker) and returns nil. When a session
// fails (a ZeroMQ error, see Worker.Run), Run stops the others and returns
// the errors. It returns ErrRunning while another Run of m runs.
func (m *Multi) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return fmt.Errorf("multi worker: %w", ErrRunning)
	}
	defer m.running.Store(false)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(m.workers))
	var wg sync.WaitGroup
	for i, w := range m.workers {
		wg.Go(func() {
			if err := w.Run(ctx); err != nil {
				errs[i] = fmt.Errorf("cluster %d: %w", i, err)
				cancel()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Clusters returns the number of clusters.
func (m *Multi) Clusters() int { return len(m.workers) }

// ClusterStats returns cluster i's session counters.
func (m *Multi) ClusterStats(i int) Stats { return m.workers[i].Stats() }

// Stats returns the counters of every session, summed.
func (m *Multi) Stats() Stats {
	var t Stats
	for _, w := range m.workers {
		s := w.Stats()
		t.Requests += s.Requests
		t.Replies += s.Replies
		t.Failures += s.Failures
		t.Reconnects += s.Reconnects
		t.Dropped += s.Dropped
		t.Disconnects += s.Disconnects
		t.Timeouts += s.Timeouts
		t.Heartbeats += s.Heartbeats
		t.Discarded += s.Discarded
		t.SendErrors += s.SendErrors
	}
	return t
}
