package titanic

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// fakeLookupStore holds tickets and replies in memory.
type fakeLookupStore struct {
	mu      sync.Mutex
	tickets map[store.ID]store.Ticket
	replies map[store.ID][][]byte
}

func newFakeLookupStore() *fakeLookupStore {
	return &fakeLookupStore{tickets: map[store.ID]store.Ticket{}, replies: map[store.ID][][]byte{}}
}

func (f *fakeLookupStore) put(t store.Ticket, rep ...[]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tickets[t.ID] = t
	f.replies[t.ID] = rep
}

func (f *fakeLookupStore) Get(_ context.Context, id store.ID) (store.Ticket, error) {
	t, _, err := f.Reply(context.Background(), id)
	return t, err
}

func (f *fakeLookupStore) Reply(_ context.Context, id store.ID) (store.Ticket, [][]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tickets[id]
	if !ok {
		return store.Ticket{}, nil, store.ErrNotFound
	}
	return t, f.replies[id], nil
}

func (f *fakeLookupStore) ListPage(context.Context, store.Filter) (store.Page, error) {
	return store.Page{}, errors.New("not listed here")
}

// fakeLeader confirms leadership, or fails to with err.
type fakeLeader struct{ err error }

func (l fakeLeader) Barrier(context.Context) error       { return l.err }
func (l fakeLeader) ConfirmLeader(context.Context) error { return l.err }

// lookupsProbe is a lookups over a fakeLookupStore, whose answers the
// test receives.
type lookupsProbe struct {
	l       *lookups
	st      *fakeLookupStore
	clock   *fakeClock
	stats   *counters
	answers chan [][]byte
	leased  map[store.ID]int
}

func newLookupsProbe(t *testing.T, cfg Config, leader store.Leadership) *lookupsProbe {
	t.Helper()
	p := &lookupsProbe{st: newFakeLookupStore(), clock: newFakeClock(), stats: &counters{}, answers: make(chan [][]byte, 16), leased: map[store.ID]int{}}
	cfg.Now = p.clock.Now
	cfg.fill()
	answer := func(_ broker.Client, _ string, body [][]byte) { p.answers <- body }
	leased := func(id store.ID) (int, bool) { n, ok := p.leased[id]; return n, ok }
	noStats := func(context.Context, [][]byte) ([][]byte, error) { return reply(tsp.CodeOK), nil }
	p.l = newLookups(cfg, p.st, leader, p.stats, slog.New(slog.NewTextHandler(io.Discard, nil)), answer, leased, noStats)
	return p
}

