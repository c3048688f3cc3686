package ops_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/ops"
)

// fakeJobs is an in-memory Jobs over a fakeTickets, with the store's
// rules: retry only a failed ticket, cancel only an unfinished one.
type fakeJobs struct {
	tickets  *fakeTickets
	mu       sync.Mutex
	paused   map[string]time.Time
	attempts map[store.ID][]titanic.AttemptJSON
	err      error // returned by every write when set
	calls    int
	// onRetry runs after a successful Retry (the browser test's worker).
	onRetry func(store.ID)
}

func newFakeJobs(t *fakeTickets) *fakeJobs {
	return &fakeJobs{tickets: t, paused: map[string]time.Time{}, attempts: map[store.ID][]titanic.AttemptJSON{}}
}

func (j *fakeJobs) write() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.calls++
	return j.err
}

func (j *fakeJobs) Retry(_ context.Context, id store.ID) error {
	if err := j.write(); err != nil {
		return err
	}
	f := j.tickets
	f.mu.Lock()
	t, ok := f.tickets[id]
	switch {
	case !ok:
		f.mu.Unlock()
		return fmt.Errorf("retry %s: %w", id, store.ErrNotFound)
	case t.State != store.StateFailed:
		f.mu.Unlock()
		return fmt.Errorf("retry %s (%s): %w", id, t.State, store.ErrNotFailed)
	}
	t.State, t.Attempts, t.Reason, t.Updated = store.StatePending, 0, "", time.Now()
	f.tickets[id] = t
	f.mu.Unlock()
	if j.onRetry != nil {
		j.onRetry(id)
	}
	return nil
}

// Purge closes the ticket only if it has failed, as the store's OpPurge.
func (j *fakeJobs) Purge(_ context.Context, id store.ID) error {
	if err := j.write(); err != nil {
		return err
	}
	f := j.tickets
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tickets[id]
	switch {
	case !ok:
		return fmt.Errorf("purge %s: %w", id, store.ErrNotFound)
	case t.State != store.StateFailed:
		return fmt.Errorf("purge %s (%s): %w", id, t.State, store.ErrNotFailed)
	}
	delete(f.tickets, id)
	delete(f.replies, id)
	f.closed = append(f.closed, id)
	return nil
}

func (j *fakeJobs) Cancel(_ context.Context, id store.ID, reason string) error {
	if err := j.write(); err != nil {
		return err
	}
	f := j.tickets
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tickets[id]
	switch {
	case !ok:
		return fmt.Errorf("cancel %s: %w", id, store.ErrNotFound)
	case t.State.Final():
		return fmt.Errorf("cancel %s (%s): %w", id, t.State, store.ErrFinal)
	}
	t.State, t.Reason = store.StateCancelled, "cancelled"
	if reason != "" {
		t.Reason = reason
	}
	f.tickets[id] = t
	return nil
}

func (j *fakeJobs) Pause(_ context.Context, service string) error {
	if err := j.write(); err != nil {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.paused[service] = time.Now()
	return nil
}

func (j *fakeJobs) Resume(_ context.Context, service string) error {
	if err := j.write(); err != nil {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.paused, service)
	return nil
}

func (j *fakeJobs) Attempts(_ context.Context, id store.ID) ([]titanic.AttemptJSON, error) {
	if _, _, err := j.tickets.Ticket(context.Background(), id); err != nil {
		return nil, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.attempts[id], nil
}

func (j *fakeJobs) Paused(context.Context) (map[string]time.Time, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make(map[string]time.Time, len(j.paused))
	for k, v := range j.paused {
		out[k] = v
	}
	return out, nil
}

func (j *fakeJobs) isPaused(service string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	_, ok := j.paused[service]
	return ok
}

// bodiesFunc is a Bodies from a function.
type bodiesFunc func(context.Context, store.ID) ([][]byte, error)

func (f bodiesFunc) Body(ctx context.Context, id store.ID) ([][]byte, error) { return f(ctx, id) }

// state returns a ticket's state in the fake ("" when gone).
func (f *fakeTickets) state(id store.ID) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tickets[id]
	if !ok {
		return ""
	}
	return t.State.String()
}

// send does a request with a body and headers (pairs) to the fixture.
func (fx *fixture) send(method, target, body string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	req.Host = "127.0.0.1:8080"
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	fx.srv.ServeHTTP(rec, req)
	return rec
}

// postJSON POSTs body as application/json and checks the status.
func (fx *fixture) postJSON(t *testing.T, target, body string, want int, v any) {
	t.Helper()
	rec := fx.send(http.MethodPost, target, body, "Content-Type", "application/json")
	if rec.Code != want {
		t.Fatalf("POST %s %s: status %d, want %d; body %s", target, body, rec.Code, want, rec.Body)
	}
	if v != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("POST %s: decode %s: %v", target, rec.Body, err)
		}
	}
}

