package bench

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/broker/zsock"
	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic"
	titanicnode "github.com/titanicmq/titanic/titanic/node"
	"github.com/titanicmq/titanic/worker"
)

const (
	// service is the worker service the benchmarks submit to.
	service = "bench.echo"
	// bodySize is the size of the one-frame request body.
	bodySize = 100
	// stampEnd: the echo workers write when they ran a job in bytes 1 to
	// stampEnd-1 of the body (byte 0 marks the request).
	stampEnd = 9

	// fsyncsPerCommit: bbolt (v1.5) fdatasyncs twice per write transaction,
	// once for the data pages and once for the meta page.
	fsyncsPerCommit = 2
)

// Knobs for experiments, passed after -args (go test ./internal/bench/
// -run '^$' -bench RoundTrip -args -bench.workers 64). make bench uses the
// defaults.
var (
	// echoWorkers is the number of in-process echo workers of
	// BenchmarkRoundTrip. Titanic releases a worker as soon as its reply
	// arrives (the reply commits behind its back), so a worker holds each
	// job for the network hops and the work only. The default (0) runs one
	// worker per client, at least 8, so that the round trip, not a
	// shortage of workers, is measured; a shortage shows in dispatch-ms
	// (tickets waiting for a free worker).
	echoWorkers = flag.Int("bench.workers", 0, "echo workers of BenchmarkRoundTrip (0: one per client, at least 8)")
	// pollInterval caps the interval between Reply lookups while a round
	// trip waits (client backoff: 1ms, doubling up to this).
	pollInterval = flag.Duration("bench.poll", 2*time.Millisecond, "Reply(Wait) poll interval cap of BenchmarkRoundTrip")
	// randomKeys makes submits carry random idempotency keys (UUIDv4)
	// instead of the client's default time-ordered ones (UUIDv7), to
	// measure what random keys cost the store (one random B+tree leaf
	// dirtied per submit).
	// ownContexts gives every client and worker its own ZeroMQ context
	// (and I/O thread) instead of one shared by the benchmark's clients
	// and one by its workers, as a program with many would.
	ownContexts = flag.Bool("bench.own-contexts", false, "one ZeroMQ context per client")
	randomKeys  = flag.Bool("bench.random-keys", false, "submit with random (UUIDv4) idempotency keys")
	window      = flag.Int("bench.window", client.DefaultMaxPending, "BenchmarkSubmitPipelined: submits in flight")
)

// submitOptions are the options of every benchmark submit.
func submitOptions() client.SubmitOptions {
	if *randomKeys {
		return client.SubmitOptions{IdemKey: uuid.NewString()}
	}
	return client.SubmitOptions{} // the client picks a time-ordered key
}

var clientCounts = []int{1, 8, 64}

// quiet is the logger of every component: the benchmarks print metrics,
// not logs.
var quiet = slog.New(slog.DiscardHandler)

// ---------------------------------------------------------------------------
// Baseline: the raw fsync rate.

var (
	baselineOnce sync.Once
	baselineRate float64
	baselineErr  error
)

// rawFsyncRate returns the machine's raw write+fdatasync rate (fsyncs/s),
// measured once per process, for about a second, on a file in the
// directory the benchmarks' stores live in (os.TempDir, which b.TempDir
// uses). Every x-fsync ratio of the run divides by it.
func rawFsyncRate(tb testing.TB) float64 {
	tb.Helper()
	baselineOnce.Do(func() {
		dir, err := os.MkdirTemp("", "titanic-bench-fsync-")
		if err != nil {
			baselineErr = err
			return
		}
		defer os.RemoveAll(dir)
		n, elapsed, err := fsyncLoop(filepath.Join(dir, "fsync"), 0, time.Second)
		if err != nil {
			baselineErr = err
			return
		}
		baselineRate = float64(n) / elapsed.Seconds()
		fmt.Fprintf(os.Stderr, "bench: raw fsync baseline %.0f fsyncs/s (%d write+fdatasync in %s); x-fsync divides by it\n",
			baselineRate, n, elapsed.Round(time.Millisecond))
	})
	if baselineErr != nil {
		tb.Fatalf("measure the raw fsync rate: %v", baselineErr)
	}
	return baselineRate
}

