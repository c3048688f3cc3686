package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic"
)

// CSRFHeader is the custom header that, instead of a JSON Content-Type,
// lets a body-less POST through the cross-site check: neither an HTML form
// nor a CORS "simple request" can carry it.
const CSRFHeader = "X-Titanic-Request"

// crossSite refuses a state-changing request that a page of another site
// could have made a browser send. It returns false after answering.
//
// A cross-site page can POST an HTML form or fetch() a CORS "simple
// request" without asking this server first; both are limited to the
// form content types and the CORS-safelisted headers. So every POST must
// carry Content-Type application/json or CSRFHeader, which needs a CORS
// preflight, and this server never grants one (OPTIONS gets 405 with no
// Access-Control-* header). DELETE (close) always needs a preflight, so it
// takes neither. On top of that, net/http's CrossOriginProtection refuses
// requests that the browser marks as cross-origin (Sec-Fetch-Site, or an
// Origin that is not the Host), so that even a careless proxy adding CORS
// headers does not open the API. A token does not change this: a form
// cannot send the Authorization header, but the rules hold with or
// without one.
func (s *Server) crossSite(w http.ResponseWriter, r *http.Request, checkType bool) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	if err := s.origins.Check(r); err != nil {
		writeError(w, http.StatusForbidden, "cross-origin %s refused: %v", r.Method, err)
		return false
	}
	if r.Method == http.MethodDelete || !checkType {
		return true
	}
	if isJSON(r) || r.Header.Get(CSRFHeader) != "" {
		return true
	}
	writeError(w, http.StatusUnsupportedMediaType, "%s %s wants Content-Type: application/json (or a %s header), which no cross-site form can send",
		r.Method, r.URL.Path, CSRFHeader)
	return false
}

// guard wraps an API handler with crossSite; checkType false leaves the
// Content-Type to the handler (submit, which wants JSON only).
func (s *Server) guard(checkType bool, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.crossSite(w, r, checkType) {
			h(w, r)
		}
	}
}

// isJSON reports whether the request's media type is application/json.
func isJSON(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && strings.EqualFold(mt, "application/json")
}

// jobs returns the Jobs source, or answers 503 (no source) or 503 (not
// active: writes go to the node that serves) and returns nil.
func (s *Server) jobs(w http.ResponseWriter, write bool, what string) Jobs {
	if s.cfg.Jobs == nil {
		unavailable(w, what)
		return nil
	}
	if role, active := s.role(); write && !active {
		writeError(w, http.StatusServiceUnavailable, "not active: this node is %s; %s on the active node", role, what)
		return nil
	}
	return s.cfg.Jobs
}

// pathTicket parses the {id} of the path, or answers 400.
func pathTicket(w http.ResponseWriter, r *http.Request) (store.ID, bool) {
	id, err := store.ParseID(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return id, false
	}
	return id, true
}

// pathService reads the {service} of the path, or answers 400.
func pathService(w http.ResponseWriter, r *http.Request) (string, bool) {
	svc := r.PathValue("service")
	if svc == "" || len(svc) > 255 {
		writeError(w, http.StatusBadRequest, "service name must be 1 to 255 bytes")
		return "", false
	}
	return svc, true
}

type ticketState struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

