package titanic

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// readCounter counts the lookups' ticket reads of the store it wraps.
type readCounter struct {
	store.Store
	reads atomic.Int64
}

func (c *readCounter) Reply(ctx context.Context, id store.ID) (store.Ticket, [][]byte, error) {
	c.reads.Add(1)
	return c.Store.Reply(ctx, id)
}

// newCountingHarness is a harness whose store reads of titanic.reply are
// counted; with stall, over a stallStore (returned) too.
func newCountingHarness(t *testing.T, cfg Config, path string, stall bool) (*harness, *readCounter, *stallStore) {
	t.Helper()
	var rc *readCounter
	var gs *stallStore
	h := newHarnessOver(t, cfg, path, func(st *store.BoltStore) store.Store {
		var inner store.Store = st
		if stall {
			gs = newStallStore(st)
			inner = gs
		}
		rc = &readCounter{Store: inner}
		return rc
	})
	if gs != nil {
		t.Cleanup(gs.open)
	}
	return h, rc, gs
}

// idle waits until the service has no commit and no lookup in flight.
func (h *harness) idle() {
	h.t.Helper()
	deadline := time.Now().Add(wait)
	for !h.svc.Idle() {
		if time.Now().After(deadline) {
			h.t.Fatalf("service not idle within %s", wait)
		}
		time.Sleep(time.Millisecond)
	}
}

func replyReq(service, ticket string) broker.Request {
	body := [][]byte{[]byte(ticket)}
	if service == tsp.SvcWait {
		body = append(body, []byte("0"))
	}
	return broker.Request{Service: service, Body: body}
}

// TestPendingFromMemory: titanic.reply (and titanic.wait with no timeout)
// of an unfinished ticket the dispatcher holds is answered at once, on
// the caller's goroutine, without a store read, and with the bytes the
// store path gives.
func TestPendingFromMemory(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		// setup leaves a ticket in the state to look up, and returns it.
		setup func(t *testing.T, h *harness) string
		want  string
	}{
		{name: "pending", want: "pending", setup: func(t *testing.T, h *harness) string {
			return h.submit("echo", "a")
		}},
		{name: "leased", want: "dispatched", setup: func(t *testing.T, h *harness) string {
			ticket := h.submit("echo", "a")
			h.next("echo")
			return ticket
		}},
		{name: "delayed", want: "pending", setup: func(t *testing.T, h *harness) string {
			id, _, err := h.svc.Submit(context.Background(), "echo", [][]byte{[]byte("a")}, "", store.Lifecycle{Due: time.Now().Add(time.Hour)})
			if err != nil {
				t.Fatalf("delayed submit: %v", err)
			}
			return id.String()
		}},
		{name: "requeued", cfg: Config{BackoffBase: -1}, want: "pending", setup: func(t *testing.T, h *harness) string {
			ticket := h.submit("echo", "a")
			lease, _ := h.next("echo")
			h.svc.Failed(lease, "boom")
			h.idle() // the requeue's completion ran
			return ticket
		}},
		{name: "backing off", want: "pending", setup: func(t *testing.T, h *harness) string {
			ticket := h.submit("echo", "a")
			lease, _ := h.next("echo")
			h.svc.Failed(lease, "boom")
			h.idle()
			return ticket
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, rc, _ := newCountingHarness(t, tc.cfg, "", false)
			ticket := tc.setup(t, h)
			checkFromMemory(t, h, rc, ticket, tc.want)
		})
	}
}

// TestPendingFromMemoryRecovered: a ticket dispatched when the broker
// stopped had its attempt cut short: once recovered it is pending again,
// in memory and in the store, which is what both paths answer.
func TestPendingFromMemoryRecovered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	h, _, _ := newCountingHarness(t, Config{}, path, false)
	ticket := h.submit("echo", "a")
	h.next("echo")
	h.stop() // the dispatch mark is durable: Run drains the commits
	h, rc, _ := newCountingHarness(t, Config{}, path, false)
	checkFromMemory(t, h, rc, ticket, "pending")
}