func newJobsFixture(t *testing.T, edit func(*ops.Config)) (*fixture, *fakeJobs) {
	t.Helper()
	var jobs *fakeJobs
	fx := newFixture(t, func(c *ops.Config) {
		jobs = newFakeJobs(c.Tickets.(*fakeTickets))
		c.Jobs = jobs
		if edit != nil {
			edit(c)
		}
	})
	return fx, jobs
}

func TestRetryCancelAttempts(t *testing.T) {
	fx, jobs := newJobsFixture(t, nil)
	failed := fx.tickets.add("resize", store.StateFailed, fx.now, nil)
	start := fx.now.Add(-time.Minute).UTC().Truncate(time.Millisecond)
	jobs.attempts[failed] = []titanic.AttemptJSON{
		{Start: start, End: start.Add(1500 * time.Millisecond), Seconds: 1.5, Worker: "w-1", Outcome: "retried", Error: "exit status 3: boom"},
		{Start: start.Add(5 * time.Second), End: start.Add(6 * time.Second), Seconds: 1, Worker: "w-2", Outcome: "failed", Error: "exit status 3: boom"},
	}

	var as struct {
		ID       string
		Attempts []titanic.AttemptJSON
	}
	fx.getJSON(t, http.MethodGet, "/api/v1/tickets/"+failed.String()+"/attempts", http.StatusOK, &as)
	if as.ID != failed.String() || len(as.Attempts) != 2 || as.Attempts[0].Worker != "w-1" || as.Attempts[1].Outcome != "failed" ||
		!as.Attempts[0].Start.Equal(start) || as.Attempts[0].Error != "exit status 3: boom" {
		t.Fatalf("attempts = %+v", as)
	}
	fx.getJSON(t, http.MethodGet, "/api/v1/tickets/"+fx.pending.String()+"/attempts", http.StatusOK, &as)
	if as.Attempts == nil || len(as.Attempts) != 0 {
		t.Fatalf("attempts of a ticket without any: %+v, want an empty list", as)
	}
	fx.wantError(t, http.MethodGet, "/api/v1/tickets/"+store.NewID().String()+"/attempts", http.StatusNotFound, "unknown ticket")

	var st struct{ ID, State string }
	fx.postJSON(t, "/api/v1/tickets/"+failed.String()+"/retry", "", http.StatusOK, &st)
	if st.State != "pending" || fx.tickets.state(failed) != "pending" {
		t.Fatalf("retry answered %+v; ticket is %s", st, fx.tickets.state(failed))
	}
	fx.postJSON(t, "/api/v1/tickets/"+failed.String()+"/retry", "{}", http.StatusConflict, nil)
	fx.postJSON(t, "/api/v1/tickets/"+fx.done.String()+"/retry", "", http.StatusConflict, nil)
	fx.postJSON(t, "/api/v1/tickets/"+store.NewID().String()+"/retry", "", http.StatusNotFound, nil)
	fx.postJSON(t, "/api/v1/tickets/nope/retry", "", http.StatusBadRequest, nil)

	fx.postJSON(t, "/api/v1/tickets/"+fx.pending.String()+"/cancel", `{"reason":"wrong invoice"}`, http.StatusOK, &st)
	if st.State != "cancelled" || fx.tickets.state(fx.pending) != "cancelled" {
		t.Fatalf("cancel answered %+v; ticket is %s", st, fx.tickets.state(fx.pending))
	}
	var e struct{ Error string }
	fx.postJSON(t, "/api/v1/tickets/"+fx.done.String()+"/cancel", "", http.StatusConflict, &e)
	if !strings.Contains(e.Error, "finished") {
		t.Errorf("cancel of a done ticket: %q", e.Error)
	}
	fx.postJSON(t, "/api/v1/tickets/"+failed.String()+"/cancel", `{"why":1}`, http.StatusBadRequest, nil)
	fx.wantError(t, http.MethodGet, "/api/v1/tickets/"+failed.String()+"/cancel", http.StatusMethodNotAllowed, "not allowed")

	// The source's refusals.
	for _, tc := range []struct {
		err  error
		code int
		text string
	}{
		{&store.ClusterVersionError{Kind: store.OpRetry, Need: 3, Have: 2}, http.StatusBadRequest, "not supported: retry: "},
		{fmt.Errorf("%w: cluster", ops.ErrUnsupported), http.StatusBadRequest, "not supported: retry: "},
		{fmt.Errorf("%w: passive", ops.ErrNotActive), http.StatusServiceUnavailable, "not active"},
		{fmt.Errorf("%w: queue full", ops.ErrBusy), http.StatusServiceUnavailable, "busy"},
		{context.DeadlineExceeded, http.StatusGatewayTimeout, "timed out"},
	} {
		jobs.err = tc.err
		fx.postJSON(t, "/api/v1/tickets/"+failed.String()+"/retry", "", tc.code, &e)
		if !strings.Contains(e.Error, tc.text) {
			t.Errorf("retry failing with %v: %q, want %q", tc.err, e.Error, tc.text)
		}
	}
}

