package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// routes registers every endpoint. Methods are checked by the handlers,
// so that a wrong one gets a JSON 405.
func (s *Server) routes() error {
	api := func(pattern string, methods []string, h http.HandlerFunc) {
		s.mux.Handle(pattern, s.authorized(allow(methods, s.guard(true, h))))
	}
	get := []string{http.MethodGet, http.MethodHead}
	s.mux.Handle("/healthz", allow(get, s.healthz))
	s.mux.Handle("/metrics", s.authorized(allow(get, s.metrics.handler.ServeHTTP)))
	// submit checks its JSON Content-Type itself, after its source.
	s.mux.Handle("/api/v1/tickets", s.authorized(allow([]string{http.MethodGet, http.MethodHead, http.MethodPost}, s.guard(false, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			s.submit(w, r)
			return
		}
		s.listTickets(w, r)
	}))))
	api("/api/v1/tickets/{id}", []string{http.MethodGet, http.MethodHead, http.MethodDelete}, s.ticket)
	post := []string{http.MethodPost}
	api("/api/v1/tickets/{id}/retry", post, s.retryTicket)
	api("/api/v1/tickets/{id}/cancel", post, s.cancelTicket)
	api("/api/v1/tickets/{id}/attempts", get, s.attempts)
	api("/api/v1/dead", get, s.dead)
	api("/api/v1/services/{service}/dead", get, s.dead)
	api("/api/v1/services/{service}/pause", post, s.pause(true))
	api("/api/v1/services/{service}/resume", post, s.pause(false))
	api("/api/v1/services/{service}/retry-failed", post, s.retryFailed)
	api("/api/v1/services/{service}/purge", post, s.purge)
	api("/api/v1/services", get, s.services)
	api("/api/v1/workers", get, s.workers)
	api("/api/v1/clients", get, s.clients)
	api("/api/v1/cluster", get, s.cluster)
	api("/api/v1/stats", get, s.stats)
	api("/api/v1/queues", get, s.queueStats)
	api("/api/", nil, func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint %s", r.URL.Path)
	})
	dash, err := s.dashboard()
	if err != nil {
		return err
	}
	s.mux.Handle("/", allow(get, dash))
	return nil
}

// allow answers 405 to methods not in methods (none: any method).
func allow(methods []string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if methods != nil && !slices.Contains(methods, r.Method) {
			w.Header().Set("Allow", strings.Join(methods, ", "))
			writeError(w, http.StatusMethodNotAllowed, "method %s not allowed", r.Method)
			return
		}
		h(w, r)
	}
}

// errorBody is every error answer.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, errorBody{Error: fmt.Sprintf(format, args...)})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// sourceError answers the failure of a source call.
func (s *Server) sourceError(w http.ResponseWriter, r *http.Request, what string, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "unknown ticket")
	case errors.Is(err, ErrUnsupported), errors.Is(err, store.ErrClusterVersion):
		// The prefix is what the Go client and the CLI (exit 8) look for,
		// as in the 9/TSP extensions' answers.
		writeError(w, http.StatusBadRequest, "%s: %v", tsp.NotSupported.Text(what), err)
	case errors.Is(err, ErrBadRequest), errors.Is(err, store.ErrInvalidOp), errors.Is(err, store.ErrBadID):
		writeError(w, http.StatusBadRequest, "%s: %v", what, err)
	case errors.Is(err, store.ErrNotFailed):
		writeError(w, http.StatusConflict, "%s: only a failed ticket can be retried: %v", what, err)
	case errors.Is(err, store.ErrFinal):
		writeError(w, http.StatusConflict, "%s: the ticket is finished already: %v", what, err)
	case errors.Is(err, ErrConflict):
		writeError(w, http.StatusConflict, "%s: %v", what, err)
	case errors.Is(err, ErrNotActive):
		writeError(w, http.StatusServiceUnavailable, "%s: %v", what, err)
	case errors.Is(err, ErrBusy):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "%s: %v", what, err)
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, "%s: timed out", what)
	default:
		s.log.Warn("ops request failed", "path", r.URL.Path, "op", what, "err", err)
		writeError(w, http.StatusInternalServerError, "%s: %v", what, err)
	}
}

func unavailable(w http.ResponseWriter, what string) {
	writeError(w, http.StatusServiceUnavailable, "%s not available on this node", what)
}

