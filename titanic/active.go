package titanic

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/titanicmq/titanic/store"
)

// Deactivate drops the dispatcher's state: this node is no longer the one
// that serves (it lost raft leadership or Binary Star made it passive).
// What workers held is redelivered by the node that takes over; commits
// still in flight fail there and their clients retry.
func (s *Service) Deactivate() {
	s.active.Store(false)
	s.mu.Lock()
	s.resetLocked()
	s.mu.Unlock()
	s.tally.mu.Lock()
	for _, v := range s.tally.svcs {
		v.done, v.failed = 0, 0 // read again from the store on Activate
	}
	s.tally.mu.Unlock()
	s.expireWaits(true)
	s.log.Info("dispatcher deactivated")
}

func (s *Service) resetLocked() {
	s.queues = make(map[string]*fifo)
	s.entries = make(map[store.ID]*entry)
	s.gone = make(map[string]int)
	s.held = make(map[string]int)
	s.cached = 0
	now := s.cfg.Now()
	for svc := range s.idleSince {
		s.idleSince[svc] = now
	}
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
	s.mu.Lock()
	s.resetLocked()
	s.mu.Unlock()
	if err := s.Recover(ctx); err != nil {
		return fmt.Errorf("activate: %w", err)
	}
	s.log.Info("dispatcher activated", "took", time.Since(start).Round(time.Millisecond))
	s.mu.Lock()
	services := make([]string, 0, len(s.queues))
	for svc := range s.queues {
		services = append(services, svc)
	}
	s.mu.Unlock()
	for _, svc := range services {
		s.b.Wake(svc)
	}
	return nil
}

// Refusal is the answer of a node that is not active to a 9/TSP request:
// 500 (retry later, 9/TSP) with a text saying why. This project's client
// moves on to the next broker at once when it sees it; other clients
// retry, or time out and fail over.
func Refusal(service string) [][]byte {
	if len(service) >= len(Prefix) && service[:len(Prefix)] == Prefix {
		return replyText(CodeError, NotActive)
	}
	return nil
}

// NotActive is the text of Refusal.
const NotActive = "not active"

// Idle reports whether nothing the service accepted is still waiting to be
// committed or looked up, so a draining broker may stop without leaving a
// client unanswered (parked titanic.wait requests are answered when the
// service stops).
func (s *Service) Idle() bool {
	return s.inflight.Load() == 0 && len(s.reads) == 0 && s.reading.Load() == 0 && s.confirms.n.Load() == 0
}

// ErrNotActive: this node does not serve (replicated modes).
var ErrNotActive = errors.New(NotActive)

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
			done <- fmt.Errorf("close %s: %w", id, store.ErrNotFound)
		default:
			s.forget(id)
			s.tallyClose(res)
			s.stats.closes.Add(1)
			s.note(id, "closed", "")
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

// ErrBusy is wrapped by errors of requests refused because a queue is
// full.
var ErrBusy = errBusy