func TestPauseDeadRetryFailedPurge(t *testing.T) {
	fx, jobs := newJobsFixture(t, nil)
	var dead []store.ID
	for i := range 3 {
		dead = append(dead, fx.tickets.add("mail", store.StateFailed, fx.now.Add(time.Duration(i)*time.Millisecond), nil))
	}
	other := fx.tickets.add("mail", store.StateDone, fx.now, [][]byte{})

	var p struct {
		Service string
		Paused  bool
	}
	fx.postJSON(t, "/api/v1/services/mail/pause", "", http.StatusOK, &p)
	if !p.Paused || !jobs.isPaused("mail") {
		t.Fatalf("pause answered %+v", p)
	}
	var svcs struct {
		Services []struct {
			Name   string
			Paused bool
		}
	}
	fx.getJSON(t, http.MethodGet, "/api/v1/services", http.StatusOK, &svcs)
	for _, s := range svcs.Services {
		if s.Paused != (s.Name == "mail") {
			t.Errorf("service %s paused=%v", s.Name, s.Paused)
		}
	}
	// A name that needs escaping travels in one path segment.
	fx.postJSON(t, "/api/v1/services/a%2Fb%20c/pause", "", http.StatusOK, &p)
	if p.Service != "a/b c" || !jobs.isPaused("a/b c") {
		t.Fatalf("pause of an escaped name: %+v", p)
	}
	fx.postJSON(t, "/api/v1/services/mail/resume", "", http.StatusOK, &p)
	if p.Paused || jobs.isPaused("mail") {
		t.Fatalf("resume answered %+v", p)
	}

	var page struct {
		Tickets []struct{ ID, Service, State string }
		Next    string
	}
	fx.getJSON(t, http.MethodGet, "/api/v1/dead", http.StatusOK, &page)
	if len(page.Tickets) != 4 { // the fixture's failed "resize" ticket too
		t.Fatalf("dead set: %+v", page.Tickets)
	}
	fx.getJSON(t, http.MethodGet, "/api/v1/services/mail/dead?limit=2", http.StatusOK, &page)
	if len(page.Tickets) != 2 || page.Tickets[0].ID != dead[0].String() || page.Next != dead[1].String() {
		t.Fatalf("mail's dead set, first page: %+v", page)
	}
	for _, tk := range page.Tickets {
		if tk.Service != "mail" || tk.State != "failed" {
			t.Errorf("dead set holds %+v", tk)
		}
	}
	fx.wantError(t, http.MethodGet, "/api/v1/dead?state=done", http.StatusBadRequest, "failed tickets only")

	var bulk struct {
		Service  string
		Retried  int
		Purged   int
		Complete bool
	}
	fx.postJSON(t, "/api/v1/services/mail/retry-failed", "", http.StatusOK, &bulk)
	if bulk.Retried != 3 || !bulk.Complete {
		t.Fatalf("retry-failed: %+v", bulk)
	}
	for _, id := range dead {
		if st := fx.tickets.state(id); st != "pending" {
			t.Errorf("after retry-failed %s is %s", id, st)
		}
	}
	if st := fx.tickets.state(other); st != "done" {
		t.Errorf("retry-failed touched a done ticket: %s", st)
	}
	// Fail two again, then purge: they go, the others stay.
	for _, id := range dead[:2] {
		fx.tickets.mu.Lock()
		tk := fx.tickets.tickets[id]
		tk.State = store.StateFailed
		fx.tickets.tickets[id] = tk
		fx.tickets.mu.Unlock()
	}
	fx.postJSON(t, "/api/v1/services/mail/purge", "", http.StatusOK, &bulk)
	if bulk.Purged != 2 || !bulk.Complete {
		t.Fatalf("purge: %+v", bulk)
	}
	if fx.tickets.state(dead[0]) != "" || fx.tickets.state(dead[1]) != "" || fx.tickets.state(dead[2]) != "pending" || fx.tickets.state(other) != "done" {
		t.Fatalf("after purge: %q %q %q %q", fx.tickets.state(dead[0]), fx.tickets.state(dead[1]), fx.tickets.state(dead[2]), fx.tickets.state(other))
	}

	jobs.err = &store.ClusterVersionError{Kind: store.OpPause, Need: 3, Have: 2}
	var e struct{ Error string }
	fx.postJSON(t, "/api/v1/services/mail/pause", "", http.StatusBadRequest, &e)
	if !strings.HasPrefix(e.Error, "not supported: ") {
		t.Errorf("pause refused for the cluster version: %q", e.Error)
	}
	fx.tickets.add("mail", store.StateFailed, fx.now, nil)
	fx.postJSON(t, "/api/v1/services/mail/retry-failed", "", http.StatusBadRequest, &e)
	if !strings.HasPrefix(e.Error, "not supported: ") {
		t.Errorf("retry-failed refused for the cluster version: %q", e.Error)
	}
}

