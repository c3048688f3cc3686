package ops_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/ops"
)

type ticketJSON struct {
	ID           string
	Service      string
	State        string
	Seq          uint64
	Attempts     int
	Reason       string
	Created      time.Time
	Updated      time.Time
	Reply        [][]byte
	ReplyBytes   *int `json:"reply_bytes"`
	ReplyOmitted bool `json:"reply_omitted"`
}

type pageJSON struct {
	Tickets []ticketJSON
	Next    string
}

func TestGetTicket(t *testing.T) {
	fx := newFixture(t, nil)
	var got ticketJSON
	fx.getJSON(t, http.MethodGet, "/api/v1/tickets/"+fx.done.String(), http.StatusOK, &got)
	if got.ID != fx.done.String() || got.State != "done" || got.Service != "echo" || got.Attempts != 1 {
		t.Fatalf("done ticket: %+v", got)
	}
	if len(got.Reply) != 2 || string(got.Reply[0]) != "hello" || string(got.Reply[1]) != "\xff\x00" {
		t.Fatalf("reply %q", got.Reply)
	}
	if got.ReplyBytes == nil || *got.ReplyBytes != 7 || got.ReplyOmitted {
		t.Fatalf("reply size %v omitted %v", got.ReplyBytes, got.ReplyOmitted)
	}
	if got.Created.IsZero() || got.Updated.IsZero() {
		t.Fatalf("times missing: %+v", got)
	}

	// Dashed UUIDs are accepted; a pending ticket has no reply.
	dashed := fx.pending.String()
	dashed = dashed[:8] + "-" + dashed[8:12] + "-" + dashed[12:16] + "-" + dashed[16:20] + "-" + dashed[20:]
	got = ticketJSON{}
	fx.getJSON(t, http.MethodGet, "/api/v1/tickets/"+dashed, http.StatusOK, &got)
	if got.State != "pending" || got.Reply != nil || got.ReplyBytes != nil {
		t.Fatalf("pending ticket: %+v", got)
	}

	fx.wantError(t, http.MethodGet, "/api/v1/tickets/nothex", http.StatusBadRequest, "malformed ticket id")
	fx.wantError(t, http.MethodGet, "/api/v1/tickets/"+strings.Repeat("ab", 16), http.StatusNotFound, "unknown ticket")
}

