package titanic

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// Deactivate drops the dispatcher's state: this node is no longer the one
// that serves (it lost raft leadership or Binary Star made it passive).
// What workers held is redelivered by the node that takes over; commits
// still in flight fail there and their clients retry.
func (s *Service) Deactivate() {
	s.active.Store(false)
	s.d.reset(s.cfg.Now())
	s.tally.mu.Lock()
	for _, v := range s.tally.svcs {
		v.done, v.failed = 0, 0 // read again from the store on Activate
	}
	s.tally.mu.Unlock()
	s.look.expireWaits(true)
	s.log.Info("dispatcher deactivated")
}

// Activate makes this node the one that dispatches: it waits until the
// replicated log is applied locally (store.Leadership's Barrier, when the
// store is replicated), then rebuilds the queues from the store. Tickets
// that were dispatched on the previous active node are queued again, so
// they are redelivered.
func (s *Service) Activate(ctx context.Context) error {
	start := time.Now()
	if s.leader != nil {
		if err := s.leader.Barrier(ctx); err != nil {
			return fmt.Errorf("activate: %w", err)
		}
	}
	s.d.reset(s.cfg.Now())
	if err := s.Recover(ctx); err != nil {
		return fmt.Errorf("activate: %w", err)
	}
	s.log.Info("dispatcher activated", "took", time.Since(start).Round(time.Millisecond))
	for _, svc := range s.d.services() {
		s.b.Wake(svc)
	}
	return nil
}

// Refusal is the answer of a node that is not active to a 9/TSP request:
// 500 (retry later, 9/TSP) with a text saying why. This project's client
// moves on to the next broker at once when it sees it; other clients
// retry, or time out and fail over.
func Refusal(service string) [][]byte {
	if len(service) >= len(tsp.Prefix) && service[:len(tsp.Prefix)] == tsp.Prefix {
		// The bare token: the first release's client compares the frame
		// with "not active" exactly.
		return replyText(tsp.CodeError, string(tsp.NotActive))
	}
	return nil
}

// Idle reports whether nothing the service accepted is still waiting to be
// committed or looked up, so a draining broker may stop without leaving a
// client unanswered (parked titanic.wait requests are answered when the
// service stops).
func (s *Service) Idle() bool {
	return s.commits.idle() && s.look.idle()
}

// ErrNotActive: this node does not serve (replicated modes).
var ErrNotActive = errors.New(string(tsp.NotActive))

// Close closes a ticket for an operator (the HTTP API): as titanic.close,
// but waiting for the outcome. It returns an error wrapping
// store.ErrNotFound when no such ticket existed, ErrNotActive on a node that
// does not serve, errBusy-like errors when the commit queue is full, and
// ctx.Err() when ctx ends first (the close may still happen).
func (s *Service) Close(ctx context.Context, id store.ID) error {
	if !s.active.Load() {
		return ErrNotActive
	}
	done := make(chan error, 1)
	op := store.Op{Kind: store.OpClose, ID: id, Time: s.cfg.Now()}
	err := s.enqueue(pendingOp{op: op, client: true, done: func(res store.Result, batchErr error) {
		switch {
		case batchErr != nil:
			done <- batchErr
		case !res.Existed:
			done <- fmt.Errorf("close %s: %w", id, elsewhere(s.cfg, id, store.ErrNotFound))
		default:
			s.forgetResult(res)
			s.tallyClose(res)
			s.stats.closes.Add(1)
			s.closed(id, res.Service)
			done <- nil
		}
	}})
	if err != nil {
		return fmt.Errorf("close %s: %w", id, err)
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// httpClient is the limits' account of submits made through Submit (the
// HTTP API): one client, the zero route, which no ZeroMQ peer has.
var httpClient broker.Client

// Submit stores a new ticket as titanic.submit (key non-empty) or
// titanic.request does over 9/TSP, with the same checks (service name,
// key and body limits, the disk quota, the submit rate and in-flight
// limit, all of Submit's callers counting as one client) and the same
// guarantee: the ticket is returned only once it is durable. It returns
// the ticket and whether it is the duplicate of one with the same key;
// errors wrap ErrBadRequest (refused as malformed or too large),
// ErrNotActive, ErrBusy (overloaded or over quota: retry later), or are
// ctx's (the ticket may still be stored: resubmit with the key). lc is
// what the submit asks beyond 9/TSP (delay, priority, deadline, retry
// policy; the HTTP API's fields): a replicated cluster refuses a non-zero
// one with an error wrapping ErrUnsupported until its cluster version
// allows it.
func (s *Service) Submit(ctx context.Context, service string, body [][]byte, key string, lc store.Lifecycle) (store.ID, bool, error) {
	if !s.active.Load() {
		return store.ID{}, false, ErrNotActive
	}
	frames := append([][]byte{[]byte(service)}, body...)
	if key != "" {
		frames = append([][]byte{[]byte(key)}, frames...)
	}
	r, err := parseSubmit(frames, key != "")
	if err != nil {
		s.stats.badRequests.Add(1)
		return store.ID{}, false, err
	}
	r.lifecycle = lc
	if n := bodySize(r.body); s.adm.bodyTooLarge(n) {
		return store.ID{}, false, badRequest("%s", s.adm.bodyTooLargeText(n))
	}
	if out := s.adm.refuseSubmit(false); out != nil {
		return store.ID{}, false, fmt.Errorf("%w: %s", ErrBusy, out[len(out)-1])
	}
	if out := s.adm.admit(httpClient, true); out != nil {
		return store.ID{}, false, fmt.Errorf("%w: %s", ErrBusy, out[len(out)-1])
	}
	type result struct {
		res store.Result
		err error
	}
	done := make(chan result, 1)
	err = s.storeSubmit(r, func(res store.Result, err error) {
		s.adm.release(httpClient)
		done <- result{res, err}
	})
	if err != nil {
		s.adm.release(httpClient)
		return store.ID{}, false, fmt.Errorf("submit: %w", ErrBusy)
	}
	select {
	case r := <-done:
		if r.err != nil {
			if errors.Is(r.err, store.ErrNotLeader) {
				return store.ID{}, false, fmt.Errorf("%w: not stored: %w", ErrNotActive, r.err)
			}
			return store.ID{}, false, fmt.Errorf("not stored: %w", r.err)
		}
		return r.res.ID, r.res.Duplicate, nil
	case <-ctx.Done():
		return store.ID{}, false, ctx.Err()
	}
}

// ErrBadRequest is wrapped by the errors of requests refused as malformed
// or over a limit (9/TSP answers them 400).
var ErrBadRequest = errBadRequest

// ErrBusy is wrapped by errors of requests refused because a queue is
// full.
var ErrBusy = errBusy
