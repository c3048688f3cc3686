package titanic

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// fakeBroker records what the service asks of the broker.
type fakeBroker struct {
	replies  chan [][]byte
	releases chan uint64
	mu       sync.Mutex
	wakes    map[string]int
	woke     chan string
}

func newFakeBroker() *fakeBroker {
	return &fakeBroker{
		replies:  make(chan [][]byte, 1024),
		releases: make(chan uint64, 1024),
		wakes:    make(map[string]int),
		woke:     make(chan string, 1024),
	}
}

func (f *fakeBroker) Reply(_ broker.Client, _ string, body [][]byte) { f.replies <- body }
func (f *fakeBroker) Release(lease uint64)                           { f.releases <- lease }
func (f *fakeBroker) Wake(service string) {
	f.mu.Lock()
	f.wakes[service]++
	f.mu.Unlock()
	select {
	case f.woke <- service:
	default:
	}
}

const wait = 5 * time.Second

func (f *fakeBroker) reply(t *testing.T) [][]byte {
	t.Helper()
	select {
	case r := <-f.replies:
		return r
	case <-time.After(wait):
		t.Fatalf("no reply from the service within %s", wait)
	}
	return nil
}

func (f *fakeBroker) release(t *testing.T) uint64 {
	t.Helper()
	select {
	case id := <-f.releases:
		return id
	case <-time.After(wait):
		t.Fatalf("no worker release within %s", wait)
	}
	return 0
}

type harness struct {
	t      *testing.T
	svc    *Service
	b      *fakeBroker
	st     *store.BoltStore
	path   string
	cancel context.CancelFunc
	done   chan struct{}
	lease  uint64
}

func newHarness(t *testing.T, cfg Config, path string) *harness {
	t.Helper()
	return newHarnessOver(t, cfg, path, nil)
}