// retryTicket: POST /api/v1/tickets/{id}/retry → {"id", "state": "pending"}.
func (s *Server) retryTicket(w http.ResponseWriter, r *http.Request) {
	id, ok := pathTicket(w, r)
	if !ok {
		return
	}
	jobs := s.jobs(w, true, "retry")
	if jobs == nil {
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	if err := jobs.Retry(ctx, id); err != nil {
		s.sourceError(w, r, "retry", err)
		return
	}
	s.log.Info("ticket retried over http", "ticket", id.String(), "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, ticketState{id.String(), store.StatePending.String()})
}

// cancelTicket: POST /api/v1/tickets/{id}/cancel, optional body
// {"reason": "..."} → {"id", "state": "cancelled"}.
func (s *Server) cancelTicket(w http.ResponseWriter, r *http.Request) {
	id, ok := pathTicket(w, r)
	if !ok {
		return
	}
	var req struct {
		Reason string `json:"reason"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, `cancel: want no body or {"reason": TEXT}: %v`, err)
		return
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, `cancel: want no body or one {"reason": TEXT}`)
		return
	}
	if len(req.Reason) > 1024 {
		writeError(w, http.StatusBadRequest, "cancel: reason longer than 1024 bytes")
		return
	}
	jobs := s.jobs(w, true, "cancel")
	if jobs == nil {
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	if err := jobs.Cancel(ctx, id, req.Reason); err != nil {
		s.sourceError(w, r, "cancel", err)
		return
	}
	s.log.Info("ticket cancelled over http", "ticket", id.String(), "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, ticketState{id.String(), store.StateCancelled.String()})
}

// attempts: GET /api/v1/tickets/{id}/attempts → {"id", "attempts": [...]}:
// the attempts that ended without a reply, oldest first.
func (s *Server) attempts(w http.ResponseWriter, r *http.Request) {
	id, ok := pathTicket(w, r)
	if !ok {
		return
	}
	jobs := s.jobs(w, false, "attempts")
	if jobs == nil {
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	as, err := jobs.Attempts(ctx, id)
	if err != nil {
		s.sourceError(w, r, "attempts", err)
		return
	}
	if as == nil {
		as = []titanic.AttemptJSON{}
	}
	writeJSON(w, http.StatusOK, struct {
		ID       string                `json:"id"`
		Attempts []titanic.AttemptJSON `json:"attempts"`
	}{id.String(), as})
}

// pause: POST /api/v1/services/{service}/pause or /resume →
// {"service", "paused"}.
func (s *Server) pause(pause bool) http.HandlerFunc {
	what := "resume"
	if pause {
		what = "pause"
	}
	return func(w http.ResponseWriter, r *http.Request) {
		svc, ok := pathService(w, r)
		if !ok {
			return
		}
		jobs := s.jobs(w, true, what)
		if jobs == nil {
			return
		}
		ctx, cancel := s.ctx(r)
		defer cancel()
		var err error
		if pause {
			err = jobs.Pause(ctx, svc)
		} else {
			err = jobs.Resume(ctx, svc)
		}
		if err != nil {
			s.sourceError(w, r, what, err)
			return
		}
		s.log.Info("service "+what+"d over http", "service", svc, "remote", r.RemoteAddr)
		writeJSON(w, http.StatusOK, struct {
			Service string `json:"service"`
			Paused  bool   `json:"paused"`
		}{svc, pause})
	}
}

// dead: GET /api/v1/dead?service=&after=&limit=&order= and GET
// /api/v1/services/{service}/dead: the dead set, tickets that failed for
// good, paged like GET /api/v1/tickets.
func (s *Server) dead(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if svc := r.PathValue("service"); svc != "" {
		q.Set("service", svc)
	}
	if st := q.Get("state"); st != "" && st != store.StateFailed.String() {
		writeError(w, http.StatusBadRequest, "the dead set holds failed tickets only")
		return
	}
	q.Set("state", store.StateFailed.String())
	r.URL.RawQuery = q.Encode()
	s.listTickets(w, r)
}

// bulkWorkers bounds the retries or closes of a bulk operation in flight
// at once: enough for the committer to batch them into few fsyncs, few
// enough not to fill its queue.
const bulkWorkers = 16

// bulkFailed applies op to every failed ticket of the {service} of the
// path, page by page, within the request's timeout: POST
// /api/v1/services/{service}/retry-failed and /purge answer {"service",
// "<done>": n, "complete": bool}; complete is false when the time ran out
// first (call again for the rest).
func (s *Server) bulkFailed(what, done string, op func(ctx context.Context, id store.ID) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		svc, ok := pathService(w, r)
		if !ok {
			return
		}
		if s.cfg.Tickets == nil {
			unavailable(w, "tickets")
			return
		}
		if role, active := s.role(); !active {
			writeError(w, http.StatusServiceUnavailable, "not active: this node is %s; %s on the active node", role, what)
			return
		}
		ctx, cancel := s.ctx(r)
		defer cancel()
		n, err := s.eachFailed(ctx, svc, op)
		complete := err == nil
		if errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil {
			err = nil // our own timeout: report the progress
		}
		if err != nil && n == 0 {
			s.sourceError(w, r, what, err)
			return
		}
		if err != nil {
			s.log.Warn(what+" stopped", "service", svc, "done", n, "err", err)
		}
		s.log.Info(what+" over http", "service", svc, done, n, "complete", complete, "remote", r.RemoteAddr)
		out := map[string]any{"service": svc, done: n, "complete": complete}
		if err != nil {
			out["error"] = err.Error()
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// eachFailed runs op on the service's failed tickets, at most bulkWorkers
// at once, and returns how many succeeded. Tickets that left the failed
// state meanwhile (op returns store.ErrNotFailed or store.ErrNotFound) are
// skipped; the first other error stops it.
func (s *Server) eachFailed(ctx context.Context, svc string, op func(ctx context.Context, id store.ID) error) (int, error) {
	var (
		mu    sync.Mutex
		n     int
		first error
	)
	sem := make(chan struct{}, bulkWorkers)
	var wg sync.WaitGroup
	defer wg.Wait()
	var after store.ID
	for {
		page, err := s.cfg.Tickets.List(ctx, Filter{Service: svc, State: store.StateFailed, After: after, Limit: MaxListLimit})
		if err != nil {
			wg.Wait()
			return n, fmt.Errorf("list failed tickets: %w", err)
		}
		for _, t := range page {
			if t.State != store.StateFailed {
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				wg.Wait()
				return n, ctx.Err()
			}
			mu.Lock()
			stop := first
			mu.Unlock()
			if stop != nil {
				<-sem
				wg.Wait()
				return n, stop
			}
			wg.Add(1)
			go func(id store.ID) {
				defer func() { <-sem; wg.Done() }()
				err := op(ctx, id)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					n++
				case errors.Is(err, store.ErrNotFailed), errors.Is(err, store.ErrNotFound):
				case first == nil:
					first = err
				}
			}(t.ID)
		}
		if len(page) < MaxListLimit {
			break
		}
		after = page[len(page)-1].ID
	}
	wg.Wait()
	return n, first
}

// retryFailed and purge are the bulk operations on a service's dead set.
func (s *Server) retryFailed(w http.ResponseWriter, r *http.Request) {
	if s.jobs(w, true, "retry-failed") == nil {
		return
	}
	s.bulkFailed("retry-failed", "retried", s.cfg.Jobs.Retry)(w, r)
}

// purge closes (deletes) every failed ticket of the service, each by a
// conditional close (Jobs.Purge): a ticket retried after the listing is
// left alone. It needs cluster version 3, as retry does; the dashboard
// asks for confirmation first.
func (s *Server) purge(w http.ResponseWriter, r *http.Request) {
	if s.jobs(w, true, "purge") == nil {
		return
	}
	s.bulkFailed("purge", "purged", s.cfg.Jobs.Purge)(w, r)
}