// Writes on a node that does not serve are refused before the source, and
// a node without the Jobs source answers 503.
func TestJobsNotActive(t *testing.T) {
	fx, jobs := newJobsFixture(t, func(c *ops.Config) {
		c.Cluster = &fakeCluster{status: ops.ClusterStatus{Mode: ops.ModeGroup, Role: ops.RoleFollower}}
	})
	for _, target := range []string{"/api/v1/tickets/" + fx.pending.String() + "/cancel", "/api/v1/services/echo/pause", "/api/v1/services/resize/retry-failed", "/api/v1/services/resize/purge"} {
		var e struct{ Error string }
		fx.postJSON(t, target, "", http.StatusServiceUnavailable, &e)
		if !strings.Contains(e.Error, "not active: this node is follower") {
			t.Errorf("POST %s on a follower: %q", target, e.Error)
		}
	}
	if jobs.calls != 0 || fx.tickets.state(fx.pending) != "pending" {
		t.Errorf("a follower's refusals reached the source: %d calls", jobs.calls)
	}
	// Reads are served by followers.
	fx.getJSON(t, http.MethodGet, "/api/v1/tickets/"+fx.pending.String()+"/attempts", http.StatusOK, nil)

	bare := newFixture(t, nil)
	bare.postJSON(t, "/api/v1/tickets/"+bare.pending.String()+"/retry", "", http.StatusServiceUnavailable, nil)
	bare.wantError(t, http.MethodGet, "/api/v1/tickets/"+bare.pending.String()+"/attempts", http.StatusServiceUnavailable, "not available")
}