// fsyncLoop overwrites 64 bytes at the start of the file at path and
// fdatasyncs it, count times, or (count 0) until d has passed.
func fsyncLoop(path string, count int, d time.Duration) (int, time.Duration, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	buf := make([]byte, 64)
	start := time.Now()
	n := 0
	for ; count == 0 && time.Since(start) < d || count > 0 && n < count; n++ {
		buf[0] = byte(n)
		if _, err := f.WriteAt(buf, 0); err != nil {
			return n, 0, err
		}
		if err := datasync(f); err != nil {
			return n, 0, err
		}
	}
	return n, time.Since(start), nil
}

// BenchmarkFsyncBaseline is the raw write+fdatasync rate of a file in the
// benchmarks' temporary directory: what one durable commit costs at best
// (a bbolt commit takes two of them).
func BenchmarkFsyncBaseline(b *testing.B) {
	rawFsyncRate(b) // measured first, on a quiet machine
	path := filepath.Join(b.TempDir(), "fsync")
	b.ResetTimer()
	n, elapsed, err := fsyncLoop(path, b.N, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(n)/elapsed.Seconds(), "fsyncs/s")
}

// ---------------------------------------------------------------------------
// An in-process broker.

// node is a whole titanic node (package titanic/node, the assembly
// `titanic broker` runs), serving on a random local port, with its store in
// a temporary directory and fsync on.
type node struct {
	nd       *titanicnode.Node
	st       *store.BoltStore // the node's local store
	timed    *timedStore
	svc      *titanic.Service
	brk      *broker.Broker
	endpoint string

	cancel  context.CancelFunc
	runDone chan error
	stopped bool

	cs          []*client.Client
	zctx        *zsock.Context // shared by the clients (nil: each has its own)
	wctx        *zsock.Context // shared by the workers (likewise)
	stopWorkers context.CancelFunc
	closers     []func() // raft followers and their stores, closed after the node
	workers     sync.WaitGroup
}

func startNode(b *testing.B) *node { return startReplicated(b, 0) }

// startReplicated is startNode as a member of a raft group of voters on
// 127.0.0.1 (0: no raft, a single node), made the leader before it is
// returned, as a group's serving member; the followers are raft replicas
// with their own stores.
func startReplicated(b *testing.B, voters int) *node { return startWith(b, voters, nil) }

