package ops_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/ops"
)

// fakeTickets is an in-memory Tickets.
type fakeTickets struct {
	mu       sync.Mutex
	tickets  map[store.ID]store.Ticket
	replies  map[store.ID][][]byte
	closeErr error // returned by Close when set
	closed   []store.ID
}

func newFakeTickets() *fakeTickets {
	return &fakeTickets{tickets: map[store.ID]store.Ticket{}, replies: map[store.ID][][]byte{}}
}

// add stores a ticket created at created; reply (when not nil) makes it done.
func (f *fakeTickets) add(service string, st store.State, created time.Time, reply [][]byte) store.ID {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := idAt(created, len(f.tickets))
	t := store.Ticket{ID: id, Service: service, State: st, Seq: uint64(len(f.tickets) + 1), Created: created, Updated: created}
	if st != store.StatePending {
		t.Attempts = 1
	}
	if st == store.StateFailed {
		t.Reason = "worker said no"
	}
	f.tickets[id] = t
	if reply != nil {
		f.replies[id] = reply
	}
	return id
}

// idAt returns a UUIDv7-like ID: the millisecond time, n (so that IDs
// of one millisecond keep their order), then random bits.
func idAt(t time.Time, n int) store.ID {
	id := store.ID(uuid.New())
	ms := uint64(t.UnixMilli())
	for i := 0; i < 6; i++ {
		id[i] = byte(ms >> (40 - 8*i))
	}
	id[6], id[7] = 0x70|byte(n>>8)&0x0f, byte(n)
	return id
}

func (f *fakeTickets) Ticket(_ context.Context, id store.ID) (store.Ticket, [][]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tickets[id]
	if !ok {
		return store.Ticket{}, nil, fmt.Errorf("reply %s: %w", id, store.ErrNotFound)
	}
	return t, f.replies[id], nil
}

func (f *fakeTickets) List(_ context.Context, fl ops.Filter) ([]store.Ticket, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]store.ID, 0, len(f.tickets))
	for id := range f.tickets {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b store.ID) int { return bytes.Compare(a[:], b[:]) })
	if fl.Newest {
		slices.Reverse(ids)
	}
	var out []store.Ticket
	for _, id := range ids {
		if !fl.After.IsZero() {
			c := bytes.Compare(id[:], fl.After[:])
			if (!fl.Newest && c <= 0) || (fl.Newest && c >= 0) {
				continue
			}
		}
		t := f.tickets[id]
		if (fl.Service == "" || fl.Service == t.Service) && (fl.State == 0 || fl.State == t.State) {
			out = append(out, t)
		}
		if len(out) == fl.Limit {
			break
		}
	}
	return out, nil
}

func (f *fakeTickets) Close(_ context.Context, id store.ID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closeErr != nil {
		return f.closeErr
	}
	if _, ok := f.tickets[id]; !ok {
		return fmt.Errorf("close %s: %w", id, store.ErrNotFound)
	}
	delete(f.tickets, id)
	delete(f.replies, id)
	f.closed = append(f.closed, id)
	return nil
}

// queues counts the tickets per service and state, as the store does.
func (f *fakeTickets) queues(context.Context) ([]ops.Queue, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	by := map[string]*ops.Queue{}
	for _, t := range f.tickets {
		q := by[t.Service]
		if q == nil {
			q = &ops.Queue{Service: t.Service}
			by[t.Service] = q
		}
		switch t.State {
		case store.StatePending:
			q.Pending++
		case store.StateDispatched:
			q.Dispatched++
		case store.StateDone:
			q.Done++
		case store.StateFailed:
			q.Failed++
		case store.StateCancelled:
			q.Cancelled++
		}
		if !t.State.Final() && (q.Oldest.IsZero() || t.Created.Before(q.Oldest)) {
			q.Oldest = t.Created
		}
	}
	out := make([]ops.Queue, 0, len(by))
	for _, q := range by {
		out = append(out, *q)
	}
	return out, nil
}