// TestCrossSite: no state-changing endpoint can be driven by a cross-site
// HTML form or a CORS simple request, with or without a token; the same
// request as JSON is taken.
func TestCrossSite(t *testing.T) {
	for _, token := range []string{"", "s3cret"} {
		t.Run(fmt.Sprintf("token=%v", token != ""), func(t *testing.T) {
			sub := &fakeSubmitter{}
			fx, jobs := newJobsFixture(t, func(c *ops.Config) { c.Token = token; c.Submitter = sub })
			auth := []string{}
			if token != "" {
				auth = []string{"Authorization", "Bearer " + token}
			}
			failed := func() store.ID { return fx.tickets.add("mail", store.StateFailed, time.Now(), nil) }
			type endpoint struct {
				name   string
				target func() string
				body   string
				taken  func(target string) bool // whether the request had its effect
			}
			idOf := func(target string) store.ID {
				id, err := store.ParseID(strings.Split(target, "/")[4])
				if err != nil {
					t.Fatal(err)
				}
				return id
			}
			endpoints := []endpoint{
				{"submit", func() string { return "/api/v1/tickets" }, `{"service":"echo","body":"x"}`,
					func(string) bool { return sub.calls > 0 }},
				{"retry", func() string { return "/api/v1/tickets/" + failed().String() + "/retry" }, "",
					func(tg string) bool { return fx.tickets.state(idOf(tg)) == "pending" }},
				{"cancel", func() string {
					return "/api/v1/tickets/" + fx.tickets.add("echo", store.StatePending, time.Now(), nil).String() + "/cancel"
				}, "", func(tg string) bool { return fx.tickets.state(idOf(tg)) == "cancelled" }},
				{"pause", func() string { return "/api/v1/services/mail/pause" }, "",
					func(string) bool { return jobs.isPaused("mail") }},
				{"resume", func() string { _ = jobs.Pause(context.Background(), "mail"); return "/api/v1/services/mail/resume" }, "",
					func(string) bool { return !jobs.isPaused("mail") }},
				{"retry-failed", func() string { failed(); return "/api/v1/services/mail/retry-failed" }, "",
					func(string) bool { return countState(fx.tickets, "mail", store.StateFailed) == 0 }},
				{"purge", func() string { failed(); return "/api/v1/services/mail/purge" }, "",
					func(string) bool { return countState(fx.tickets, "mail", store.StateFailed) == 0 }},
			}
			for _, ep := range endpoints {
				for _, ct := range []string{"application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", ""} {
					sub.calls = 0
					tg := ep.target()
					body := ep.body
					if strings.HasPrefix(ct, "application/x-www") {
						body = "service=echo&body=x"
					}
					rec := fx.send(http.MethodPost, tg, body, append([]string{"Content-Type", ct}, auth...)...)
					if rec.Code != http.StatusUnsupportedMediaType {
						t.Errorf("%s: POST %q: %d %s, want 415", ep.name, ct, rec.Code, rec.Body)
					}
					if ep.taken(tg) {
						t.Errorf("%s: a POST with Content-Type %q had its effect", ep.name, ct)
					}
				}
				// A cross-origin JSON request (were CORS ever granted, or
				// from a browser that skips preflights) is refused too.
				for _, h := range [][]string{{"Origin", "https://evil.example"}, {"Sec-Fetch-Site", "cross-site"}} {
					sub.calls = 0
					tg := ep.target()
					rec := fx.send(http.MethodPost, tg, ep.body, append([]string{"Content-Type", "application/json", h[0], h[1]}, auth...)...)
					if rec.Code != http.StatusForbidden || ep.taken(tg) {
						t.Errorf("%s: cross-origin JSON POST (%s): %d %s, want 403 and no effect", ep.name, h[0], rec.Code, rec.Body)
					}
				}
				sub.calls = 0
				tg := ep.target()
				rec := fx.send(http.MethodPost, tg, ep.body, append([]string{"Content-Type", "application/json", "Origin", "http://127.0.0.1:8080", "Sec-Fetch-Site", "same-origin"}, auth...)...)
				if rec.Code/100 != 2 || !ep.taken(tg) {
					t.Errorf("%s: same-origin JSON POST: %d %s, want it taken", ep.name, rec.Code, rec.Body)
				}
				if ep.name != "submit" {
					tg = ep.target()
					rec = fx.send(http.MethodPost, tg, "", append([]string{ops.CSRFHeader, "1"}, auth...)...)
					if rec.Code/100 != 2 || !ep.taken(tg) {
						t.Errorf("%s: POST with %s: %d %s, want it taken", ep.name, ops.CSRFHeader, rec.Code, rec.Body)
					}
				}
				// A preflight never gets permission.
				rec = fx.send(http.MethodOptions, ep.target(), "", "Origin", "https://evil.example",
					"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type")
				if rec.Code/100 == 2 || rec.Header().Get("Access-Control-Allow-Origin") != "" || rec.Header().Get("Access-Control-Allow-Headers") != "" {
					t.Errorf("%s: preflight answered %d with %v", ep.name, rec.Code, rec.Header())
				}
			}
			// Close (DELETE) needs a preflight anyway; a cross-origin one is
			// refused, a form POST to the ticket is not a close.
			rec := fx.send(http.MethodDelete, "/api/v1/tickets/"+fx.done.String(), "", append([]string{"Origin", "https://evil.example"}, auth...)...)
			if rec.Code != http.StatusForbidden || fx.tickets.state(fx.done) != "done" {
				t.Errorf("cross-origin DELETE: %d %s", rec.Code, rec.Body)
			}
			for _, ct := range []string{"application/x-www-form-urlencoded", "text/plain"} {
				rec := fx.send(http.MethodPost, "/api/v1/tickets/"+fx.done.String(), "_method=DELETE", append([]string{"Content-Type", ct}, auth...)...)
				if rec.Code/100 == 2 || fx.tickets.state(fx.done) != "done" {
					t.Errorf("form POST to a ticket (%s): %d %s", ct, rec.Code, rec.Body)
				}
			}
			rec = fx.send(http.MethodDelete, "/api/v1/tickets/"+fx.done.String(), "", append([]string{"Content-Type", "application/json"}, auth...)...)
			if rec.Code != http.StatusOK || fx.tickets.state(fx.done) != "" {
				t.Errorf("JSON DELETE: %d %s, want the ticket closed", rec.Code, rec.Body)
			}
		})
	}
}