func (s *Server) ctx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
}

// role returns this node's role and whether it serves.
func (s *Server) role() (string, bool) {
	if s.cfg.Cluster == nil {
		return RoleSingle, true
	}
	return s.cfg.Cluster.Role()
}

// healthz answers 200 "active" on the node that serves, 503 with its role
// otherwise; JSON when asked (Accept: application/json or ?format=json).
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	role, active := s.role()
	code, word := http.StatusOK, "active"
	if !active {
		code, word = http.StatusServiceUnavailable, role
		if word == "" || word == RoleActive || word == RoleLeader {
			word = string(tsp.NotActive) // a leader or active node not serving yet
		}
	}
	if r.URL.Query().Get("format") == "json" || strings.Contains(r.Header.Get("Accept"), "application/json") {
		writeJSON(w, code, struct {
			Status string `json:"status"`
			Role   string `json:"role"`
			Active bool   `json:"active"`
		}{word, role, active})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = fmt.Fprintln(w, word)
}

// ticketJSON is a ticket in API answers.
type ticketJSON struct {
	ID       string    `json:"id"`
	Service  string    `json:"service"`
	State    string    `json:"state"`
	Seq      uint64    `json:"seq"`
	Attempts int       `json:"attempts"`
	Reason   string    `json:"reason,omitempty"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	// Reply is set on GET /api/v1/tickets/{id} of a done ticket: its
	// frames, base64 (encoding/json's []byte form).
	Reply        [][]byte `json:"reply,omitzero"`
	ReplyBytes   *int     `json:"reply_bytes,omitempty"`
	ReplyOmitted bool     `json:"reply_omitted,omitempty"`
	// The lifecycle the submit asked for (absent: the defaults), and the
	// last attempt's start and worker when known.
	Priority    string     `json:"priority"`
	Due         *time.Time `json:"due,omitempty"`
	Deadline    *time.Time `json:"deadline,omitempty"`
	MaxAttempts int        `json:"max_attempts,omitempty"`
	Started     *time.Time `json:"started,omitempty"`
	Worker      string     `json:"worker,omitempty"`
	// Body is set on GET /api/v1/tickets/{id}?body=1: the request frames,
	// base64, unless over Config.MaxReplyBytes (BodyOmitted).
	Body        [][]byte `json:"body,omitzero"`
	BodyBytes   *int     `json:"body_bytes,omitempty"`
	BodyOmitted bool     `json:"body_omitted,omitempty"`
}

func toJSON(t store.Ticket) ticketJSON {
	utc := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		t = t.UTC()
		return &t
	}
	return ticketJSON{
		ID: t.ID.String(), Service: t.Service, State: t.State.String(), Seq: t.Seq,
		Attempts: t.Attempts, Reason: t.Reason, Created: t.Created.UTC(), Updated: t.Updated.UTC(),
		Priority: t.Priority.String(), Due: utc(t.Due), Deadline: utc(t.Deadline), MaxAttempts: t.Retry.MaxAttempts,
		Started: utc(t.Started), Worker: t.Worker,
	}
}

// frameBytes is the size of frames' content.
func frameBytes(frames [][]byte) int {
	n := 0
	for _, f := range frames {
		n += len(f)
	}
	return n
}

// parseFilter reads service=, state=, after=, limit= and order=.
func parseFilter(q map[string][]string) (Filter, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	f := Filter{Service: get("service"), Limit: DefaultListLimit}
	if len(f.Service) > 256 {
		return f, errors.New("service name longer than 256 bytes")
	}
	if v := get("state"); v != "" && v != "all" {
		st, err := store.ParseState(v)
		if err != nil {
			return f, err
		}
		f.State = st
	}
	if v := get("after"); v != "" {
		id, err := store.ParseID(v)
		if err != nil {
			return f, fmt.Errorf("after: %w", err)
		}
		f.After = id
	}
	if v := get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxListLimit {
			return f, fmt.Errorf("limit %q: want 1 to %d", v, MaxListLimit)
		}
		f.Limit = n
	}
	switch get("order") {
	case "", "oldest":
	case "newest":
		f.Newest = true
	default:
		return f, fmt.Errorf("order %q: want oldest or newest", get("order"))
	}
	return f, nil
}

// listTickets: GET /api/v1/tickets → {"tickets": [...], "next": cursor}.
// next is the after= of the following page, "" on the last page.
func (s *Server) listTickets(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Tickets == nil {
		unavailable(w, "tickets")
		return
	}
	f, err := parseFilter(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	ts, err := s.cfg.Tickets.List(ctx, f)
	if err != nil {
		s.sourceError(w, r, "list tickets", err)
		return
	}
	if len(ts) > f.Limit {
		ts = ts[:f.Limit]
	}
	out := struct {
		Tickets []ticketJSON `json:"tickets"`
		Next    string       `json:"next"`
	}{Tickets: make([]ticketJSON, 0, len(ts))}
	for _, t := range ts {
		out.Tickets = append(out.Tickets, toJSON(t))
	}
	if len(ts) == f.Limit {
		out.Next = ts[len(ts)-1].ID.String()
	}
	writeJSON(w, http.StatusOK, out)
}

// ticket: GET (status, and reply when done) or DELETE (close) one ticket.
func (s *Server) ticket(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Tickets == nil {
		unavailable(w, "tickets")
		return
	}
	id, err := store.ParseID(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	if r.Method == http.MethodDelete {
		s.closeTicket(ctx, w, r, id)
		return
	}
	t, reply, err := s.cfg.Tickets.Ticket(ctx, id)
	if err != nil {
		s.sourceError(w, r, "get ticket", err)
		return
	}
	out := toJSON(t)
	if r.URL.Query().Get("body") == "1" && s.cfg.Bodies != nil {
		body, err := s.cfg.Bodies.Body(ctx, id)
		if err != nil {
			s.sourceError(w, r, "get ticket body", err)
			return
		}
		n := frameBytes(body)
		out.BodyBytes = &n
		if n <= s.cfg.MaxReplyBytes {
			out.Body = body
		} else {
			out.BodyOmitted = true
		}
	}
	if t.State == store.StateDone && reply != nil {
		n := frameBytes(reply)
		out.ReplyBytes = &n
		if n <= s.cfg.MaxReplyBytes {
			out.Reply = reply
		} else {
			out.ReplyOmitted = true
		}
		if out.Reply == nil && !out.ReplyOmitted {
			out.Reply = [][]byte{}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// submitRequest is the JSON of POST /api/v1/tickets: the body as text
// (Body) or as base64 (BodyBase64), one frame; or Frames, several.
type submitRequest struct {
	Service    string   `json:"service"`
	Body       *string  `json:"body"`
	BodyBase64 []byte   `json:"body_base64"`
	Frames     [][]byte `json:"frames"`
	Key        string   `json:"key"`
	// The job lifecycle (all optional): Delay (a Go duration, "30s") or
	// At (RFC 3339): not dispatched before; Priority: high, normal or
	// low; TTL (a duration from now) or Deadline (RFC 3339): fails as
	// expired if not dispatched by then; Attempts: dispatches at most (a
	// pointer, so that "attempts": 0 is refused, as titanic.submit2's
	// attempts=0 is, not taken for the field left out); Backoff and
	// BackoffMax: the exponential backoff's first and largest wait
	// between attempts.
	Delay      string     `json:"delay"`
	At         *time.Time `json:"at"`
	Priority   string     `json:"priority"`
	TTL        string     `json:"ttl"`
	Deadline   *time.Time `json:"deadline"`
	Attempts   *int       `json:"attempts"`
	Backoff    string     `json:"backoff"`
	BackoffMax string     `json:"backoff_max"`
}

// lifecycle checks the request's lifecycle fields and makes them absolute
// from now, with titanic.CheckLifecycle (the same validator and bounds as
// titanic.submit2's options), its errors naming the JSON fields.
func (req *submitRequest) lifecycle(now time.Time) (store.Lifecycle, error) {
	opt := func(name, v string) titanic.LifecycleOption { return titanic.LifecycleOption{Name: name, Value: v} }
	when := func(name string, t *time.Time) titanic.LifecycleOption {
		if t == nil {
			return titanic.LifecycleOption{}
		}
		return opt(name, t.Format(time.RFC3339Nano))
	}
	o := titanic.LifecycleOptions{
		Delay:      opt("delay", req.Delay),
		At:         when("at", req.At),
		Priority:   opt("priority", req.Priority),
		TTL:        opt("ttl", req.TTL),
		Deadline:   when("deadline", req.Deadline),
		Backoff:    opt("backoff", req.Backoff),
		BackoffMax: opt("backoff_max", req.BackoffMax),
	}
	if req.Attempts != nil { // left out (or null): the default
		o.Attempts = opt("attempts", strconv.Itoa(*req.Attempts))
	}
	return titanic.CheckLifecycle(o, now)
}

// submit: POST /api/v1/tickets → 201 {"id", "duplicate"}. Only with a JSON
// Content-Type: a cross-site HTML form cannot send one, and a cross-site
// script sending one needs a CORS preflight, which this server never
// grants; with a token, only its holders submit.
func (s *Server) submit(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Submitter == nil {
		unavailable(w, "submit")
		return
	}
	if !isJSON(r) {
		writeError(w, http.StatusUnsupportedMediaType, "submit wants Content-Type: application/json")
		return
	}
	var req submitRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "submit: request over %d bytes (submit larger bodies over 9/TSP)", tooLarge.Limit)
			return
		}
		writeError(w, http.StatusBadRequest, "submit: %v", err)
		return
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		// Trailing data (a second object, garbage) was dropped and the
		// first submitted (found by an outside-in tester).
		writeError(w, http.StatusBadRequest, "submit: want one JSON object, found more after it")
		return
	}
	var body [][]byte
	n := 0
	if req.Body != nil {
		body, n = [][]byte{[]byte(*req.Body)}, n+1
	}
	if req.BodyBase64 != nil {
		body, n = [][]byte{req.BodyBase64}, n+1
	}
	if req.Frames != nil {
		body, n = req.Frames, n+1
	}
	if n != 1 || req.Service == "" || len(body) == 0 {
		writeError(w, http.StatusBadRequest, `submit: want {"service": NAME} and one of "body" (text), "body_base64" or "frames" (a list of base64 frames, at least one)`)
		return
	}
	if len(body) > tsp.MaxBodyFrames {
		// No worker could receive it: the job would never run.
		writeError(w, http.StatusBadRequest, "submit: %d frames: at most %d", len(body), tsp.MaxBodyFrames)
		return
	}
	lc, err := req.lifecycle(time.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, "submit: %v", err)
		return
	}
	if role, active := s.role(); !active {
		writeError(w, http.StatusServiceUnavailable, "not active: this node is %s; submit on the active node", role)
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	id, dup, err := s.cfg.Submitter.Submit(ctx, req.Service, body, req.Key, lc)
	if err != nil {
		s.sourceError(w, r, "submit", err)
		return
	}
	code := http.StatusCreated
	if dup {
		code = http.StatusOK // nothing created: the ticket of the first submit
	}
	writeJSON(w, code, struct {
		ID        string `json:"id"`
		Duplicate bool   `json:"duplicate"`
	}{id, dup})
}

func (s *Server) closeTicket(ctx context.Context, w http.ResponseWriter, r *http.Request, id store.ID) {
	if role, active := s.role(); !active {
		writeError(w, http.StatusServiceUnavailable, "not active: this node is %s; close the ticket on the active node", role)
		return
	}
	if err := s.cfg.Tickets.Close(ctx, id); err != nil {
		s.sourceError(w, r, "close ticket", err)
		return
	}
	s.log.Info("ticket closed over http", "ticket", id.String(), "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, struct {
		ID     string `json:"id"`
		Closed bool   `json:"closed"`
	}{id.String(), true})
}

// serviceJSON is one service in GET /api/v1/services: its store queue and
// its workers merged.
type serviceJSON struct {
	Name    string `json:"name"`
	Pending int    `json:"pending"`
	// Delayed: of the pending, those not due yet (not waiting for a
	// worker).
	Delayed          int        `json:"delayed"`
	Dispatched       int        `json:"dispatched"`
	Done             int        `json:"done"`
	Failed           int        `json:"failed"`
	Cancelled        int        `json:"cancelled"`
	Oldest           *time.Time `json:"oldest"`
	OldestAgeSeconds float64    `json:"oldest_age_seconds"`
	Workers          int        `json:"workers"`
	Idle             int        `json:"idle"`
	Busy             int        `json:"busy"`
	Requests         int        `json:"requests"`
	// Paused: its tickets are taken, not dispatched (POST .../pause).
	Paused bool `json:"paused"`
}

// serviceList merges Queues and Workers, sorted by name. Missing sources
// give no rows; errors are returned. At most Config.MaxServices rows are
// returned, the paused services and those with the most tickets
// (bound.go); other sums the rest under OtherService, and omitted
// counts them (0 and nil when none is left out).
func (s *Server) serviceList(ctx context.Context, now time.Time) (list []serviceJSON, other *serviceJSON, omitted int, err error) {
	byName := map[string]*serviceJSON{}
	row := func(name string) *serviceJSON {
		if v, ok := byName[name]; ok {
			return v
		}
		v := &serviceJSON{Name: name}
		byName[name] = v
		return v
	}
	if s.cfg.Queues != nil {
		qs, err := s.cfg.Queues.Queues(ctx)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("queues: %w", err)
		}
		for _, q := range qs {
			v := row(q.Service)
			v.Pending, v.Delayed, v.Dispatched, v.Done, v.Failed, v.Cancelled = q.Pending, q.Delayed, q.Dispatched, q.Done, q.Failed, q.Cancelled
			if !q.Oldest.IsZero() {
				t := q.Oldest.UTC()
				v.Oldest = &t
				v.OldestAgeSeconds = max(0, now.Sub(q.Oldest).Seconds())
			}
		}
	}
	if s.cfg.Workers != nil {
		ws, err := s.cfg.Workers.Workers(ctx)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("workers: %w", err)
		}
		for _, sw := range ws {
			v := row(sw.Service)
			v.Workers, v.Idle, v.Busy, v.Requests = sw.Workers, sw.Idle, sw.Busy, sw.Requests
		}
	}
	if s.cfg.Jobs != nil {
		paused, err := s.cfg.Jobs.Paused(ctx)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("paused services: %w", err)
		}
		for name := range paused {
			row(name).Paused = true
		}
	}
	all := make([]serviceJSON, 0, len(byName))
	for _, v := range byName {
		all = append(all, *v)
	}
	out, rest := topServices(all, s.cfg.maxServices(), func(v *serviceJSON) rank {
		return rank{name: v.Name, pinned: v.Paused, weight: v.Pending + v.Dispatched + v.Done + v.Failed + v.Cancelled + v.Workers + v.Requests}
	})
	slices.SortFunc(out, func(a, b serviceJSON) int { return strings.Compare(a.Name, b.Name) })
	if len(rest) == 0 {
		return out, nil, 0, nil
	}
	// The sum of the rest; its oldest is the oldest of theirs.
	o := &serviceJSON{Name: OtherService}
	for _, v := range rest {
		o.Pending += v.Pending
		o.Delayed += v.Delayed
		o.Dispatched += v.Dispatched
		o.Done += v.Done
		o.Failed += v.Failed
		o.Cancelled += v.Cancelled
		o.Workers += v.Workers
		o.Idle += v.Idle
		o.Busy += v.Busy
		o.Requests += v.Requests
		if v.Oldest != nil && (o.Oldest == nil || v.Oldest.Before(*o.Oldest)) {
			o.Oldest, o.OldestAgeSeconds = v.Oldest, v.OldestAgeSeconds
		}
	}
	return out, o, len(rest), nil
}

// services: GET /api/v1/services → {"services": [...]}.
func (s *Server) services(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Queues == nil && s.cfg.Workers == nil {
		unavailable(w, "services")
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	list, other, omitted, err := s.serviceList(ctx, time.Now())
	if err != nil {
		s.sourceError(w, r, "services", err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Services []serviceJSON `json:"services"`
		// Omitted counts the services left out of the list (beyond
		// Config.MaxServices), Other their sum.
		Omitted int          `json:"omitted"`
		Other   *serviceJSON `json:"other,omitempty"`
	}{list, omitted, other})
}

// workers: GET /api/v1/workers → {"workers": [...], "total": n}.
func (s *Server) workers(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Workers == nil {
		unavailable(w, "workers")
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	ws, err := s.cfg.Workers.Workers(ctx)
	if err != nil {
		s.sourceError(w, r, "workers", err)
		return
	}
	type row struct {
		Service  string `json:"service"`
		Workers  int    `json:"workers"`
		Idle     int    `json:"idle"`
		Busy     int    `json:"busy"`
		Requests int    `json:"requests"`
	}
	out := struct {
		Workers []row `json:"workers"`
		Total   int   `json:"total"`
	}{Workers: make([]row, 0, len(ws))}
	for _, sw := range ws {
		out.Workers = append(out.Workers, row(sw))
		out.Total += sw.Workers
	}
	slices.SortFunc(out.Workers, func(a, b row) int { return strings.Compare(a.Service, b.Service) })
	writeJSON(w, http.StatusOK, out)
}

// clients: GET /api/v1/clients → {"clients": [...], "total": n,
// "tracked": bool}; tracked is false (and the list empty) when presence
// is not wired.
func (s *Server) clients(w http.ResponseWriter, r *http.Request) {
	type row struct {
		ID    string    `json:"id"`
		Addr  string    `json:"addr,omitempty"`
		Since time.Time `json:"since"`
		Seen  time.Time `json:"seen"`
	}
	out := struct {
		Clients []row `json:"clients"`
		Total   int   `json:"total"`
		Tracked bool  `json:"tracked"`
	}{Clients: []row{}}
	if s.cfg.Clients != nil {
		ctx, cancel := s.ctx(r)
		defer cancel()
		cs, total, err := s.cfg.Clients.Clients(ctx, MaxClients)
		if err != nil {
			s.sourceError(w, r, "clients", err)
			return
		}
		if len(cs) > MaxClients {
			cs = cs[:MaxClients]
		}
		for _, c := range cs {
			out.Clients = append(out.Clients, row{c.ID, c.Addr, c.Since.UTC(), c.Seen.UTC()})
		}
		out.Total, out.Tracked = max(total, len(out.Clients)), true
	}
	writeJSON(w, http.StatusOK, out)
}

// clusterJSON is GET /api/v1/cluster.
type clusterJSON struct {
	Mode         string       `json:"mode"`
	Role         string       `json:"role"`
	Active       bool         `json:"active"`
	NodeID       string       `json:"node_id"`
	Leader       string       `json:"leader"`
	Term         uint64       `json:"term"`
	LastIndex    uint64       `json:"last_index"`
	CommitIndex  uint64       `json:"commit_index"`
	AppliedIndex uint64       `json:"applied_index"`
	CommitLag    uint64       `json:"commit_lag"`
	Members      []memberJSON `json:"members"`
	Peers        []peerJSON   `json:"peers"`
	Version      string       `json:"version"`
}

type memberJSON struct {
	ID     string `json:"id"`
	Addr   string `json:"addr"`
	Voter  bool   `json:"voter"`
	Leader bool   `json:"leader"`
}

type peerJSON struct {
	Name     string `json:"name"`
	Addr     string `json:"addr"`
	State    string `json:"state"`
	Alive    bool   `json:"alive"`
	Capacity int    `json:"capacity"`
}

// clusterStatus returns the Cluster's status, or the single-node one.
func (s *Server) clusterStatus(ctx context.Context) (ClusterStatus, error) {
	if s.cfg.Cluster == nil {
		return ClusterStatus{Mode: ModeSingle, Role: RoleSingle, Active: true}, nil
	}
	return s.cfg.Cluster.Status(ctx)
}

// commitLag is how many committed raft entries this node has not applied
// to its store yet.
func commitLag(st ClusterStatus) uint64 {
	if st.CommitIndex > st.AppliedIndex {
		return st.CommitIndex - st.AppliedIndex
	}
	return 0
}

func (s *Server) cluster(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.ctx(r)
	defer cancel()
	st, err := s.clusterStatus(ctx)
	if err != nil {
		s.sourceError(w, r, "cluster status", err)
		return
	}
	out := clusterJSON{
		Mode: st.Mode, Role: st.Role, Active: st.Active, NodeID: st.NodeID, Leader: st.Leader,
		Term: st.Term, LastIndex: st.LastIndex, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex,
		CommitLag: commitLag(st), Members: []memberJSON{}, Peers: []peerJSON{}, Version: s.cfg.Version,
	}
	for _, m := range st.Members {
		out.Members = append(out.Members, memberJSON(m))
	}
	for _, p := range st.Peers {
		out.Peers = append(out.Peers, peerJSON(p))
	}
	writeJSON(w, http.StatusOK, out)
}

// stats: GET /api/v1/stats → the titanic service's counters.
func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Counters == nil {
		unavailable(w, "stats")
		return
	}
	c := s.cfg.Counters.Counters()
	writeJSON(w, http.StatusOK, struct {
		Submits        uint64 `json:"submits"`
		Duplicates     uint64 `json:"duplicates"`
		Closes         uint64 `json:"closes"`
		Lookups        uint64 `json:"lookups"`
		Dispatches     uint64 `json:"dispatches"`
		Redeliveries   uint64 `json:"redeliveries"`
		Replies        uint64 `json:"replies"`
		LateReplies    uint64 `json:"late_replies"`
		Failures       uint64 `json:"failures"`
		Busy           uint64 `json:"busy"`
		BadRequests    uint64 `json:"bad_requests"`
		Commits        uint64 `json:"commits"`
		CommittedOps   uint64 `json:"committed_ops"`
		CommitErrors   uint64 `json:"commit_errors"`
		VerdictRetries uint64 `json:"verdict_retries"`
		Leased         int    `json:"leased"`
	}{c.Submits, c.Duplicates, c.Closes, c.Lookups, c.Dispatches, c.Redeliveries, c.Replies, c.LateReplies,
		c.Failures, c.Busy, c.BadRequests, c.Commits, c.CommittedOps, c.CommitErrors, c.VerdictRetries, c.Leased})
}

// queueStats: GET /api/v1/queues → the titanic.stats answer, the JSON
// that `titanic stats --json` prints: {"time", "window_seconds",
// "services": [{"service", "pending", "delayed", "in_flight", "done",
// "failed", "workers", "idle", "busy", "submits_per_sec",
// "replies_per_sec"}]}. As /api/v1/services, it lists at most
// Config.MaxServices services, the paused ones and those with the most
// tickets and workers (bound.go); "omitted" counts the rest and "other"
// is their sum, named OtherService (absent when none is left out).
func (s *Server) queueStats(w http.ResponseWriter, r *http.Request) {
	if s.cfg.QueueStats == nil {
		unavailable(w, "queues")
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	st, err := s.cfg.QueueStats.QueueStats(ctx)
	if err != nil {
		s.sourceError(w, r, "queues", err)
		return
	}
	var (
		other   *titanic.ServiceQueue
		omitted int
	)
	st.Services, other, omitted = boundQueues(st.Services, s.cfg.maxServices())
	writeJSON(w, http.StatusOK, struct {
		titanic.QueueStats
		Omitted int                   `json:"omitted"`
		Other   *titanic.ServiceQueue `json:"other,omitempty"`
	}{st, omitted, other})
}

// boundQueues keeps at most n of qs, in their order (bound.go's
// topServices), and sums the rest under OtherService; omitted counts them.
func boundQueues(qs []titanic.ServiceQueue, n int) (kept []titanic.ServiceQueue, other *titanic.ServiceQueue, omitted int) {
	top, rest := topServices(qs, n, func(q *titanic.ServiceQueue) rank {
		return rank{name: q.Service, pinned: q.Paused, weight: q.Pending + q.InFlight + q.Done + q.Failed + q.Workers}
	})
	if len(rest) == 0 {
		return qs, nil, 0
	}
	in := make(map[string]bool, len(top))
	for _, q := range top {
		in[q.Service] = true
	}
	kept = make([]titanic.ServiceQueue, 0, len(top))
	for _, q := range qs {
		if in[q.Service] {
			kept = append(kept, q)
		}
	}
	o := &titanic.ServiceQueue{Service: OtherService}
	add := func(sum **int, v *int) {
		if v != nil {
			if *sum == nil {
				*sum = new(int)
			}
			**sum += *v
		}
	}
	for _, q := range rest {
		o.Pending += q.Pending
		o.Delayed += q.Delayed
		o.InFlight += q.InFlight
		o.Done += q.Done
		o.Failed += q.Failed
		o.Workers += q.Workers
		add(&o.Idle, q.Idle)
		add(&o.Busy, q.Busy)
		o.SubmitRate += q.SubmitRate
		o.ReplyRate += q.ReplyRate
	}
	return kept, o, len(rest)
}
