package titanic

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
)

// countingStore counts the calls that read tickets from the store.
type countingStore struct {
	store.Store
	gets, others atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, id store.ID) (store.Ticket, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, id)
}

func (c *countingStore) Reply(ctx context.Context, id store.ID) (store.Ticket, [][]byte, error) {
	c.others.Add(1)
	return c.Store.Reply(ctx, id)
}

func (c *countingStore) Unfinished(ctx context.Context, fn func(store.Ticket) error) error {
	c.others.Add(1)
	return c.Store.Unfinished(ctx, fn)
}

func (c *countingStore) List(ctx context.Context, f store.Filter) ([]store.Ticket, error) {
	c.others.Add(1)
	return c.Store.List(ctx, f)
}

func (c *countingStore) ListPage(ctx context.Context, f store.Filter) (store.Page, error) {
	c.others.Add(1)
	return c.Store.ListPage(ctx, f)
}

func (c *countingStore) Expired(ctx context.Context, cutoff time.Time, limit int) ([]store.ID, error) {
	c.others.Add(1)
	return c.Store.Expired(ctx, cutoff, limit)
}

func (c *countingStore) Counts(ctx context.Context) (map[string]store.Counts, error) {
	c.others.Add(1)
	return c.Store.Counts(ctx)
}

func (c *countingStore) Attempts(ctx context.Context, id store.ID) ([]store.Attempt, error) {
	c.others.Add(1)
	return c.Store.Attempts(ctx, id)
}

func (c *countingStore) Paused(ctx context.Context) (map[string]time.Time, error) {
	c.others.Add(1)
	return c.Store.Paused(ctx)
}

// backlog is a running service over a store (fsync off) that already
// holds delayed tickets of service "s", due an hour or more from now.
type backlog struct {
	svc *Service
	b   *fakeBroker
	st  *countingStore
}