func countState(f *fakeTickets, service string, st store.State) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, t := range f.tickets {
		if t.Service == service && t.State == st {
			n++
		}
	}
	return n
}

func TestSubmitLifecycle(t *testing.T) {
	sub := &fakeSubmitter{}
	fx := newFixture(t, func(c *ops.Config) { c.Submitter = sub })
	before := time.Now()
	rec := postSubmit(fx, "application/json", `{"service":"echo","body":"x","delay":"30s","priority":"high","ttl":"1h","attempts":3,"backoff":"2s","backoff_max":"1m"}`)
	if rec.Code != http.StatusCreated {
		t.Fatalf("submit: %d %s", rec.Code, rec.Body)
	}
	after := time.Now()
	lc := sub.lc
	if lc.Priority != store.PriorityHigh || lc.Retry != (store.RetryPolicy{MaxAttempts: 3, Base: 2 * time.Second, Max: time.Minute}) {
		t.Errorf("lifecycle %+v", lc)
	}
	if lc.Due.Before(before.Add(30*time.Second)) || lc.Due.After(after.Add(30*time.Second)) {
		t.Errorf("due %v, want 30s after %v", lc.Due, before)
	}
	if lc.Deadline.Before(before.Add(time.Hour)) || lc.Deadline.After(after.Add(time.Hour)) {
		t.Errorf("deadline %v, want 1h after %v", lc.Deadline, before)
	}
	at := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	rec = postSubmit(fx, "application/json", `{"service":"echo","body":"x","at":"`+at.Format(time.RFC3339)+`","deadline":"`+at.Add(time.Hour).Format(time.RFC3339)+`","priority":"low"}`)
	if rec.Code != http.StatusCreated || !sub.lc.Due.Equal(at) || !sub.lc.Deadline.Equal(at.Add(time.Hour)) || sub.lc.Priority != store.PriorityLow {
		t.Fatalf("submit at: %d %s; lifecycle %+v", rec.Code, rec.Body, sub.lc)
	}
	postSubmit(fx, "application/json", `{"service":"echo","body":"x"}`)
	if !sub.lc.IsZero() {
		t.Errorf("a plain submit carries %+v", sub.lc)
	}
	calls := sub.calls
	for _, bad := range []string{
		`"delay":"soon"`, `"delay":"-1s"`, `"delay":"9000h"`, `"delay":"1s","at":"` + at.Format(time.RFC3339) + `"`,
		`"priority":"urgent"`, `"ttl":"0s"`, `"ttl":"1h","deadline":"` + at.Format(time.RFC3339) + `"`,
		`"deadline":"2001-01-01T00:00:00Z"`, `"delay":"2h","ttl":"1h"`, `"attempts":-1`, `"attempts":100000`,
		`"backoff":"1m","backoff_max":"1s"`, `"backoff":"forever"`, `"at":"tomorrow"`,
	} {
		if rec := postSubmit(fx, "application/json", `{"service":"echo","body":"x",`+bad+`}`); rec.Code != http.StatusBadRequest {
			t.Errorf("submit with %s: %d %s, want 400", bad, rec.Code, rec.Body)
		}
	}
	if sub.calls != calls {
		t.Errorf("refused lifecycles reached the Submitter")
	}
}