// newHarnessOver is newHarness with the service over wrap(the store) when
// wrap is set.
func newHarnessOver(t *testing.T, cfg Config, path string, wrap func(*store.BoltStore) store.Store) *harness {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "t.db")
	}
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	h := &harness{t: t, b: newFakeBroker(), st: st, path: path, done: make(chan struct{})}
	var over store.Store = st
	if wrap != nil {
		over = wrap(st)
	}
	h.svc = New(over, h.b, cfg)
	if err := h.svc.Recover(context.Background()); err != nil {
		t.Fatalf("recover: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { defer close(h.done); _ = h.svc.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	<-h.done
	h.cancel = nil
	_ = h.st.Close()
}

// call sends a request as the broker would and returns the answer, whether
// immediate or later.
func (h *harness) call(service string, body ...string) [][]byte {
	h.t.Helper()
	return h.callFrom("", service, body...)
}

// callFrom is call for a request from the address from.
func (h *harness) callFrom(from, service string, body ...string) [][]byte {
	h.t.Helper()
	fr := make([][]byte, len(body))
	for i, b := range body {
		fr[i] = []byte(b)
	}
	if r := h.svc.ServeMDP(broker.Request{Service: service, Body: fr, From: from}); r != nil {
		return r
	}
	return h.b.reply(h.t)
}

func (h *harness) submit(service, body string) string {
	h.t.Helper()
	r := h.call(tsp.SvcRequest, service, body)
	if string(r[0]) != tsp.CodeOK || len(r) != 2 || len(r[1]) != 32 {
		h.t.Fatalf("submit: got %q, want [200 <32-char ticket>]", r)
	}
	return string(r[1])
}

// next dispatches like the broker: it takes the next job of service.
func (h *harness) next(service string) (broker.Lease, broker.Job) {
	h.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		if job, ok := h.svc.Next(service, "w"); ok {
			h.lease++
			return broker.Lease{ID: h.lease, Service: service, Token: job.Token, Tag: job.Tag}, job
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("no job for %s within %s", service, wait)
		}
		// The loader wakes the broker once bodies are in memory.
		select {
		case <-h.b.woke:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func codeOf(r [][]byte) string { return string(r[0]) }

func TestSubmitDispatchReply(t *testing.T) {
	h := newHarness(t, Config{}, "")
	ticket := h.submit("echo", "hello")
	if _, job := h.next("echo"); string(job.Token) != ticket || string(job.Body[0]) != "hello" {
		t.Fatalf("job = %q %q, want ticket %s body hello", job.Token, job.Body, ticket)
	} else {
		_ = job
	}
	if r := h.call(tsp.SvcReply, ticket); codeOf(r) != tsp.CodePending || string(r[1]) != "dispatched" {
		t.Fatalf("reply while dispatched = %q, want [300 dispatched]", r)
	}
}

// stallStore is the store behind a disk that stalls on demand: while it
// is shut, every commit waits until it is opened again, and the next one
// to apply fails with the error set by failNext. It keeps the store's other methods.
type stallStore struct {
	*store.BoltStore
	mu      sync.Mutex
	gate    chan struct{} // nil: commits go through
	failErr error         // the next commit fails with it
	held    chan []store.Op
	calls   chan stallCall // applied in turn by one goroutine
}

type stallCall struct {
	ops  []store.Op
	gate chan struct{}
	done func(store.Done)
}

func newStallStore(st *store.BoltStore) *stallStore {
	g := &stallStore{BoltStore: st, held: make(chan []store.Op, 1024), calls: make(chan stallCall, 1<<16)}
	go g.run()
	return g
}

// run applies the calls in hand-over order, each once its gate opens.
func (g *stallStore) run() {
	for c := range g.calls {
		if c.gate != nil {
			<-c.gate
		}
		g.mu.Lock()
		err := g.failErr
		g.failErr = nil
		g.mu.Unlock()
		var res []store.Result
		if err == nil {
			res, err = g.BoltStore.Apply(context.Background(), c.ops)
		}
		c.done(store.Done{Results: res, Err: err, Last: true})
	}
}

func (g *stallStore) shut() {
	g.mu.Lock()
	g.gate = make(chan struct{})
	g.mu.Unlock()
}

func (g *stallStore) open() {
	g.mu.Lock()
	if g.gate != nil {
		close(g.gate)
		g.gate = nil
	}
	g.mu.Unlock()
}

func (g *stallStore) failNext(err error) {
	g.mu.Lock()
	g.failErr = err
	g.mu.Unlock()
}

func (g *stallStore) Apply(ctx context.Context, ops []store.Op) ([]store.Result, error) {
	ch := make(chan store.Done, 1)
	g.ApplyAsync(ops, func(d store.Done) { ch <- d })
	select {
	case d := <-ch:
		return d.Results, d.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ApplyAsync decides at hand-over whether the batch is held; the batches
// apply in turn on one goroutine, so a held one holds back those after it
// and they still apply in order.
func (g *stallStore) ApplyAsync(ops []store.Op, done func(store.Done)) {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		g.held <- ops
	}
	g.calls <- stallCall{ops: ops, gate: gate, done: done}
}

// newStallHarness is a harness over a stallStore, opened again when the
// test ends so that the service can stop.
func newStallHarness(t *testing.T) (*harness, *stallStore) {
	t.Helper()
	var gs *stallStore
	h := newHarnessOver(t, Config{}, "", func(st *store.BoltStore) store.Store {
		gs = newStallStore(st)
		return gs
	})
	t.Cleanup(gs.open)
	return h, gs
}

// heldReply waits until a commit holding ticket's reply is held.
func (g *stallStore) heldReply(t *testing.T, ticket store.ID) {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case ops := <-g.held:
			for _, op := range ops {
				if op.Kind == store.OpReply && op.ID == ticket {
					return
				}
			}
		case <-timeout:
			t.Fatalf("no commit of the reply of %s within %s", ticket, wait)
		}
	}
}

// TestWorkerFreeBeforeReplyDurable: a worker is released as soon as its
// reply arrives, while the reply's commit is still stalled, and gets the
// next job; meanwhile no lookup answers 200 (the reply is not durable) and
// the ticket is not dispatched again. Once the commit completes, lookups
// and parked waits get the reply; a later reply loses (first wins).
func TestWorkerFreeBeforeReplyDurable(t *testing.T) {
	h, gs := newStallHarness(t)
	a, b := h.submit("echo", "a"), h.submit("echo", "b")
	leaseA, job := h.next("echo")
	if string(job.Token) != a {
		t.Fatalf("first job is %s, want %s", job.Token, a)
	}
	h.submit("other", "barrier") // a's dispatch mark is durable
	gs.shut()
	h.svc.Completed(leaseA, [][]byte{[]byte("A"), {}, []byte("c")})
	select {
	case got := <-h.b.releases:
		if got != leaseA.ID {
			t.Fatalf("released lease %d, want %d", got, leaseA.ID)
		}
	default:
		t.Fatal("the worker was not released when its reply arrived")
	}
	gs.heldReply(t, mustID(t, a))
	// The reply's commit is stalled, and the worker gets the next job.
	leaseB, job := h.next("echo")
	if string(job.Token) != b {
		t.Fatalf("next job is %s, want %s", job.Token, b)
	}
	if st := h.svc.Stats(); st.Leased != 1 {
		t.Fatalf("%d tickets leased, want 1 (b; a's worker answered)", st.Leased)
	}
	// A FAIL does not wait for the disk either, and neither the replied
	// ticket nor the failed one is dispatched meanwhile.
	h.svc.Failed(leaseB, "boom")
	h.svc.Failed(leaseA, "late failure") // ignored: a was answered
	if job, ok := h.svc.Next("echo", "w"); ok {
		t.Fatalf("dispatched %s while the commits are stalled", job.Token)
	}
	// Not durable: lookups answer as for a running ticket.
	if r := h.call(tsp.SvcReply, a); codeOf(r) != tsp.CodePending || string(r[1]) != "dispatched" {
		t.Fatalf("titanic.reply before the reply is durable = %q, want [300 dispatched]", r)
	}
	if r := h.call(tsp.SvcStatus, a); codeOf(r) != tsp.CodeOK || string(r[1]) != "dispatched" {
		t.Fatalf("titanic.status before the reply is durable = %q, want dispatched", r)
	}
	if r := h.call(tsp.SvcList, "", "", "", ""); codeOf(r) != tsp.CodeOK || !bytes.Contains(bytes.Join(r[1:], []byte("\n")), []byte(a+" echo dispatched")) {
		t.Fatalf("titanic.list before the reply is durable = %q, want %s dispatched", r, a)
	}
	if r := h.svc.ServeMDP(broker.Request{Service: tsp.SvcWait, Body: [][]byte{[]byte(a), []byte("30000")}}); r != nil {
		t.Fatalf("titanic.wait answered before the reply is durable: %q", r)
	}
	h.waitParked(1)
	select {
	case r := <-h.b.replies:
		t.Fatalf("answered %q before the reply is durable", r)
	default:
	}
	if st := h.svc.Stats(); st.Replies != 0 {
		t.Fatalf("%d replies counted before the commit, want 0", st.Replies)
	}

	gs.open()
	if r := h.b.reply(t); codeOf(r) != tsp.CodeOK || len(r) != 4 || string(r[1]) != "A" || len(r[2]) != 0 || string(r[3]) != "c" {
		t.Fatalf("parked titanic.wait = %q, want [200 A '' c]", r)
	}
	if r := h.call(tsp.SvcReply, a); codeOf(r) != tsp.CodeOK || len(r) != 4 || string(r[3]) != "c" {
		t.Fatalf("titanic.reply once durable = %q, want [200 A '' c]", r)
	}
	// b's requeue committed too: it is dispatched again.
	if _, job := h.next("echo"); string(job.Token) != b {
		t.Fatalf("redelivered %s, want %s", job.Token, b)
	}
	// A second reply for the same ticket loses (first wins) and is counted.
	h.svc.Completed(broker.Lease{ID: 99, Service: "echo", Token: []byte(a)}, [][]byte{[]byte("late")})
	if got := h.b.release(t); got != 99 {
		t.Fatalf("late reply released %d, want 99", got)
	}
	h.submit("other", "x") // committed after the late reply
	if st := h.svc.Stats(); st.LateReplies != 1 || st.Replies != 1 {
		t.Fatalf("stats: %d replies, %d late; want 1, 1", st.Replies, st.LateReplies)
	}
	if r := h.call(tsp.SvcReply, a); string(r[1]) != "A" {
		t.Fatalf("late reply overwrote the first: %q", r)
	}
	if r := h.call(tsp.SvcClose, a); codeOf(r) != tsp.CodeOK {
		t.Fatalf("close = %q", r)
	}
	if r := h.call(tsp.SvcReply, a); codeOf(r) != tsp.CodeUnknown {
		t.Fatalf("reply after close = %q, want 400", r)
	}
	if r := h.call(tsp.SvcClose, a); codeOf(r) != tsp.CodeOK {
		t.Fatalf("second close = %q, want 200 (idempotent)", r)
	}
}

// When the batch holding a reply fails (a full disk, say), the reply is
// held and committed again: the job is not run again for an answer the
// broker already has (the first wave requeued it, and with a disk that
// kept failing one job ran 50 times), and lookups show it only once it is
// durable.
func TestReplyCommitFailureHeld(t *testing.T) {
	h, gs := newStallHarness(t)
	a := h.submit("echo", "a")
	lease, _ := h.next("echo")
	h.submit("other", "barrier") // a's dispatch mark is durable
	gs.shut()
	h.svc.Completed(lease, [][]byte{[]byte("kept")})
	if got := h.b.release(t); got != lease.ID {
		t.Fatalf("released %d, want %d", got, lease.ID)
	}
	gs.heldReply(t, mustID(t, a))
	gs.failNext(errors.New("disk on fire"))
	gs.open()
	deadline := time.Now().Add(wait)
	for {
		if job, ok := h.svc.Next("echo", "w"); ok {
			t.Fatalf("job %s dispatched again after its reply's commit failed", job.Token)
		}
		r := h.call(tsp.SvcReply, a)
		if codeOf(r) == tsp.CodeOK {
			if string(r[1]) != "kept" {
				t.Fatalf("reply = %q, want [200 kept]", r)
			}
			break
		}
		if codeOf(r) != tsp.CodePending || string(r[1]) != "dispatched" {
			t.Fatalf("reply while the commit is tried again = %q, want [300 dispatched]", r)
		}
		if time.Now().After(deadline) {
			t.Fatalf("reply not durable within %s after its failed commit", wait)
		}
		time.Sleep(5 * time.Millisecond) // the retry's pause runs on a timer
	}
	if st := h.svc.Stats(); st.Dispatches != 1 || st.Redeliveries != 0 || st.VerdictRetries != 1 || st.Leased != 0 {
		t.Fatalf("stats %+v: want 1 dispatch (a; no worker for the barrier), no redelivery, 1 verdict retry, nothing leased", st)
	}
}

// A ticket closed while its reply waits for its commit stays closed,
// whichever commits first.
func TestCloseWhileReplyPending(t *testing.T) {
	for _, closeFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("closeFirst=%v", closeFirst), func(t *testing.T) {
			h, gs := newStallHarness(t)
			a := h.submit("echo", "a")
			lease, _ := h.next("echo")
			gs.shut()
			closeReq := broker.Request{Service: tsp.SvcClose, Body: [][]byte{[]byte(a)}}
			if closeFirst {
				if r := h.svc.ServeMDP(closeReq); r != nil {
					t.Fatalf("close answered at once: %q", r)
				}
			}
			h.svc.Completed(lease, [][]byte{[]byte("A")})
			h.b.release(t)
			if !closeFirst {
				if r := h.svc.ServeMDP(closeReq); r != nil {
					t.Fatalf("close answered at once: %q", r)
				}
			}
			gs.open()
			if r := h.b.reply(t); codeOf(r) != tsp.CodeOK {
				t.Fatalf("close = %q", r)
			}
			if r := h.call(tsp.SvcReply, a); codeOf(r) != tsp.CodeUnknown {
				t.Fatalf("reply after close = %q, want 400", r)
			}
			if job, ok := h.svc.Next("echo", "w"); ok {
				t.Fatalf("closed ticket dispatched: %s", job.Token)
			}
			if st := h.svc.Stats(); st.Leased != 0 || st.Queued["echo"] != 0 {
				t.Fatalf("closed ticket still held: %+v", st)
			}
		})
	}
}