func TestGetTicketEmptyReply(t *testing.T) {
	fx := newFixture(t, nil)
	id := fx.tickets.add("echo", store.StateDone, fx.now, [][]byte{})
	rec := fx.do(t, http.MethodGet, "/api/v1/tickets/"+id.String())
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"reply":[],"reply_bytes":0`) {
		t.Fatalf("done ticket with an empty reply: %d %s", rec.Code, rec.Body)
	}
}

func TestGetTicketLargeReply(t *testing.T) {
	fx := newFixture(t, func(c *ops.Config) { c.MaxReplyBytes = 4 })
	var got ticketJSON
	fx.getJSON(t, http.MethodGet, "/api/v1/tickets/"+fx.done.String(), http.StatusOK, &got)
	if got.Reply != nil || !got.ReplyOmitted || got.ReplyBytes == nil || *got.ReplyBytes != 7 {
		t.Fatalf("large reply: %+v", got)
	}
}

func TestListPaging(t *testing.T) {
	fx := newFixture(t, nil)
	base := fx.now.Add(-time.Hour)
	for i := range 25 {
		fx.tickets.add("bulk", store.StatePending, base.Add(time.Duration(i)*time.Millisecond), nil)
	}
	for _, order := range []string{"oldest", "newest"} {
		var ids []string
		after, pages := "", 0
		for {
			var p pageJSON
			fx.getJSON(t, http.MethodGet, "/api/v1/tickets?service=bulk&limit=10&order="+order+"&after="+after, http.StatusOK, &p)
			pages++
			for _, tk := range p.Tickets {
				if tk.Service != "bulk" {
					t.Fatalf("service filter: got %+v", tk)
				}
				ids = append(ids, tk.ID)
			}
			if p.Next == "" {
				break
			}
			if p.Next != p.Tickets[len(p.Tickets)-1].ID {
				t.Fatalf("next %s is not the page's last ticket", p.Next)
			}
			after = p.Next
			if pages > 10 {
				t.Fatal("paging does not end")
			}
		}
		// 10 + 10 + 5: the last page is short, so it has no next.
		if len(ids) != 25 || pages != 3 {
			t.Fatalf("%s: %d tickets in %d pages, want 25 in 3", order, len(ids), pages)
		}
		for i := 1; i < len(ids); i++ {
			if (order == "oldest") != (ids[i-1] < ids[i]) {
				t.Fatalf("%s: tickets out of order at %d: %s, %s", order, i, ids[i-1], ids[i])
			}
		}
	}

	var p pageJSON
	fx.getJSON(t, http.MethodGet, "/api/v1/tickets?state=done", http.StatusOK, &p)
	if len(p.Tickets) != 1 || p.Tickets[0].ID != fx.done.String() || p.Next != "" {
		t.Fatalf("state filter: %+v", p)
	}
	fx.getJSON(t, http.MethodGet, "/api/v1/tickets?service=none", http.StatusOK, &p)
	if p.Tickets == nil || len(p.Tickets) != 0 {
		t.Fatalf("empty page must be an empty list: %+v", p)
	}

	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "state=lost", "after=zz", "order=up"} {
		fx.wantError(t, http.MethodGet, "/api/v1/tickets?"+q, http.StatusBadRequest, "")
	}
	fx.getJSON(t, http.MethodGet, "/api/v1/tickets?limit=1000", http.StatusOK, &p)
}

func TestCloseTicket(t *testing.T) {
	fx := newFixture(t, nil)
	var got struct {
		ID     string
		Closed bool
	}
	fx.getJSON(t, http.MethodDelete, "/api/v1/tickets/"+fx.done.String(), http.StatusOK, &got)
	if !got.Closed || got.ID != fx.done.String() || len(fx.tickets.closed) != 1 || fx.tickets.closed[0] != fx.done {
		t.Fatalf("close: %+v, closed %v", got, fx.tickets.closed)
	}
	fx.wantError(t, http.MethodGet, "/api/v1/tickets/"+fx.done.String(), http.StatusNotFound, "unknown ticket")
	fx.wantError(t, http.MethodDelete, "/api/v1/tickets/"+fx.done.String(), http.StatusNotFound, "unknown ticket")
	fx.wantError(t, http.MethodDelete, "/api/v1/tickets/xyz", http.StatusBadRequest, "malformed")

	fx.tickets.closeErr = fmt.Errorf("enqueue: %w", ops.ErrBusy)
	rec := fx.do(t, http.MethodDelete, "/api/v1/tickets/"+fx.pending.String())
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("busy close: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	fx.tickets.closeErr = fmt.Errorf("apply: %w", ops.ErrNotActive)
	fx.wantError(t, http.MethodDelete, "/api/v1/tickets/"+fx.pending.String(), http.StatusServiceUnavailable, "not active")
	fx.tickets.closeErr = context.DeadlineExceeded
	fx.wantError(t, http.MethodDelete, "/api/v1/tickets/"+fx.pending.String(), http.StatusGatewayTimeout, "timed out")
	fx.tickets.closeErr = errors.New("disk on fire")
	fx.wantError(t, http.MethodDelete, "/api/v1/tickets/"+fx.pending.String(), http.StatusInternalServerError, "disk on fire")
}

func TestClosePassive(t *testing.T) {
	cl := &fakeCluster{status: ops.ClusterStatus{Mode: ops.ModePair, Role: ops.RolePassive}}
	fx := newFixture(t, func(c *ops.Config) { c.Cluster = cl })
	fx.wantError(t, http.MethodDelete, "/api/v1/tickets/"+fx.pending.String(), http.StatusServiceUnavailable, "not active: this node is passive")
	if len(fx.tickets.closed) != 0 {
		t.Fatal("a passive node closed a ticket")
	}
	// Reads still work on a passive node.
	fx.getJSON(t, http.MethodGet, "/api/v1/tickets/"+fx.pending.String(), http.StatusOK, nil)
}

func TestServicesAndWorkers(t *testing.T) {
	fx := newFixture(t, nil)
	var got struct {
		Services []struct {
			Name                          string
			Pending, Dispatched, Done     int
			Failed                        int
			Oldest                        *time.Time
			OldestAge                     float64 `json:"oldest_age_seconds"`
			Workers, Idle, Busy, Requests int
		}
	}
	fx.getJSON(t, http.MethodGet, "/api/v1/services", http.StatusOK, &got)
	if len(got.Services) != 3 {
		t.Fatalf("services: %+v", got)
	}
	echo, mmi, resize := got.Services[0], got.Services[1], got.Services[2]
	if echo.Name != "echo" || mmi.Name != "mmi.nothing" || resize.Name != "resize" {
		t.Fatalf("services not sorted by name: %+v", got)
	}
	if echo.Pending != 1 || echo.Dispatched != 1 || echo.Done != 1 || echo.Workers != 3 || echo.Idle != 2 || echo.Busy != 1 {
		t.Fatalf("echo: %+v", echo)
	}
	if echo.Oldest == nil || echo.OldestAge < 59 || echo.OldestAge > 120 {
		t.Fatalf("echo oldest: %v, age %v", echo.Oldest, echo.OldestAge)
	}
	if resize.Oldest != nil || resize.Failed != 1 || resize.Workers != 0 || mmi.Requests != 4 {
		t.Fatalf("resize %+v mmi %+v", resize, mmi)
	}

	var ws struct {
		Workers []struct {
			Service             string
			Workers, Idle, Busy int
		}
		Total int
	}
	fx.getJSON(t, http.MethodGet, "/api/v1/workers", http.StatusOK, &ws)
	if ws.Total != 3 || len(ws.Workers) != 2 || ws.Workers[0].Service != "echo" || ws.Workers[0].Idle != 2 {
		t.Fatalf("workers: %+v", ws)
	}

	var st map[string]float64
	fx.getJSON(t, http.MethodGet, "/api/v1/stats", http.StatusOK, &st)
	if st["submits"] != 4 || st["redeliveries"] != 2 || st["leased"] != 1 {
		t.Fatalf("stats: %v", st)
	}
}

func TestServicesError(t *testing.T) {
	fx := newFixture(t, func(c *ops.Config) {
		c.Queues = queuesFunc(func(context.Context) ([]ops.Queue, error) { return nil, errors.New("store closed") })
	})
	fx.wantError(t, http.MethodGet, "/api/v1/services", http.StatusInternalServerError, "store closed")
}

func TestClients(t *testing.T) {
	fx := newFixture(t, nil)
	var got struct {
		Clients []map[string]any
		Total   int
		Tracked bool
	}
	fx.getJSON(t, http.MethodGet, "/api/v1/clients", http.StatusOK, &got)
	if got.Clients == nil || len(got.Clients) != 0 || got.Total != 0 || got.Tracked {
		t.Fatalf("clients without presence: %+v", got)
	}
	since := time.Now().Add(-time.Minute)
	fx = newFixture(t, func(c *ops.Config) {
		c.Clients = clientsFunc(func(_ context.Context, limit int) ([]ops.Client, int, error) {
			if limit != ops.MaxClients {
				t.Errorf("limit %d, want %d", limit, ops.MaxClients)
			}
			return []ops.Client{{ID: "billing-1", Since: since, Seen: since.Add(30 * time.Second)}}, 5, nil
		})
	})
	fx.getJSON(t, http.MethodGet, "/api/v1/clients", http.StatusOK, &got)
	if len(got.Clients) != 1 || got.Clients[0]["id"] != "billing-1" || got.Clients[0]["seen"] == nil || got.Total != 5 || !got.Tracked {
		t.Fatalf("clients: %+v", got)
	}
	fx = newFixture(t, func(c *ops.Config) {
		c.Clients = clientsFunc(func(context.Context, int) ([]ops.Client, int, error) { return nil, 0, errors.New("gone") })
	})
	fx.wantError(t, http.MethodGet, "/api/v1/clients", http.StatusInternalServerError, "gone")
}

type clusterJSON struct {
	Mode, Role, NodeID, Leader string
	Active                     bool
	Term                       uint64
	CommitIndex                uint64 `json:"commit_index"`
	AppliedIndex               uint64 `json:"applied_index"`
	CommitLag                  uint64 `json:"commit_lag"`
	Members                    []struct {
		ID, Addr      string
		Voter, Leader bool
	}
	Peers   []any
	Version string
}

func TestCluster(t *testing.T) {
	fx := newFixture(t, nil)
	var got clusterJSON
	fx.getJSON(t, http.MethodGet, "/api/v1/cluster", http.StatusOK, &got)
	if got.Mode != "single" || got.Role != "single" || !got.Active || got.Members == nil || got.Peers == nil || got.Version != "test" {
		t.Fatalf("single: %+v", got)
	}

	cl := &fakeCluster{status: ops.ClusterStatus{
		Mode: ops.ModeGroup, Role: ops.RoleFollower, NodeID: "n2", Leader: "n1",
		Term: 3, LastIndex: 120, CommitIndex: 118, AppliedIndex: 110,
		Members: []ops.Member{{ID: "n1", Addr: "10.0.0.1:7000", Voter: true, Leader: true}, {ID: "n2", Addr: "10.0.0.2:7000", Voter: true}},
	}}
	fx = newFixture(t, func(c *ops.Config) { c.Cluster = cl })
	got = clusterJSON{}
	fx.getJSON(t, http.MethodGet, "/api/v1/cluster", http.StatusOK, &got)
	if got.Role != "follower" || got.Active || got.Term != 3 || got.CommitLag != 8 || len(got.Members) != 2 || !got.Members[0].Leader {
		t.Fatalf("group follower: %+v", got)
	}
	cl.err = errors.New("raft shut down")
	fx.wantError(t, http.MethodGet, "/api/v1/cluster", http.StatusInternalServerError, "raft shut down")
}

func TestUnavailableSources(t *testing.T) {
	fx := newFixture(t, func(c *ops.Config) { c.Tickets, c.Queues, c.Workers, c.Counters = nil, nil, nil, nil })
	for _, p := range []string{"/api/v1/tickets", "/api/v1/tickets/" + fx.done.String(), "/api/v1/services", "/api/v1/workers", "/api/v1/stats"} {
		fx.wantError(t, http.MethodGet, p, http.StatusServiceUnavailable, "not available")
	}
	fx.getJSON(t, http.MethodGet, "/api/v1/cluster", http.StatusOK, nil)
	fx.getJSON(t, http.MethodGet, "/api/v1/clients", http.StatusOK, nil)
	// No Submitter: POST answers 503, it does not pretend to submit.
	fx.wantError(t, http.MethodPost, "/api/v1/tickets", http.StatusServiceUnavailable, "submit not available")
}

func TestRouting(t *testing.T) {
	fx := newFixture(t, nil)
	// POST submits (TestSubmit); other writes are not allowed.
	fx.wantError(t, http.MethodPut, "/api/v1/tickets", http.StatusMethodNotAllowed, "PUT not allowed")
	fx.wantError(t, http.MethodPatch, "/api/v1/tickets", http.StatusMethodNotAllowed, "PATCH not allowed")
	fx.wantError(t, http.MethodPut, "/api/v1/tickets/"+fx.done.String(), http.StatusMethodNotAllowed, "not allowed")
	fx.wantError(t, http.MethodDelete, "/api/v1/services", http.StatusMethodNotAllowed, "not allowed")
	fx.wantError(t, http.MethodGet, "/api/v1/nothing", http.StatusNotFound, "no such endpoint")
	fx.wantError(t, http.MethodGet, "/api/v2/tickets", http.StatusNotFound, "no such endpoint")
	fx.wantError(t, http.MethodGet, "/api/v1/tickets/a/b", http.StatusNotFound, "no such endpoint")
	fx.wantError(t, http.MethodGet, "/api/v1/tickets/", http.StatusNotFound, "no such endpoint")
	if rec := fx.do(t, http.MethodGet, "/nothing.js"); rec.Code != http.StatusNotFound {
		t.Fatalf("unknown static file: %d", rec.Code)
	}
	if rec := fx.do(t, http.MethodPost, "/"); rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /: %d", rec.Code)
	}
}

func TestDashboardFiles(t *testing.T) {
	fx := newFixture(t, nil)
	for path, want := range map[string]string{
		"/":          "<title>titanic</title>",
		"/app.js":    "api/v1/",
		"/style.css": "--pending",
	} {
		rec := fx.do(t, http.MethodGet, path)
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), want) {
			t.Fatalf("GET %s: %d, body without %q", path, rec.Code, want)
		}
		csp := rec.Header().Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("GET %s: security headers %v", path, rec.Header())
		}
	}
}

func TestInFlightLimit(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	fx := newFixture(t, func(c *ops.Config) {
		c.MaxInFlight = 1
		c.Workers = workersFunc(func(ctx context.Context) ([]ops.ServiceWorkers, error) {
			entered <- struct{}{}
			<-release
			return nil, nil
		})
	})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if rec := fx.do(t, http.MethodGet, "/api/v1/workers"); rec.Code != http.StatusOK {
			t.Errorf("first request: %d", rec.Code)
		}
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("first request never reached the source")
	}
	rec := fx.do(t, http.MethodGet, "/api/v1/cluster")
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("request over the limit: %d %s", rec.Code, rec.Body)
	}
	// Health checks are never refused.
	if rec := fx.do(t, http.MethodGet, "/healthz"); rec.Code != http.StatusOK {
		t.Errorf("healthz over the limit: %d", rec.Code)
	}
	close(release)
	wg.Wait()
	if rec := fx.do(t, http.MethodGet, "/api/v1/cluster"); rec.Code != http.StatusOK {
		t.Fatalf("after the limit: %d", rec.Code)
	}
}

func TestRequestTimeout(t *testing.T) {
	fx := newFixture(t, func(c *ops.Config) {
		c.RequestTimeout = 20 * time.Millisecond
		c.Workers = workersFunc(func(ctx context.Context) ([]ops.ServiceWorkers, error) {
			<-ctx.Done()
			return nil, fmt.Errorf("broker stats: %w", ctx.Err())
		})
	})
	fx.wantError(t, http.MethodGet, "/api/v1/workers", http.StatusGatewayTimeout, "timed out")
}

type queueStatsFunc func(context.Context) (titanic.QueueStats, error)

func (f queueStatsFunc) QueueStats(ctx context.Context) (titanic.QueueStats, error) { return f(ctx) }

// TestQueueStats: /api/v1/queues serves the source's titanic.stats answer
// as it is, field for field, and 503 without a source.
func TestQueueStats(t *testing.T) {
	idle, busy := 1, 2
	want := titanic.QueueStats{Time: time.Unix(1_000_000, 0).UTC(), WindowSeconds: 10, Services: []titanic.ServiceQueue{
		{Service: "echo", Pending: 4, InFlight: 2, Done: 7, Failed: 1, Workers: 3, Idle: &idle, Busy: &busy, SubmitRate: 1.5, ReplyRate: 0.5},
		{Service: "resize", Pending: 1},
	}}
	fx := newFixture(t, func(c *ops.Config) {
		c.QueueStats = queueStatsFunc(func(context.Context) (titanic.QueueStats, error) { return want, nil })
	})
	var got titanic.QueueStats
	fx.getJSON(t, http.MethodGet, "/api/v1/queues", http.StatusOK, &got)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("queues = %+v, want %+v", got, want)
	}
	var raw struct {
		Services []map[string]any
	}
	fx.getJSON(t, http.MethodGet, "/api/v1/queues", http.StatusOK, &raw)
	if _, ok := raw.Services[1]["idle"]; ok || raw.Services[0]["in_flight"] != 2.0 || raw.Services[0]["submits_per_sec"] != 1.5 {
		t.Fatalf("queues JSON: %v", raw.Services)
	}

	fx = newFixture(t, nil)
	fx.wantError(t, http.MethodGet, "/api/v1/queues", http.StatusServiceUnavailable, "not available")
	fx = newFixture(t, func(c *ops.Config) {
		c.QueueStats = queueStatsFunc(func(context.Context) (titanic.QueueStats, error) {
			return titanic.QueueStats{}, errors.New("broker closed")
		})
	})
	fx.wantError(t, http.MethodGet, "/api/v1/queues", http.StatusInternalServerError, "broker closed")
}