func TestTicketBody(t *testing.T) {
	var big store.ID
	fx := newFixture(t, func(c *ops.Config) {
		c.MaxReplyBytes = 8
		c.Bodies = bodiesFunc(func(_ context.Context, id store.ID) ([][]byte, error) {
			if id == big {
				return [][]byte{make([]byte, 9)}, nil
			}
			return [][]byte{[]byte("hi"), {0xff}}, nil
		})
	})
	big = fx.done
	var tk struct {
		Body        [][]byte
		BodyBytes   *int `json:"body_bytes"`
		BodyOmitted bool `json:"body_omitted"`
		Priority    string
	}
	fx.getJSON(t, http.MethodGet, "/api/v1/tickets/"+fx.pending.String(), http.StatusOK, &tk)
	if tk.Body != nil || tk.BodyBytes != nil || tk.Priority != "normal" {
		t.Fatalf("ticket without ?body=1: %+v", tk)
	}
	fx.getJSON(t, http.MethodGet, "/api/v1/tickets/"+fx.pending.String()+"?body=1", http.StatusOK, &tk)
	if len(tk.Body) != 2 || string(tk.Body[0]) != "hi" || *tk.BodyBytes != 3 || tk.BodyOmitted {
		t.Fatalf("ticket with ?body=1: %+v", tk)
	}
	tk.Body = nil
	fx.getJSON(t, http.MethodGet, "/api/v1/tickets/"+big.String()+"?body=1", http.StatusOK, &tk)
	if tk.Body != nil || *tk.BodyBytes != 9 || !tk.BodyOmitted {
		t.Fatalf("ticket with a body over the limit: %+v", tk)
	}
}

// The HTTP API and titanic.submit2 share one validator: each pair below
// is the same lifecycle in JSON and in submit2's options, and both doors
// take it or both refuse it, at the bounds too; the HTTP refusal names
// the JSON field.
func TestSubmitLifecycleOneValidator(t *testing.T) {
	sub := &fakeSubmitter{}
	fx := newFixture(t, func(c *ops.Config) { c.Submitter = sub })
	soon := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	tooFar := time.Now().Add(titanic.MaxScheduleAhead + time.Hour).UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		json, options string
		ok            bool
		names         string // in the HTTP refusal
	}{
		{`"delay":"8784h"`, "delay=8784h", true, ""}, // 366 days
		{`"delay":"8785h"`, "delay=8785h", false, `delay "8785h"`},
		{`"ttl":"8785h"`, "ttl=8785h", false, `ttl "8785h"`},
		{`"at":"` + tooFar + `"`, "at=" + tooFar, false, "at "},
		{`"deadline":"` + tooFar + `"`, "deadline=" + tooFar, false, "deadline "},
		{`"at":"` + soon + `"`, "at=" + soon, true, ""},
		{`"backoff":"24h"`, "backoff=24h", true, ""},
		{`"backoff":"25h"`, "backoff=25h", false, `backoff "25h"`},
		{`"backoff":"1s","backoff_max":"25h"`, "backoff=1s,25h", false, `backoff_max "25h"`},
		{`"backoff":"1m","backoff_max":"1s"`, "backoff=1m,1s", false, `backoff_max "1s": below the base`},
		{`"backoff":"0s"`, "backoff=0s", false, `backoff "0s"`},
		{`"ttl":"0s"`, "ttl=0s", false, `ttl "0s"`},
		{`"attempts":1000`, "attempts=1000", true, ""},
		{`"attempts":1001`, "attempts=1001", false, `attempts "1001"`},
		{`"attempts":-1`, "attempts=-1", false, `attempts "-1"`},
		{`"delay":"2h","ttl":"1h"`, "delay=2h ttl=1h", false, "not after the due time"},
		{`"delay":"1s","at":"` + soon + `"`, "delay=1s at=" + soon, false, "delay and at"},
	} {
		_, err := titanic.ParseSubmitOptions(tc.options, time.Now())
		if (err == nil) != tc.ok {
			t.Errorf("titanic.submit2 options %q: %v, want taken %v", tc.options, err, tc.ok)
		}
		rec := postSubmit(fx, "application/json", `{"service":"echo","body":"x",`+tc.json+`}`)
		switch {
		case tc.ok && rec.Code != http.StatusCreated:
			t.Errorf("HTTP submit with %s: %d %s, want 201 as titanic.submit2 takes it", tc.json, rec.Code, rec.Body)
		case !tc.ok && (rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), strings.ReplaceAll(tc.names, `"`, `\"`))):
			t.Errorf("HTTP submit with %s: %d %s, want 400 naming %s", tc.json, rec.Code, rec.Body, tc.names)
		}
	}
}