// Sources built from functions (tests change them as they go).
type (
	queuesFunc   func(context.Context) ([]ops.Queue, error)
	workersFunc  func(context.Context) ([]ops.ServiceWorkers, error)
	countersFunc func() ops.Counts
	clientsFunc  func(context.Context, int) ([]ops.Client, int, error)
)

func (f queuesFunc) Queues(ctx context.Context) ([]ops.Queue, error) { return f(ctx) }
func (f workersFunc) Workers(ctx context.Context) ([]ops.ServiceWorkers, error) {
	return f(ctx)
}
func (f countersFunc) Counters() ops.Counts { return f() }
func (f clientsFunc) Clients(ctx context.Context, limit int) ([]ops.Client, int, error) {
	return f(ctx, limit)
}

// fakeCluster is a Cluster with fixed answers.
type fakeCluster struct {
	status ops.ClusterStatus
	err    error
}

func (c *fakeCluster) Role() (string, bool) { return c.status.Role, c.status.Active }
func (c *fakeCluster) Status(context.Context) (ops.ClusterStatus, error) {
	return c.status, c.err
}

// fixture is a Server over fakes: two services, a few tickets.
type fixture struct {
	srv     *ops.Server
	tickets *fakeTickets
	now     time.Time
	done    store.ID // a done ticket of service "echo" with reply "hello"
	pending store.ID
}

func newFixture(t testing.TB, edit func(*ops.Config)) *fixture {
	t.Helper()
	fx := &fixture{tickets: newFakeTickets(), now: time.Now()}
	base := fx.now.Add(-time.Minute)
	fx.pending = fx.tickets.add("echo", store.StatePending, base, nil)
	fx.tickets.add("echo", store.StateDispatched, base.Add(time.Second), nil)
	fx.done = fx.tickets.add("echo", store.StateDone, base.Add(2*time.Second), [][]byte{[]byte("hello"), {0xff, 0x00}})
	fx.tickets.add("resize", store.StateFailed, base.Add(3*time.Second), nil)
	cfg := ops.DefaultConfig()
	cfg.Logger = testLogger(t)
	cfg.Version = "test"
	cfg.Tickets = fx.tickets
	cfg.Queues = queuesFunc(fx.tickets.queues)
	cfg.Workers = workersFunc(func(context.Context) ([]ops.ServiceWorkers, error) {
		return []ops.ServiceWorkers{{Service: "echo", Workers: 3, Idle: 2, Busy: 1}, {Service: "mmi.nothing", Requests: 4}}, nil
	})
	cfg.Counters = countersFunc(func() ops.Counts {
		return ops.Counts{Submits: 4, Replies: 1, Redeliveries: 2, Failures: 1, Dispatches: 5, Commits: 7, Leased: 1}
	})
	if edit != nil {
		edit(&cfg)
	}
	srv, err := ops.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fx.srv = srv
	return fx
}

// do sends a request to the fixture's server and returns the response.
func (fx *fixture) do(t testing.TB, method, target string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	req.Host = "127.0.0.1:8080" // httptest's example.com fails the host check
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	fx.srv.ServeHTTP(rec, req)
	return rec
}

// getJSON does a request, checks the status and decodes the JSON body.
func (fx *fixture) getJSON(t testing.TB, method, target string, want int, v any) {
	t.Helper()
	rec := fx.do(t, method, target)
	if rec.Code != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", method, target, rec.Code, want, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("%s %s: content type %q", method, target, ct)
	}
	if v != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, target, rec.Body, err)
		}
	}
}

// wantError checks an error answer's status and that its JSON error
// contains text.
func (fx *fixture) wantError(t testing.TB, method, target string, code int, text string) {
	t.Helper()
	var e struct{ Error string }
	fx.getJSON(t, method, target, code, &e)
	if !strings.Contains(e.Error, text) {
		t.Fatalf("%s %s: error %q, want it to contain %q", method, target, e.Error, text)
	}
}

// testLogger sends the server's logs to t.Log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = tWriter{}

// get fetches url over the network with an optional bearer token.
func get(t testing.TB, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