// complete answers lease with body as its worker would, takes the release
// (at once) and waits until the reply of ticket is durable.
func (h *harness) complete(lease broker.Lease, ticket string, body ...string) {
	h.t.Helper()
	fr := make([][]byte, len(body))
	for i, b := range body {
		fr[i] = []byte(b)
	}
	h.svc.Completed(lease, fr)
	if got := h.b.release(h.t); got != lease.ID {
		h.t.Fatalf("released lease %d, want %d", got, lease.ID)
	}
	if r := h.call(tsp.SvcWait, ticket, "5000"); codeOf(r) != tsp.CodeOK {
		h.t.Fatalf("reply of %s not durable: titanic.wait = %q", ticket, r)
	}
}

func mustID(t *testing.T, s string) store.ID {
	t.Helper()
	id, err := store.ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestRedeliveryThenFailure(t *testing.T) {
	h := newHarness(t, Config{MaxAttempts: 3}, "")
	ticket := h.submit("flaky", "x")
	for attempt := 1; attempt <= 3; attempt++ {
		lease, _ := h.next("flaky")
		h.svc.Failed(lease, fmt.Sprintf("boom %d", attempt))
	}
	deadline := time.Now().Add(wait)
	for {
		r := h.call(tsp.SvcReply, ticket)
		if codeOf(r) == tsp.CodeError {
			if !strings.HasPrefix(string(r[1]), tsp.Failed.Text("")) || !strings.Contains(string(r[1]), "boom 3") {
				t.Fatalf("failed ticket text = %q", r[1])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ticket not failed after 3 failed attempts: %q", r)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if job, ok := h.svc.Next("flaky", "w"); ok {
		t.Fatalf("failed ticket dispatched again: %q", job.Token)
	}
	r := h.call(tsp.SvcStatus, ticket)
	if codeOf(r) != tsp.CodeOK || string(r[1]) != "failed" || string(r[2]) != "3" {
		t.Fatalf("status = %q, want failed after 3 attempts", r)
	}
}

func TestRequeueKeepsFIFO(t *testing.T) {
	h := newHarness(t, Config{}, "")
	a, b := h.submit("s", "a"), h.submit("s", "b")
	la, _ := h.next("s")
	h.svc.Failed(la, "lost")
	// a goes back before b: wait for the requeue to commit.
	h.waitQueued("s", 2)
	for _, want := range []string{a, b} {
		_, job := h.next("s")
		if string(job.Token) != want {
			t.Fatalf("dispatched %s, want %s (FIFO after requeue)", job.Token, want)
		}
	}
}

// TestRecoverFIFOAndRedeliver: a restart keeps each service's FIFO, and
// the ticket dispatched when it stopped, its attempt cut short, is
// redelivered at its place (no backoff here: a negative base).
func TestRecoverFIFOAndRedeliver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	cfg := Config{BackoffBase: -1}
	h := newHarness(t, cfg, path)
	var tickets []string
	for i := range 20 {
		tickets = append(tickets, h.submit("s", fmt.Sprint(i)))
	}
	h.next("s") // dispatched, then the broker "dies"
	h.stop()

	h2 := newHarness(t, cfg, path)
	for i, want := range tickets {
		_, job := h2.next("s")
		if string(job.Token) != want || string(job.Body[0]) != fmt.Sprint(i) {
			t.Fatalf("after restart job %d = %s %q, want %s (FIFO, dispatched one first)", i, job.Token, job.Body, want)
		}
	}
}

func TestCloseWhileQueued(t *testing.T) {
	h := newHarness(t, Config{}, "")
	a := h.submit("s", "a")
	b := h.submit("s", "b")
	if r := h.call(tsp.SvcClose, a); codeOf(r) != tsp.CodeOK {
		t.Fatalf("close = %q", r)
	}
	_, job := h.next("s")
	if string(job.Token) != b {
		t.Fatalf("dispatched %s, want %s: closed ticket must not be dispatched", job.Token, b)
	}
}

func TestBodyLoadedWhenNotCached(t *testing.T) {
	h := newHarness(t, Config{BodyCache: 1}, "")
	body := strings.Repeat("z", 100)
	ticket := h.submit("s", body)
	_, job := h.next("s")
	if string(job.Token) != ticket || !bytes.Equal(job.Body[0], []byte(body)) {
		t.Fatalf("job = %s %q", job.Token, job.Body)
	}
	if h.svc.Stats().Loads != 1 {
		t.Fatalf("loads = %d, want 1", h.svc.Stats().Loads)
	}
}

func TestNoWorkerTimeout(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h := newHarness(t, Config{NoWorkerTimeout: time.Minute, Now: clock}, "")
	ticket := h.submit("ghost", "x")
	h.svc.reap()
	if r := h.call(tsp.SvcReply, ticket); codeOf(r) != tsp.CodePending {
		t.Fatalf("before the timeout: %q, want 300", r)
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	h.svc.reap()
	deadline := time.Now().Add(wait)
	for {
		r := h.call(tsp.SvcReply, ticket)
		if codeOf(r) == tsp.CodeError && strings.Contains(string(r[1]), "no worker") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the timeout: %q, want 500 failed: no worker", r)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNoWorkerWaitsForEverByDefault: with the default NoWorkerTimeout a
// ticket whose service never has a worker stays queued, however long it
// waits, as in the reference Titanic: the reaper gives it no verdict.
func TestNoWorkerWaitsForEverByDefault(t *testing.T) {
	h := newHarness(t, Config{}, "")
	ticket := h.submit("ghost", "x")
	queued := func() int {
		h.svc.d.mu.Lock()
		defer h.svc.d.mu.Unlock()
		if q := h.svc.d.queues["ghost"]; q != nil {
			return q.len()
		}
		return 0
	}
	deadline := time.Now().Add(wait)
	for queued() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the ticket is not queued within %s", wait)
		}
		time.Sleep(time.Millisecond)
	}
	for _, later := range []time.Duration{2 * time.Hour, 30 * 24 * time.Hour} {
		if fx := h.svc.d.reap(time.Now().Add(later)); len(fx.fail) != 0 {
			t.Fatalf("%s later without a worker the reaper fails %d tickets, want none", later, len(fx.fail))
		}
		if n := queued(); n != 1 {
			t.Fatalf("%s later without a worker %d tickets queued, want 1", later, n)
		}
	}
	if r := h.call(tsp.SvcReply, ticket); codeOf(r) != tsp.CodePending {
		t.Fatalf("after the reaper's passes: %q, want 300", r)
	}
}

func TestWorkersPresentPreventsTimeout(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h := newHarness(t, Config{NoWorkerTimeout: time.Minute, Now: clock}, "")
	h.svc.Workers("busy", 1)
	ticket := h.submit("busy", "x")
	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	h.svc.reap()
	if r := h.call(tsp.SvcReply, ticket); codeOf(r) != tsp.CodePending {
		t.Fatalf("a service with a worker timed out: %q", r)
	}
}

func TestIdempotentSubmit(t *testing.T) {
	h := newHarness(t, Config{}, "")
	r1 := h.call(tsp.SvcSubmit, "key-1", "s", "a")
	r2 := h.call(tsp.SvcSubmit, "key-1", "s", "a")
	if codeOf(r1) != tsp.CodeOK || string(r1[2]) != "new" || string(r2[2]) != "duplicate" || string(r1[1]) != string(r2[1]) {
		t.Fatalf("keyed submits = %q, %q; want the same ticket, new then duplicate", r1, r2)
	}
	// Every answer to titanic.submit ends with its key (a pipelined
	// client's correlation), refusals too; titanic.request's do not.
	if len(r1) != 4 || string(r1[3]) != "key-1" || len(r2) != 4 || string(r2[3]) != "key-1" {
		t.Fatalf("keyed submits = %q, %q; want the key echoed last", r1, r2)
	}
	if r := h.call(tsp.SvcSubmit, "key-2", "titanic.x", "a"); codeOf(r) != tsp.CodeUnknown || len(r) != 3 || string(r[2]) != "key-2" {
		t.Fatalf("refused keyed submit = %q, want 400, text, key-2", r)
	}
	if r := h.call(tsp.SvcRequest, "other", "a"); codeOf(r) != tsp.CodeOK || len(r) != 2 {
		t.Fatalf("titanic.request = %q, want 200 and the ticket only", r)
	}
	h.next("s")
	if job, ok := h.svc.Next("s", "w"); ok {
		t.Fatalf("duplicate submit queued a second job %s", job.Token)
	}
}

// A key reused with another service or body is refused with 400 (do not
// retry), naming the ticket that holds the key, and queues nothing; the
// resend of the original still gets its ticket.
func TestKeyConflictSubmit(t *testing.T) {
	h := newHarness(t, Config{}, "")
	r := h.call(tsp.SvcSubmit, "order-7", "s", "a", "b")
	if codeOf(r) != tsp.CodeOK || string(r[2]) != "new" {
		t.Fatalf("first keyed submit = %q", r)
	}
	orig := string(r[1])
	for _, tc := range []struct {
		name string
		body []string
		what string
	}{
		{"other body", []string{"s", "a", "c"}, "with another body"},
		{"a frame less", []string{"s", "a"}, "with another body"},
		{"other service", []string{"t", "a", "b"}, "another service"},
	} {
		r := h.call(tsp.SvcSubmit, append([]string{"order-7"}, tc.body...)...)
		want := tsp.KeyConflict.Text(orig + ": ")
		if codeOf(r) != tsp.CodeUnknown || len(r) != 3 || !strings.HasPrefix(string(r[1]), want) ||
			!strings.Contains(string(r[1]), tc.what) || string(r[2]) != "order-7" {
			t.Fatalf("%s: %q, want [400 | %s… %s | order-7]", tc.name, r, want, tc.what)
		}
	}
	if r := h.call(tsp.SvcSubmit, "order-7", "s", "a", "b"); codeOf(r) != tsp.CodeOK || string(r[1]) != orig || string(r[2]) != "duplicate" {
		t.Fatalf("resend after the conflicts = %q, want 200 %s duplicate", r, orig)
	}
	_, job := h.next("s")
	if string(job.Token) != orig {
		t.Fatalf("job %s, want the original %s", job.Token, orig)
	}
	for _, svc := range []string{"s", "t"} {
		if job, ok := h.svc.Next(svc, "w"); ok {
			t.Fatalf("a refused submit queued job %s on %s", job.Token, svc)
		}
	}
	if st := h.svc.Stats(); st.Submits != 2 || st.Duplicates != 1 {
		t.Fatalf("stats submits %d duplicates %d, want 2 and 1 (conflicts count as neither)", st.Submits, st.Duplicates)
	}
}

func TestBadRequests(t *testing.T) {
	h := newHarness(t, Config{}, "")
	cases := []struct {
		service string
		body    []string
		want    string
	}{
		{tsp.SvcRequest, nil, tsp.CodeUnknown},
		{tsp.SvcRequest, []string{"svc"}, tsp.CodeUnknown},
		{tsp.SvcRequest, []string{"", "x"}, tsp.CodeUnknown},
		{tsp.SvcRequest, []string{"titanic.request", "x"}, tsp.CodeUnknown},
		{tsp.SvcRequest, []string{"mmi.service", "x"}, tsp.CodeUnknown},
		{tsp.SvcRequest, []string{strings.Repeat("s", 256), "x"}, tsp.CodeUnknown},
		{tsp.SvcSubmit, []string{"", "s", "x"}, tsp.CodeUnknown},
		{tsp.SvcReply, nil, tsp.CodeUnknown},
		{tsp.SvcReply, []string{"short"}, tsp.CodeUnknown},
		{tsp.SvcReply, []string{strings.Repeat("0", 32)}, tsp.CodeUnknown},
		{tsp.SvcReply, []string{strings.Repeat("0", 32), "extra"}, tsp.CodeUnknown},
		{tsp.SvcStatus, []string{"zz"}, tsp.CodeUnknown},
		{tsp.SvcList, []string{"", "nosuchstate", "", ""}, tsp.CodeUnknown},
		{tsp.SvcList, []string{"", "", "", "-1"}, tsp.CodeUnknown},
		{tsp.SvcClose, nil, tsp.CodeOK},
		{tsp.SvcClose, []string{"garbage"}, tsp.CodeOK},
		{"titanic.nope", []string{"x"}, tsp.CodeUnknown},
	}
	for _, c := range cases {
		if r := h.call(c.service, c.body...); codeOf(r) != c.want {
			t.Errorf("%s %q = %q, want %s", c.service, c.body, r, c.want)
		}
	}
}

func TestListAndEmptyFrames(t *testing.T) {
	h := newHarness(t, Config{}, "")
	r := h.call(tsp.SvcRequest, "bin", "", "\x00\xff", "")
	if codeOf(r) != tsp.CodeOK {
		t.Fatalf("submit with empty frames = %q", r)
	}
	_, job := h.next("bin")
	if len(job.Body) != 3 || len(job.Body[0]) != 0 || string(job.Body[1]) != "\x00\xff" {
		t.Fatalf("binary body not preserved: %q", job.Body)
	}
	l := h.call(tsp.SvcList, "bin", "", "", "10")
	if codeOf(l) != tsp.CodeOK || len(l) != 2 || !strings.HasPrefix(string(l[1]), string(r[1])+" bin dispatched 1") {
		t.Fatalf("list = %q", l)
	}
}

func TestBusyWhenQueueFull(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "t.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b := newFakeBroker()
	// The store holds every commit until the test ends, so the first two
	// submits are still queued at the third whatever the machine's speed
	// (a loaded one once ran the real writer's commits between them).
	held := &heldCommits{BoltStore: st}
	defer held.release()
	svc := New(held, b, Config{MaxQueuedOps: 2})
	for i := range 2 {
		if r := svc.ServeMDP(broker.Request{Service: tsp.SvcRequest, Body: [][]byte{[]byte("s"), []byte("x")}}); r != nil {
			t.Fatalf("submit %d refused: %q", i, r)
		}
	}
	r := svc.ServeMDP(broker.Request{Service: tsp.SvcRequest, Body: [][]byte{[]byte("s"), []byte("x")}})
	if r == nil || codeOf(r) != tsp.CodeError {
		t.Fatalf("third submit = %q, want 500 busy", r)
	}
}

// waitQueued waits until service has n tickets waiting for dispatch.
func (h *harness) waitQueued(service string, n int) {
	h.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		h.svc.d.mu.Lock()
		got := 0
		if q := h.svc.d.queues[service]; q != nil {
			got = q.len()
		}
		h.svc.d.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%d tickets queued for %s after %s, want %d", got, service, wait, n)
		}
		select {
		case <-h.b.woke:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestWaitParksUntilReply(t *testing.T) {
	h := newHarness(t, Config{}, "")
	ticket := h.submit("echo", "x")
	if r := h.svc.ServeMDP(broker.Request{Service: tsp.SvcWait, Body: [][]byte{[]byte(ticket), []byte("30000")}}); r != nil {
		t.Fatalf("titanic.wait answered at once: %q", r)
	}
	lease, _ := h.next("echo")
	// Parked: nothing is answered while the ticket is dispatched.
	select {
	case r := <-h.b.replies:
		t.Fatalf("titanic.wait answered before the reply: %q", r)
	case <-time.After(50 * time.Millisecond):
	}
	h.svc.Completed(lease, [][]byte{[]byte("X")})
	h.b.release(t)
	r := h.b.reply(t)
	if codeOf(r) != tsp.CodeOK || len(r) != 2 || string(r[1]) != "X" {
		t.Fatalf("titanic.wait = %q, want [200 X]", r)
	}
	// Answered at once when final; timeouts answer 300; bad input 400.
	if r := h.call(tsp.SvcWait, ticket, "1000"); codeOf(r) != tsp.CodeOK {
		t.Fatalf("wait on a done ticket = %q", r)
	}
	pending := h.submit("echo", "y")
	start := time.Now()
	if r := h.call(tsp.SvcWait, pending, "100"); codeOf(r) != tsp.CodePending {
		t.Fatalf("wait timeout = %q, want 300", r)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("wait answered after %s, before its 100ms timeout", d)
	}
	for _, body := range [][]string{{pending}, {pending, "x"}, {"nope", "10"}, {strings.Repeat("0", 32), "10"}} {
		if r := h.call(tsp.SvcWait, body...); codeOf(r) != tsp.CodeUnknown {
			t.Fatalf("wait %q = %q, want 400", body, r)
		}
	}
	h.waitParked(0)
}

func TestWaitWokenByFailureAndDeactivate(t *testing.T) {
	h := newHarness(t, Config{MaxAttempts: 1}, "")
	ticket := h.submit("flaky", "x")
	h.svc.ServeMDP(broker.Request{Service: tsp.SvcWait, Body: [][]byte{[]byte(ticket), []byte("30000")}})
	lease, _ := h.next("flaky")
	h.svc.Failed(lease, "boom")
	if r := h.b.reply(t); codeOf(r) != tsp.CodeError || !strings.HasPrefix(string(r[1]), tsp.Failed.Text("")) {
		t.Fatalf("wait on a failing ticket = %q", r)
	}
	other := h.submit("flaky", "y")
	h.svc.ServeMDP(broker.Request{Service: tsp.SvcWait, Body: [][]byte{[]byte(other), []byte("30000")}})
	h.waitParked(1)
	h.svc.Deactivate()
	if r := h.b.reply(t); codeOf(r) != tsp.CodeError || string(r[1]) != string(tsp.NotActive) {
		t.Fatalf("wait when the node stops serving = %q", r)
	}
}

func (h *harness) waitParked(n int) {
	h.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		h.svc.look.waits.mu.Lock()
		got := h.svc.look.waits.n
		h.svc.look.waits.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%d waiters parked, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLimits(t *testing.T) {
	h := newHarness(t, Config{PerClientInflight: 2, SubmitRate: 3, MaxBody: 10}, "")
	ticket := h.submit("echo", "x")
	c1 := broker.Request{Client: broker.Client{}, Service: tsp.SvcWait, Body: [][]byte{[]byte(ticket), []byte("30000")}}
	// Two parked waits hold the client's two in-flight slots.
	for range 2 {
		if r := h.svc.ServeMDP(c1); r != nil {
			t.Fatalf("wait answered at once: %q", r)
		}
	}
	h.waitParked(2)
	if r := h.svc.ServeMDP(c1); r == nil || codeOf(r) != tsp.CodeError || !strings.Contains(string(r[1]), "busy") {
		t.Fatalf("third request in flight = %q, want 500 busy", r)
	}
	h.svc.Deactivate() // answers the parked waits
	h.b.reply(t)
	h.b.reply(t)
	// The slots are free again; the submit rate (3/s, the first submit
	// above took one token) refuses the fourth submit in a burst.
	for i := range 2 {
		if r := h.call(tsp.SvcRequest, "echo", "y"); codeOf(r) != tsp.CodeOK {
			t.Fatalf("submit %d = %q", i, r)
		}
	}
	if r := h.call(tsp.SvcRequest, "echo", "z"); codeOf(r) != tsp.CodeError || !strings.Contains(string(r[1]), "submits/s") {
		t.Fatalf("submit over the rate = %q, want 500 busy", r)
	}
	if r := h.call(tsp.SvcReply, ticket); codeOf(r) == tsp.CodeError {
		t.Fatalf("lookups are not rate limited: %q", r)
	}
	if r := h.call(tsp.SvcRequest, "echo", strings.Repeat("b", 11)); codeOf(r) != tsp.CodeUnknown || !strings.Contains(string(r[1]), "over the limit") || !strings.Contains(string(r[1]), "limits.max_body") {
		t.Fatalf("oversized body = %q, want 400", r)
	}
}

func TestQuota(t *testing.T) {
	h := newHarness(t, Config{}, "")
	ticket := h.submit("echo", "x")
	h.svc.adm.cfg.Quota = 1 // the store holds more than a byte: full
	h.svc.adm.refreshUsage()
	r := h.call(tsp.SvcRequest, "echo", "y")
	if codeOf(r) != tsp.CodeError || !strings.HasPrefix(string(r[1]), "store full") {
		t.Fatalf("submit over quota = %q, want 500 store full", r)
	}
	// Everything else goes on.
	if r := h.call(tsp.SvcReply, ticket); codeOf(r) != tsp.CodePending {
		t.Fatalf("lookup over quota = %q", r)
	}
	lease, _ := h.next("echo")
	h.complete(lease, ticket, "X")
	if r := h.call(tsp.SvcReply, ticket); codeOf(r) != tsp.CodeOK {
		t.Fatalf("reply recorded over quota = %q", r)
	}
	if r := h.call(tsp.SvcClose, ticket); codeOf(r) != tsp.CodeOK {
		t.Fatalf("close over quota = %q", r)
	}
}

func TestRetention(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h := newHarness(t, Config{DoneTTL: time.Hour, Now: clock}, "")
	done := h.submit("echo", "x")
	pending := h.submit("echo", "y")
	lease, _ := h.next("echo")
	h.complete(lease, done, "X")
	if n := h.svc.sweep(context.Background()); n != 0 {
		t.Fatalf("swept %d tickets before their TTL", n)
	}
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	if n := h.svc.sweep(context.Background()); n != 1 {
		t.Fatalf("swept %d, want the one done ticket", n)
	}
	deadline := time.Now().Add(wait)
	for codeOf(h.call(tsp.SvcReply, done)) != tsp.CodeUnknown || h.svc.Stats().Expired != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("expired ticket still there (stats %+v)", h.svc.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if r := h.call(tsp.SvcReply, pending); codeOf(r) != tsp.CodePending {
		t.Fatalf("unfinished ticket touched by retention: %q", r)
	}
	// A passive node does not sweep.
	h.svc.Deactivate()
	if n := h.svc.sweep(context.Background()); n != 0 {
		t.Fatalf("passive node swept %d", n)
	}
}

func TestBackup(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, Config{BackupDir: dir}, "")
	ticket := h.submit("echo", "x")
	r := h.call(tsp.SvcBackup, "snap-1.db")
	if codeOf(r) != tsp.CodeOK || len(r) != 3 || string(r[1]) != filepath.Join(dir, "snap-1.db") {
		t.Fatalf("backup = %q", r)
	}
	// The backup is a store holding the ticket.
	st, err := store.Open(string(r[1]), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	id, _ := store.ParseID(ticket)
	if _, err := st.Get(context.Background(), id); err != nil {
		t.Fatalf("backup lacks the ticket: %v", err)
	}
	if err := st.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"../x", "a/b", "", ".hidden"} {
		if r := h.call(tsp.SvcBackup, bad); codeOf(r) != tsp.CodeUnknown {
			t.Fatalf("backup %q = %q, want 400", bad, r)
		}
	}
	// A second backup of the same name is refused and leaves the first:
	// it was replaced without a word.
	before, err := os.ReadFile(filepath.Join(dir, "snap-1.db"))
	if err != nil {
		t.Fatal(err)
	}
	h.submit("echo", "y")
	if r := h.call(tsp.SvcBackup, "snap-1.db"); codeOf(r) != tsp.CodeUnknown || !strings.Contains(string(r[1]), "exists") {
		t.Fatalf("backup over an existing one = %q, want 400 ... exists", r)
	}
	if after, err := os.ReadFile(filepath.Join(dir, "snap-1.db")); err != nil || !bytes.Equal(before, after) {
		t.Fatalf("the existing backup changed (%v)", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*.tmp")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	h2 := newHarness(t, Config{}, "")
	if r := h2.call(tsp.SvcBackup, "x"); codeOf(r) != tsp.CodeUnknown {
		t.Fatalf("backup without a directory = %q", r)
	}
}

// A backup is a whole copy of the store: it is refused while the disk is
// under its reserve (submits are, and the reserve is what keeps the
// store from ENOSPC), while another is being written, and to an address
// AllowBackup refuses. A client wrote as many as it asked for, into the
// reserve.
func TestBackupLimits(t *testing.T) {
	dir := t.TempDir()
	disk := &fakeDisk{free: 1 << 30, total: 100 << 30}
	entered, release := make(chan struct{}, 1), make(chan struct{})
	allow := func(from string) error {
		if from == "192.0.2.9" {
			return errors.New("192.0.2.9 may not")
		}
		return nil
	}
	h := newHarness(t, Config{BackupDir: dir, DiskReserve: 256 << 20, DiskPaths: []string{dir}, Statfs: disk.statfs, AllowBackup: allow}, "")
	h.submit("echo", "x")
	var hold atomic.Bool
	hold.Store(true)
	h.svc.backupStarted = func() { // the first backup is held as it is written
		if hold.CompareAndSwap(true, false) {
			entered <- struct{}{}
			<-release
		}
	}

	backup := func(from, name string) [][]byte {
		t.Helper()
		return h.callFrom(from, tsp.SvcBackup, name)
	}
	if r := backup("192.0.2.9", "a"); !tsp.Is(r, tsp.CodeUnknown, tsp.Forbidden) {
		t.Fatalf("backup from a refused address = %q, want 400 forbidden", r)
	}
	// The held backup answers once released: until then, the only
	// answer is the second one's.
	if r := h.svc.ServeMDP(broker.Request{Service: tsp.SvcBackup, Body: [][]byte{[]byte("b")}, From: "127.0.0.1"}); r != nil {
		t.Fatalf("backup answered at once: %q", r)
	}
	<-entered
	if r := backup("127.0.0.1", "c"); !tsp.Is(r, tsp.CodeError, tsp.Busy) {
		t.Fatalf("a second backup while one is written = %q, want 500 busy", r)
	}
	close(release)
	if r := h.b.reply(t); codeOf(r) != tsp.CodeOK {
		t.Fatalf("the held backup = %q, want 200", r)
	}
	disk.set(100 << 20) // under the reserve
	h.svc.adm.refreshDisk(true)
	if r := backup("127.0.0.1", "d"); codeOf(r) != tsp.CodeError || !strings.Contains(string(r[1]), "disk full") {
		t.Fatalf("backup with the disk under its reserve = %q, want 500 refused, disk full", r)
	}
	if _, err := os.Stat(filepath.Join(dir, "d")); err == nil {
		t.Fatal("the refused backup was written")
	}
}

// heldCommits is a store whose commits wait until release.
type heldCommits struct {
	*store.BoltStore
	mu    sync.Mutex
	held  []func()
	freed bool
}

func (h *heldCommits) ApplyAsync(ops []store.Op, done func(store.Done)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.freed {
		h.BoltStore.ApplyAsync(ops, done)
		return
	}
	h.held = append(h.held, func() { h.BoltStore.ApplyAsync(ops, done) })
}

func (h *heldCommits) release() {
	h.mu.Lock()
	held := h.held
	h.held, h.freed = nil, true
	h.mu.Unlock()
	for _, f := range held {
		f()
	}
}