func newBacklog(tb testing.TB, cfg Config, delayed int) *backlog {
	tb.Helper()
	bs, err := store.Open(filepath.Join(tb.TempDir(), "t.db"), store.Options{NoSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now()
	body := [][]byte{make([]byte, 100)}
	for i := 0; i < delayed; {
		ops := make([]store.Op, 0, 4096)
		for ; i < delayed && len(ops) < cap(ops); i++ {
			// Due times out of Seq order, as submits of different delays.
			due := now.Add(time.Hour + time.Duration((i*7919)%delayed)*time.Millisecond)
			ops = append(ops, store.Op{Kind: store.OpSubmit, ID: store.NewID(), Time: now, Service: "s", Body: body,
				Lifecycle: store.Lifecycle{Due: due}})
		}
		if _, err := bs.Apply(ctx, ops); err != nil {
			tb.Fatal(err)
		}
	}
	bl := &backlog{b: newFakeBroker(), st: &countingStore{Store: bs}}
	cfg.Logger = slog.New(slog.DiscardHandler)
	bl.svc = New(bl.st, bl.b, cfg)
	if err := bl.svc.Recover(ctx); err != nil {
		tb.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = bl.svc.Run(runCtx) }()
	tb.Cleanup(func() { cancel(); <-done; _ = bs.Close() })
	if got := bl.svc.Stats().Delayed["s"]; got != delayed {
		tb.Fatalf("%d delayed tickets recovered, want %d", got, delayed)
	}
	return bl
}

// submit hands a submit to the service; done is called once durable.
func (bl *backlog) submit(tb testing.TB, lc store.Lifecycle, done func(store.ID)) {
	err := bl.svc.storeSubmit(submitReq{service: "s", body: [][]byte{[]byte("job")}, lifecycle: lc}, func(res store.Result, err error) {
		if err != nil {
			tb.Error(err)
		}
		done(res.ID)
	})
	if err != nil {
		tb.Fatal(err)
	}
}

func (bl *backlog) submitWait(tb testing.TB, n int, lc store.Lifecycle) {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		bl.submit(tb, lc, func(store.ID) { wg.Done() })
	}
	wg.Wait()
}

// next waits (bounded) for a job of "s".
func (bl *backlog) next(tb testing.TB) store.ID {
	deadline := time.Now().Add(wait)
	for {
		if job, ok := bl.svc.Next("s", "w"); ok {
			id, err := store.ParseID(string(job.Token))
			if err != nil {
				tb.Fatal(err)
			}
			return id
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no job within %s", wait)
		}
		select {
		case <-bl.b.woke:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// "No scans": with 100,000 delayed tickets stored, dispatch reads nothing
// from the store when the bodies are in memory, and one Get per ticket at
// most when they must be read back.
func TestNoStoreReadsPerDispatch(t *testing.T) {
	if testing.Short() {
		t.Skip("stores 100,000 tickets")
	}
	bl := newBacklog(t, Config{}, 100_000)
	const n = 300
	bl.submitWait(t, n, store.Lifecycle{})
	bl.st.gets.Store(0)
	bl.st.others.Store(0)
	for range n {
		bl.next(t)
	}
	if g, o := bl.st.gets.Load(), bl.st.others.Load(); g != 0 || o != 0 {
		t.Fatalf("%d dispatches with bodies cached read the store: %d Get, %d other reads; want none", n, g, o)
	}

	// The same with the bodies out of memory (the cache was full).
	bl.submitWait(t, n, store.Lifecycle{})
	bl.svc.d.mu.Lock()
	q := bl.svc.d.queues["s"]
	q.each(func(e *entry) bool {
		bl.svc.d.cached -= e.size
		e.body, e.size = nil, 0
		return true
	})
	bl.svc.d.mu.Unlock()
	bl.st.gets.Store(0)
	bl.st.others.Store(0)
	for range n {
		bl.next(t)
	}
	if g, o := bl.st.gets.Load(), bl.st.others.Load(); g > n || o != 0 {
		t.Fatalf("%d dispatches with bodies on disk: %d Get, %d other reads; want at most %d Get and nothing else", n, g, o, n)
	}
	if got := bl.svc.Stats().Delayed["s"]; got != 100_000 {
		t.Fatalf("%d delayed after the dispatches, want 100000 untouched", got)
	}
}

// BenchmarkDelayedDispatchLateness: with 100,000 delayed tickets stored
// (due in an hour or more), each op submits a ticket due 10ms later and
// waits for its dispatch; p99-late-ms is how late after its due time the
// dispatch came (the target: within 100ms).
func BenchmarkDelayedDispatchLateness(b *testing.B) {
	bl := newBacklog(b, Config{}, 100_000)
	var late []time.Duration
	for b.Loop() {
		due := time.Now().Add(10 * time.Millisecond)
		var id store.ID
		durable := make(chan struct{})
		bl.submit(b, store.Lifecycle{Due: due}, func(got store.ID) { id = got; close(durable) })
		<-durable
		if got := bl.next(b); got != id {
			b.Fatalf("dispatched %s, want %s", got, id)
		}
		late = append(late, time.Since(due))
	}
	slices.Sort(late)
	p := func(q float64) float64 {
		return float64(late[min(len(late)-1, int(q*float64(len(late))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(p(0.5), "p50-late-ms")
	b.ReportMetric(p(0.99), "p99-late-ms")
}

// BenchmarkSubmitDelayedBacklog submits delayed tickets (256 in flight),
// with no backlog and with 100,000 delayed tickets already stored: the
// ratio of the two is what the backlog costs a submit.
func BenchmarkSubmitDelayedBacklog(b *testing.B) {
	for _, n := range []int{0, 100_000} {
		name := "backlog=none"
		if n > 0 {
			name = fmt.Sprintf("backlog=%dk-delayed", n/1000)
		}
		b.Run(name, func(b *testing.B) {
			bl := newBacklog(b, Config{}, n)
			sem := make(chan struct{}, 256)
			var wg sync.WaitGroup
			i := 0
			for b.Loop() {
				sem <- struct{}{}
				wg.Add(1)
				due := time.Now().Add(time.Hour + time.Duration(i%4096)*time.Second)
				i++
				bl.submit(b, store.Lifecycle{Due: due}, func(store.ID) { <-sem; wg.Done() })
			}
			wg.Wait()
		})
	}
}