// checkFromMemory checks that titanic.reply and titanic.wait [ticket | 0]
// answer [300 want] at once without a store read, as the store path does.
func checkFromMemory(t *testing.T, h *harness, rc *readCounter, ticket, want string) {
	t.Helper()
	for _, svc := range []string{tsp.SvcReply, tsp.SvcWait} {
		before := rc.reads.Load()
		out := h.svc.ServeMDP(replyReq(svc, ticket))
		if out == nil {
			t.Fatalf("%s of a %s ticket went to the readers, want an answer from memory", svc, want)
		}
		if n := rc.reads.Load() - before; n != 0 {
			t.Fatalf("%s of a %s ticket read the store %d times, want 0", svc, want, n)
		}
		if got := fmt.Sprintf("%q", out); got != fmt.Sprintf("%q", replyText(tsp.CodePending, want)) {
			t.Fatalf("%s = %s, want [300 %s]", svc, got, want)
		}
		stored, _ := h.svc.look.read(context.Background(), replyReq(tsp.SvcReply, ticket))
		if fmt.Sprintf("%q", stored) != fmt.Sprintf("%q", out) {
			t.Fatalf("%s from memory = %q, from the store = %q", svc, out, stored)
		}
	}
}

// TestPendingFromStoreWhileFinishing: while an op that may finish the
// ticket commits (a worker's reply, a close, a cancel), titanic.reply
// reads the store; once it committed, it answers what the store has.
func TestPendingFromStoreWhileFinishing(t *testing.T) {
	cases := []struct {
		name string
		// finish starts the op of ticket (its commit held); client: it
		// is a client's request, answered 200 once committed.
		finish func(t *testing.T, h *harness, ticket string)
		client bool
		final  string // the lookup's code once the op committed
	}{
		{name: "reply", final: tsp.CodeOK, finish: func(t *testing.T, h *harness, ticket string) {
			lease, _ := h.next("echo")
			h.svc.Completed(lease, [][]byte{[]byte("A")})
			h.b.release(t)
		}},
		{name: "close", client: true, final: tsp.CodeUnknown, finish: func(t *testing.T, h *harness, ticket string) {
			if r := h.svc.ServeMDP(broker.Request{Service: tsp.SvcClose, Body: [][]byte{[]byte(ticket)}}); r != nil {
				t.Fatalf("close answered at once: %q", r)
			}
		}},
		{name: "cancel", client: true, final: tsp.CodeError, finish: func(t *testing.T, h *harness, ticket string) {
			if r := h.svc.ServeMDP(broker.Request{Service: tsp.SvcCancel, Body: [][]byte{[]byte(ticket)}}); r != nil {
				t.Fatalf("cancel answered at once: %q", r)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, rc, gs := newCountingHarness(t, Config{}, "", true)
			ticket := h.submit("echo", "a")
			h.idle()
			gs.shut()
			tc.finish(t, h, ticket)
			before := rc.reads.Load()
			if r := h.svc.ServeMDP(replyReq(tsp.SvcReply, ticket)); r != nil {
				t.Fatalf("reply while its ticket's %s commits answered from memory: %q", tc.name, r)
			}
			if r := h.b.reply(t); codeOf(r) != tsp.CodePending {
				t.Fatalf("reply while the %s commits = %q, want 300", tc.name, r)
			}
			if rc.reads.Load() == before {
				t.Fatal("the store was not read")
			}
			gs.open()
			if tc.client {
				if r := h.b.reply(t); codeOf(r) != tsp.CodeOK {
					t.Fatalf("%s = %q, want 200", tc.name, r)
				}
			}
			h.idle()
			if r := h.call(tsp.SvcReply, ticket); codeOf(r) != tc.final {
				t.Fatalf("reply after the %s committed = %q, want %s", tc.name, r, tc.final)
			}
		})
	}
}

// lagStore runs each commit's completions a random moment (up to 300µs)
// after the store made the commit visible: the window in which a lookup
// reads the outcome in the store while the dispatcher has not heard of
// it yet, made wide enough for a test to hit.
type lagStore struct{ store.Store }

func (l lagStore) ApplyAsync(ops []store.Op, done func(store.Done)) {
	l.Store.ApplyAsync(ops, func(d store.Done) {
		time.Sleep(time.Duration(rand.N(300)) * time.Microsecond) // injected latency, not synchronisation
		done(d)
	})
}

// hammerBroker hands the answers of titanic.reply, .wait and .status to
// the poller (the only one who asks them, one at a time) and drops the
// others.
type hammerBroker struct {
	answers chan [][]byte
	woke    chan struct{}
}

func (b *hammerBroker) Reply(_ broker.Client, service string, body [][]byte) {
	switch service {
	case tsp.SvcReply, tsp.SvcWait, tsp.SvcStatus:
		b.answers <- body
	}
}
func (b *hammerBroker) Release(uint64) {}
func (b *hammerBroker) Wake(string) {
	select {
	case b.woke <- struct{}{}:
	default:
	}
}

// TestPendingNeverAfterFinal hammers a service whose workers reply or
// fail while a client closes and cancels tickets and a poller asks
// titanic.reply, titanic.wait with no timeout and titanic.status (which
// always reads the store) about them, and checks that no answer goes
// backwards: after a 200, a final 500 (failed, cancelled), a 400
// (closed: every ticket existed) or a status of a finished ticket, never
// a 300 (nor an unfinished status).
func TestPendingNeverAfterFinal(t *testing.T) {
	const rounds, perRound = 40, 16
	st, err := store.Open(filepath.Join(t.TempDir(), "t.db"), store.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	b := &hammerBroker{answers: make(chan [][]byte, 16), woke: make(chan struct{}, 1)}
	svc := New(lagStore{st}, b, Config{MaxAttempts: 2, BackoffBase: -1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	if err := svc.Recover(ctx); err != nil {
		t.Fatalf("recover: %v", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = svc.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait(); _ = st.Close() })

	var leases atomic.Uint64
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); hammerWorker(ctx, svc, b, &leases) }()
	}
	var fast, stored int
	for round := range rounds {
		tickets := make([]string, perRound)
		for i := range tickets {
			id, _, err := svc.Submit(ctx, "echo", [][]byte{[]byte("x")}, "", store.Lifecycle{})
			if err != nil {
				t.Fatalf("submit: %v", err)
			}
			tickets[i] = id.String()
		}
		closed := make(chan struct{})
		go func() { defer close(closed); hammerCloser(svc, tickets) }()
		f, s := pollUntilFinal(t, svc, b, tickets, round)
		fast, stored = fast+f, stored+s
		<-closed
	}
	if fast == 0 || stored == 0 {
		t.Fatalf("%d answers from memory and %d from the store: the test did not exercise both", fast, stored)
	}
	t.Logf("%d answers from memory, %d from the store", fast, stored)
}

// hammerWorker takes the jobs of service echo until ctx ends, works on
// each up to 2ms, and answers three in four, fails the others (their
// second failure is final).
func hammerWorker(ctx context.Context, svc *Service, b *hammerBroker, leases *atomic.Uint64) {
	for ctx.Err() == nil {
		job, ok := svc.Next("echo", "w")
		if !ok {
			select {
			case <-b.woke:
			case <-ctx.Done():
			case <-time.After(time.Millisecond): // a wake may go to the other worker
			}
			continue
		}
		lease := broker.Lease{ID: leases.Add(1), Service: "echo", Token: job.Token, Tag: job.Tag}
		// The job's work: its answer comes while the poller asks.
		time.Sleep(time.Duration(rand.N(2000)) * time.Microsecond)
		if rand.N(4) == 0 {
			svc.Failed(lease, "boom")
		} else {
			svc.Completed(lease, [][]byte{[]byte("done")})
		}
	}
}

// hammerCloser closes one ticket in eight and cancels another, in random
// order; their answers are dropped.
func hammerCloser(svc *Service, tickets []string) {
	for _, i := range rand.Perm(len(tickets)) {
		service := ""
		switch rand.N(8) {
		case 0:
			service = tsp.SvcClose
		case 1:
			service = tsp.SvcCancel
		}
		if service != "" {
			svc.ServeMDP(broker.Request{Service: service, Body: [][]byte{[]byte(tickets[i])}})
		}
	}
}

// pollUntilFinal asks about tickets, in turn, until each was answered
// finally, and fails the test on a 300 after a final answer. It returns
// how many answers came from memory and from the store.
func pollUntilFinal(t *testing.T, svc *Service, b *hammerBroker, tickets []string, round int) (fast, stored int) {
	t.Helper()
	final := make([]string, len(tickets)) // the first final answer, per ticket
	left := len(tickets)
	deadline := time.Now().Add(10 * time.Second)
	// i is the ticket asked about; again, how many more times it is
	// asked before the next: a ticket that just became final is asked
	// at once again, while its op's completion may still be running.
	i, again := 0, 0
	for n := 0; left > 0; n++ {
		if time.Now().After(deadline) {
			t.Fatalf("round %d: %d tickets not final within 10s", round, left)
		}
		if again > 0 {
			again--
		} else {
			i = (i + 1) % len(tickets)
		}
		service := []string{tsp.SvcReply, tsp.SvcStatus, tsp.SvcWait}[n%3]
		req := replyReq(service, tickets[i])
		if service == tsp.SvcStatus {
			req.Service = service
		}
		out := svc.ServeMDP(req)
		if out != nil {
			fast++
		} else {
			stored++
			select {
			case out = <-b.answers:
			case <-time.After(wait):
				t.Fatalf("round %d: no answer to %s of %s within %s", round, service, tickets[i], wait)
			}
		}
		switch answer(service, out) {
		case answerPending:
			if final[i] != "" {
				t.Fatalf("round %d: %s of %s answered %q after %s", round, service, tickets[i], out, final[i])
			}
		case answerFinal:
			if final[i] == "" {
				final[i] = fmt.Sprintf("%s answered %q", service, out)
				left--
				again = 3
			}
		}
	}
	return fast, stored
}

// What an answer of pollUntilFinal's says of its ticket.
const (
	answerOther   = iota // neither (500 busy)
	answerPending        // not finished
	answerFinal          // finished or closed
)

// answer classifies an answer of service (titanic.reply, .wait, .status)
// about a ticket that existed.
func answer(service string, out [][]byte) int {
	code := codeOf(out)
	switch {
	case code == tsp.CodeUnknown:
		return answerFinal // closed
	case service == tsp.SvcStatus && code == tsp.CodeOK && len(out) > 1:
		if st, err := store.ParseState(string(out[1])); err == nil && st.Final() {
			return answerFinal
		}
		return answerPending
	case code == tsp.CodePending:
		return answerPending
	case code == tsp.CodeOK,
		code == tsp.CodeError && len(out) > 1 && strings.HasPrefix(string(out[1]), tsp.Failed.Text("")):
		return answerFinal
	}
	return answerOther
}

// doubtStore applies the first batch holding a cancel for real, so that
// readers see it, but reports that batch failed: as a commit whose last
// fdatasync failed after bbolt wrote its meta page does.
type doubtStore struct {
	store.Store
	failed atomic.Bool
}

func (d *doubtStore) ApplyAsync(ops []store.Op, done func(store.Done)) {
	d.Store.ApplyAsync(ops, func(r store.Done) {
		if !d.failed.Load() && slices.ContainsFunc(ops, func(o store.Op) bool { return o.Kind == store.OpCancel }) {
			d.failed.Store(true)
			r = store.Done{Err: errors.New("fdatasync: input/output error"), Last: r.Last}
		}
		done(r)
	})
}

// TestPendingNotFromMemoryAfterFailedFinish: a cancel whose batch failed
// may still be in the store (readers answer it cancelled), while the
// dispatcher keeps the ticket pending. titanic.reply must then read the
// store, not answer 300 from memory after a final answer.
func TestPendingNotFromMemoryAfterFailedFinish(t *testing.T) {
	var ds *doubtStore
	h := newHarnessOver(t, Config{}, "", func(st *store.BoltStore) store.Store {
		ds = &doubtStore{Store: st}
		return ds
	})
	ticket := h.submit("echo", "a")
	h.idle()
	if r := h.svc.ServeMDP(broker.Request{Service: tsp.SvcCancel, Body: [][]byte{[]byte(ticket)}}); r != nil {
		t.Fatalf("cancel answered at once: %q", r)
	}
	if r := h.b.reply(t); codeOf(r) == tsp.CodeOK {
		t.Fatalf("cancel of a failed batch answered %q", r)
	}
	h.idle()
	if !ds.failed.Load() {
		t.Fatal("the cancel's batch was not failed")
	}
	if r := h.call(tsp.SvcStatus, ticket); codeOf(r) != tsp.CodeOK || string(r[1]) != store.StateCancelled.String() {
		t.Fatalf("status after the failed cancel = %q, want the store's cancelled", r)
	}
	if r := h.svc.ServeMDP(replyReq(tsp.SvcReply, ticket)); r != nil {
		t.Fatalf("titanic.reply answered %q from memory after the store showed the ticket cancelled", r)
	}
	if r := h.b.reply(t); codeOf(r) != tsp.CodeError {
		t.Fatalf("titanic.reply after the failed cancel = %q, want the store's final 500", r)
	}
}