// startWith is startReplicated with a hook that adjusts the titanic
// configuration.
func startWith(b *testing.B, voters int, tune func(*titanic.Config)) *node {
	b.Helper()
	bc := broker.DefaultConfig()
	bc.Endpoints = []string{"tcp://127.0.0.1:*"}
	bc.Logger = quiet
	tc := titanic.DefaultConfig()
	if tune != nil {
		tune(&tc)
	}
	n := &node{runDone: make(chan error, 1)}
	cfg := titanicnode.Config{Dir: b.TempDir(), Logger: quiet, Broker: bc, Service: tc, NoDrain: true,
		WrapStore: func(st store.Store) store.Store {
			n.timed = &timedStore{Store: st}
			return n.timed
		}}
	var followers []*member
	if voters > 0 {
		var rc replica.Config
		rc, followers = raftGroup(b, voters)
		cfg.Raft = &rc
	}
	nd, err := titanicnode.New(cfg)
	if err != nil {
		closeMembers(followers)
		b.Fatalf("assemble node: %v", err)
	}
	for _, m := range followers {
		n.closers = append(n.closers, m.close)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.nd, n.st, n.svc, n.brk, n.cancel = nd, nd.Bolt(), nd.Service(), nd.Broker(), cancel
	go func() { n.runDone <- nd.Run(ctx) }()
	select {
	case <-nd.Ready():
	case err := <-n.runDone:
		cancel()
		closeMembers(followers)
		b.Fatalf("node: %v", err)
	}
	b.Cleanup(func() { n.stop(b) })
	if voters > 0 {
		lead(b, nd.Replica(), followers)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !nd.Active() {
		if time.Now().After(deadline) {
			b.Fatal("node not serving within 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	eps := nd.Endpoints()
	if len(eps) == 0 {
		b.Fatal("broker bound no endpoint")
	}
	n.endpoint = eps[0]
	return n
}

// stop closes the clients, stops the workers and waits for them, then
// stops the node (broker, then the service, which commits what it holds,
// then its store), then the raft followers.
func (n *node) stop(b *testing.B) {
	if n.stopped {
		return
	}
	n.stopped = true
	for _, c := range n.cs {
		_ = c.Close()
	}
	if n.zctx != nil {
		_ = n.zctx.Close()
	}
	if n.stopWorkers != nil {
		n.stopWorkers()
		n.workers.Wait()
		if n.wctx != nil {
			_ = n.wctx.Close()
		}
	}
	n.cancel()
	if err := <-n.runDone; err != nil {
		b.Errorf("node: %v", err)
	}
	for _, c := range n.closers {
		c()
	}
}

// clients returns count clients of n, closed by n.stop.
func (n *node) clients(b *testing.B, count int) []*client.Client {
	b.Helper()
	cs := make([]*client.Client, count)
	if !*ownContexts && n.zctx == nil {
		zctx, err := zsock.NewContext()
		if err != nil {
			b.Fatal(err)
		}
		n.zctx = zctx
	}
	for i := range cs {
		c, err := client.New(client.Config{Brokers: []string{n.endpoint}, Timeout: 5 * time.Second, Retries: 3, Logger: quiet, Context: n.zctx})
		if err != nil {
			b.Fatal(err)
		}
		cs[i] = c
		n.cs = append(n.cs, c)
	}
	return cs
}

// startWorkers starts count echo workers for service, stopped (and waited
// for) by n.stop, and waits until the broker has them all.
func (n *node) startWorkers(b *testing.B, count int) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n.stopWorkers = cancel
	if !*ownContexts {
		wctx, err := zsock.NewContext()
		if err != nil {
			b.Fatal(err)
		}
		n.wctx = wctx
	}
	echo := func(_ context.Context, req [][]byte) ([][]byte, error) {
		// The echo, stamped with when the worker ran it.
		if len(req) == 1 && len(req[0]) >= stampEnd {
			binary.LittleEndian.PutUint64(req[0][1:stampEnd], uint64(time.Now().UnixNano()))
		}
		return req, nil
	}
	for range count {
		w, err := worker.New(worker.Config{Brokers: []string{n.endpoint}, Service: service,
			HeartbeatInterval: broker.DefaultConfig().HeartbeatInterval, Logger: quiet, Context: n.wctx}, echo)
		if err != nil {
			b.Fatal(err)
		}
		n.workers.Go(func() {
			if err := w.Run(ctx); err != nil && ctx.Err() == nil {
				b.Errorf("worker: %v", err)
			}
		})
	}
	// Wait until the broker knows all of them.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := n.brk.Stats(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if ss, _ := st.Service(service); ss.Workers >= count {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d workers registered", st.Workers, count)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// timedStore is the broker's store, with the time during which the store
// held at least one of the service's ops counted: the service hands every
// op over at once (ApplyAsync), so this busy time over wall time
// is how busy the commit path is (the commit-busy metric). Near 1, the
// commit path bounds throughput; well below 1, something else does. It
// embeds the store, so the service keeps its ApplyAsync, Usage and
// Leadership; only ApplyAsync and Apply are timed.
type timedStore struct {
	store.Store
	mu       sync.Mutex
	inflight int
	since    time.Time
	busy     time.Duration
}

func (s *timedStore) begin() {
	s.mu.Lock()
	if s.inflight == 0 {
		s.since = time.Now()
	}
	s.inflight++
	s.mu.Unlock()
}

func (s *timedStore) end() {
	s.mu.Lock()
	s.inflight--
	if s.inflight == 0 {
		s.busy += time.Since(s.since)
	}
	s.mu.Unlock()
}

// busyTime is the busy time so far, the current busy stretch included.
func (s *timedStore) busyTime() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight > 0 {
		return s.busy + time.Since(s.since)
	}
	return s.busy
}

func (s *timedStore) Apply(ctx context.Context, ops []store.Op) ([]store.Result, error) {
	s.begin()
	defer s.end()
	return s.Store.Apply(ctx, ops)
}

func (s *timedStore) ApplyAsync(ops []store.Op, done func(store.Done)) {
	s.begin()
	s.Store.ApplyAsync(ops, func(d store.Done) {
		s.end()
		done(d)
	})
}

// counts are the service and store counters a benchmark reports deltas of.
type counts struct {
	commits, lookups uint64
	apply            time.Duration
	cpu              time.Duration // processCPU
}

func (n *node) counts(b *testing.B) counts {
	st, err := n.st.Stats(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return counts{commits: st.Commits, lookups: n.svc.Stats().Lookups, apply: n.timed.busyTime(), cpu: processCPU()}
}

// ---------------------------------------------------------------------------
// The load generator.

// drive runs b.N calls of op spread over the clients, one goroutine per
// client, each taking the next call from a shared counter, and returns the
// latency of every call and the wall time of the whole run. The timer runs
// only around the calls.
func drive(b *testing.B, cs []*client.Client, op func(context.Context, *client.Client) error) ([]time.Duration, time.Duration) {
	ctx := context.Background()
	var (
		next   atomic.Int64
		failed atomic.Bool
		wg     sync.WaitGroup
		lats   = make([][]time.Duration, len(cs))
	)
	b.ResetTimer()
	start := time.Now()
	for i, c := range cs {
		wg.Go(func() {
			lat := make([]time.Duration, 0, b.N/len(cs)+1)
			for next.Add(1) <= int64(b.N) && !failed.Load() {
				t := time.Now()
				if err := op(ctx, c); err != nil {
					failed.Store(true)
					b.Error(err)
					return
				}
				lat = append(lat, time.Since(t))
			}
			lats[i] = lat
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	return slices.Concat(lats...), elapsed
}

// percentile returns the p-th percentile (0 < p ≤ 1) of sorted, in ms.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i]) / float64(time.Millisecond)
}

// report reports the rate of ops (unit "<what>s/s"), their latency
// percentiles, commits and fsyncs per op, x-fsync (the rate over the raw
// fsync rate of this run) and commit-busy (see timedStore).
func report(b *testing.B, what string, lats []time.Duration, elapsed time.Duration, before, after counts) {
	if len(lats) == 0 {
		return
	}
	slices.Sort(lats)
	ops := float64(len(lats))
	rate := ops / elapsed.Seconds()
	commits := float64(after.commits-before.commits) / ops
	b.ReportMetric(rate, what+"s/s")
	b.ReportMetric(percentile(lats, 0.50), "p50-ms")
	b.ReportMetric(percentile(lats, 0.99), "p99-ms")
	b.ReportMetric(commits, "commits/"+what)
	b.ReportMetric(commits*fsyncsPerCommit, "fsyncs/"+what)
	b.ReportMetric(rate/rawFsyncRate(b), "x-fsync")
	b.ReportMetric(float64(after.apply-before.apply)/float64(elapsed), "commit-busy")
	if cpu := after.cpu - before.cpu; cpu > 0 {
		// Everything in the process: broker, clients, workers, libzmq.
		b.ReportMetric(float64(cpu)/float64(time.Microsecond)/ops, "cpu-us/op")
	}
}

func body() [][]byte { return [][]byte{make([]byte, bodySize)} }

// ---------------------------------------------------------------------------
// Benchmarks.

// BenchmarkSubmit measures durable submits: titanic.submit of a 100-byte
// body, answered once the ticket is committed (fsync), from 1, 8 and 64
// concurrent clients. No worker serves the service, so the broker does
// nothing but store tickets. One broker per client count, reused by every
// round of the sub-benchmark.
func BenchmarkSubmit(b *testing.B) {
	rawFsyncRate(b)
	for _, nc := range clientCounts {
		n := startNode(b)
		cs := n.clients(b, nc)
		submit := func(ctx context.Context, c *client.Client) error {
			_, err := c.Submit(ctx, service, body(), submitOptions())
			return err
		}
		// Connect every client before the timer starts.
		for _, c := range cs {
			if err := submit(context.Background(), c); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("clients=%d", nc), func(b *testing.B) {
			before := n.counts(b)
			lats, elapsed := drive(b, cs, submit)
			report(b, "submit", lats, elapsed, before, n.counts(b))
		})
		n.stop(b)
	}
}

// BenchmarkSubmitPipelined measures durable submits from one client with
// many in flight (SubmitAsync, -bench.window of them; BenchmarkSubmit's
// clients have one each): submits/s, p50 and p99 latency (from
// the SubmitAsync call, which waits while the window is full, to the
// acknowledgement), commits and fsyncs per
// submit, x-fsync, commit-busy. Compare with BenchmarkSubmit/clients=1 of
// the same run.
func BenchmarkSubmitPipelined(b *testing.B) {
	rawFsyncRate(b)
	n := startNode(b)
	defer n.stop(b)
	c, err := client.New(client.Config{Brokers: []string{n.endpoint}, Timeout: 5 * time.Second, Retries: 3, Logger: quiet, MaxPending: *window})
	if err != nil {
		b.Fatal(err)
	}
	n.cs = append(n.cs, c)
	if _, err := c.Submit(context.Background(), service, body(), submitOptions()); err != nil {
		b.Fatal(err)
	}
	b.Run(fmt.Sprintf("window=%d", *window), func(b *testing.B) {
		before := n.counts(b)
		lats, elapsed := submitPipelined(b, c)
		report(b, "submit", lats, elapsed, before, n.counts(b))
	})
}

// submitPipelined submits b.N bodies through c with SubmitAsync (as many
// in flight as c's MaxPending), resetting b's timer first and stopping it
// after the last acknowledgement. A watcher takes each future's end in
// submission order (the order the broker commits them): the latency of
// one that ends before an earlier one is counted from the earlier one's
// end. Each latency runs from the SubmitAsync call, which waits while the
// window is full.
func submitPipelined(b *testing.B, c *client.Client) ([]time.Duration, time.Duration) {
	ctx := context.Background()
	futs := make(chan *client.SubmitFuture, b.N)
	sent := make([]time.Time, b.N)
	lats := make([]time.Duration, b.N)
	watched := make(chan error, 1)
	b.ResetTimer()
	start := time.Now()
	go func() {
		i := 0
		for f := range futs {
			if _, err := f.Ticket(ctx); err != nil {
				watched <- fmt.Errorf("submit %d: %w", i, err)
				return
			}
			lats[i] = time.Since(sent[i])
			i++
		}
		watched <- nil
	}()
	for i := range b.N {
		sent[i] = time.Now()
		f, err := c.SubmitAsync(ctx, service, body(), submitOptions())
		if err != nil {
			b.Fatal(err)
		}
		futs <- f
	}
	close(futs)
	if err := <-watched; err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	return lats, elapsed
}

// BenchmarkRoundTrip measures full round trips: Submit, an in-process echo
// worker answers, and Reply with Wait fetches the answer (polling with the
// client's backoff, 1ms doubling up to -bench.poll), from 1, 8 and 64
// concurrent clients, with -bench.workers echo workers. The latency is that
// of the whole round trip. Its mean is split in three phases, from the
// stamp the worker puts in its echo: submit-ms (Submit until its answer),
// dispatch-ms (answer until a worker runs the job) and reply-ms (worker
// run until Reply has the answer: the reply's commit, the polling). lookups/roundtrip counts the titanic.reply calls
// each round trip took.
func BenchmarkRoundTrip(b *testing.B) {
	rawFsyncRate(b)
	for _, nc := range clientCounts {
		n := startNode(b)
		workers := *echoWorkers
		if workers <= 0 {
			workers = max(nc, 8)
		}
		n.startWorkers(b, workers)
		cs := n.clients(b, nc)
		payload := body()
		payload[0][0] = 'x'
		// Total time of each phase, over all round trips.
		var submitNanos, dispatchNanos, replyNanos atomic.Int64
		roundTrip := func(ctx context.Context, c *client.Client) error {
			start := time.Now()
			ticket, err := c.Submit(ctx, service, payload, submitOptions())
			if err != nil {
				return err
			}
			acked := time.Now()
			rep, err := c.Reply(ctx, ticket, client.ReplyOptions{Wait: true, PollInterval: *pollInterval})
			if err != nil {
				return fmt.Errorf("reply %s: %w", ticket, err)
			}
			fetched := time.Now()
			if len(rep) != 1 || len(rep[0]) != bodySize || rep[0][0] != 'x' {
				return fmt.Errorf("reply %s: not the echo of the request: %q", ticket, rep)
			}
			ran := time.Unix(0, int64(binary.LittleEndian.Uint64(rep[0][1:stampEnd])))
			submitNanos.Add(int64(acked.Sub(start)))
			dispatchNanos.Add(int64(ran.Sub(acked)))
			replyNanos.Add(int64(fetched.Sub(ran)))
			return nil
		}
		for _, c := range cs {
			if err := roundTrip(context.Background(), c); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("clients=%d", nc), func(b *testing.B) {
			before := n.counts(b)
			submitNanos.Store(0)
			dispatchNanos.Store(0)
			replyNanos.Store(0)
			lats, elapsed := drive(b, cs, roundTrip)
			after := n.counts(b)
			report(b, "roundtrip", lats, elapsed, before, after)
			if ops := float64(len(lats)); ops > 0 {
				ms := func(nanos int64) float64 { return float64(nanos) / ops / float64(time.Millisecond) }
				b.ReportMetric(float64(after.lookups-before.lookups)/ops, "lookups/roundtrip")
				b.ReportMetric(ms(submitNanos.Load()), "submit-ms")
				b.ReportMetric(ms(dispatchNanos.Load()), "dispatch-ms")
				b.ReportMetric(ms(replyNanos.Load()), "reply-ms")
			}
		})
		// Stop this node (clients, workers, broker) now rather than in
		// b's cleanups, so the next client count runs on a quiet machine.
		n.stop(b)
	}
}