// run starts the readers (and the confirmer, with a leader) until the
// test ends.
func (p *lookupsProbe) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p.l.readLoop(ctx) }()
	if p.l.leader != nil {
		wg.Add(1)
		go func() { defer wg.Done(); p.l.confirmLoop(ctx) }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// next is the next answer sent.
func (p *lookupsProbe) next(t *testing.T) [][]byte {
	t.Helper()
	select {
	case out := <-p.answers:
		return out
	case <-time.After(5 * time.Second):
		t.Fatal("no answer")
		return nil
	}
}

// quiet waits until no lookup is queued or being read, then checks
// that nothing was answered.
func (p *lookupsProbe) quiet(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !p.l.idle() {
		if time.Now().After(deadline) {
			t.Fatal("lookups not idle")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case out := <-p.answers:
		t.Fatalf("unexpected answer %q", out)
	default:
	}
}

func waitReq(id store.ID, ms string) broker.Request {
	return broker.Request{Service: tsp.SvcWait, Body: [][]byte{[]byte(id.String()), []byte(ms)}}
}

// TestLookupsWait: a titanic.wait on an unfinished ticket stays parked
// until notify finds it answered; past MaxWaiters one is looked up at
// once instead; an expired one gets 300.
func TestLookupsWait(t *testing.T) {
	p := newLookupsProbe(t, Config{MaxWaiters: 1}, nil)
	p.run(t)
	id, other := store.NewID(), store.NewID()
	p.st.put(store.Ticket{ID: id, State: store.StatePending, Service: "s"})
	p.st.put(store.Ticket{ID: other, State: store.StatePending, Service: "s"})

	if out := p.l.wait(waitReq(id, "30000")); out != nil {
		t.Fatalf("wait answered at once: %q", out)
	}
	p.quiet(t) // parked: pending sends nothing
	if out := p.l.wait(waitReq(other, "30000")); out != nil {
		t.Fatalf("second wait answered at once: %q", out)
	}
	if out := p.next(t); codeOf(out) != tsp.CodePending {
		t.Fatalf("wait past MaxWaiters: %q, want 300 at once", out)
	}

	p.st.put(store.Ticket{ID: id, State: store.StateDone, Service: "s"}, []byte("done!"))
	p.l.notify(id)
	if out := p.next(t); codeOf(out) != tsp.CodeOK || string(out[1]) != "done!" {
		t.Fatalf("parked wait after its reply: %q, want 200 done!", out)
	}
	p.l.waits.mu.Lock()
	n := p.l.waits.n
	p.l.waits.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d waiters parked after the answer, want 0", n)
	}

	if out := p.l.wait(waitReq(other, "1000")); out != nil {
		t.Fatalf("wait answered at once: %q", out)
	}
	p.quiet(t)
	p.clock.add(time.Second)
	p.l.expireWaits(false)
	if out := p.next(t); codeOf(out) != tsp.CodePending {
		t.Fatalf("expired wait: %q, want 300", out)
	}
}

// TestLookupsBusy: past MaxQueuedReads lookups waiting for a reader, a
// lookup is refused busy at once.
func TestLookupsBusy(t *testing.T) {
	p := newLookupsProbe(t, Config{MaxQueuedReads: 1}, nil)
	req := broker.Request{Service: tsp.SvcReply, Body: [][]byte{[]byte(store.NewID().String())}}
	if out := p.l.lookup(req); out != nil {
		t.Fatalf("first lookup: %q", out)
	}
	if out := p.l.lookup(req); codeOf(out) != tsp.CodeError || string(out[1]) != string(tsp.Busy) {
		t.Fatalf("lookup past MaxQueuedReads: %q, want 500 busy", out)
	}
	if p.l.idle() {
		t.Fatal("idle with a lookup queued")
	}
	if got := p.stats.busy.Load(); got != 1 {
		t.Fatalf("busy = %d, want 1", got)
	}
}

// TestLookupsOverlay: a pending ticket a worker holds reads as
// dispatched, with the lease's attempts; a finished one as stored.
func TestLookupsOverlay(t *testing.T) {
	p := newLookupsProbe(t, Config{}, nil)
	id := store.NewID()
	p.st.put(store.Ticket{ID: id, State: store.StatePending, Service: "s", Attempts: 1})
	p.leased[id] = 2
	out, settled := p.l.read(context.Background(), broker.Request{Service: tsp.SvcStatus, Body: [][]byte{[]byte(id.String())}})
	if codeOf(out) != tsp.CodeOK || string(out[1]) != "dispatched" || string(out[2]) != "2" || settled {
		t.Fatalf("status of a leased ticket: %q settled %v, want dispatched 2, not settled", out, settled)
	}
	out, _ = p.l.read(context.Background(), broker.Request{Service: tsp.SvcReply, Body: [][]byte{[]byte(id.String())}})
	if codeOf(out) != tsp.CodePending || string(out[1]) != "dispatched" {
		t.Fatalf("reply of a leased ticket: %q, want 300 dispatched", out)
	}
}

// TestLookupsConfirm: with a leader, an answer that could be stale is
// sent after a confirmation; when confirmation fails, the lookup gets the
// Unconfirmed answer instead; a final answer needs none.
func TestLookupsConfirm(t *testing.T) {
	ok := newLookupsProbe(t, Config{}, fakeLeader{})
	ok.run(t)
	unknown := broker.Request{Service: tsp.SvcReply, Body: [][]byte{[]byte(store.NewID().String())}}
	ok.l.lookup(unknown)
	if out := ok.next(t); codeOf(out) != tsp.CodeUnknown {
		t.Fatalf("unknown ticket, leadership confirmed: %q, want 400", out)
	}
	if got := ok.stats.confirms.Load(); got != 1 {
		t.Fatalf("confirms = %d, want 1", got)
	}

	refused := [][]byte{[]byte(tsp.CodeError), []byte("not ready")}
	bad := newLookupsProbe(t, Config{Unconfirmed: func(string) [][]byte { return refused }}, fakeLeader{err: errors.New("deposed")})
	bad.run(t)
	bad.l.lookup(unknown)
	if out := bad.next(t); string(out[1]) != "not ready" {
		t.Fatalf("unknown ticket, leadership not confirmed: %q, want the Unconfirmed answer", out)
	}
	done := store.NewID()
	bad.st.put(store.Ticket{ID: done, State: store.StateDone}, []byte("r"))
	bad.l.lookup(broker.Request{Service: tsp.SvcReply, Body: [][]byte{[]byte(done.String())}})
	if out := bad.next(t); codeOf(out) != tsp.CodeOK {
		t.Fatalf("recorded reply, leadership not confirmed: %q, want 200", out)
	}
	if got := bad.stats.unconfirmed.Load(); got != 1 {
		t.Fatalf("unconfirmed = %d, want 1", got)
	}
}

// A titanic.wait parked on a ticket that is then closed is answered at
// once, 400 (unknown), as titanic.reply answers: it slept until its
// timeout and then answered 300 pending, after a lookup had said 400.
func TestWaitWokenByClose(t *testing.T) {
	h := newHarness(t, Config{}, "")
	ticket := h.submit("echo", "x")
	if r := h.svc.ServeMDP(broker.Request{Service: tsp.SvcWait, Body: [][]byte{[]byte(ticket), []byte("10000")}}); r != nil {
		t.Fatalf("wait answered at once: %q", r)
	}
	start := time.Now()
	if r := h.svc.ServeMDP(broker.Request{Service: tsp.SvcClose, Body: [][]byte{[]byte(ticket)}}); r != nil {
		t.Fatalf("close answered at once: %q", r)
	}
	codes := map[string]int{}
	for range 2 { // the close's answer and the wait's, in either order
		codes[codeOf(h.b.reply(t))]++
	}
	if codes[tsp.CodeOK] != 1 || codes[tsp.CodeUnknown] != 1 || time.Since(start) > 5*time.Second {
		t.Fatalf("answers after the close: %v in %s; want the close's 200 and the wait's 400, at once", codes, time.Since(start))
	}
}
