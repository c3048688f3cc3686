package titanic

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// The job lifecycle's services (extensions; see README "Job lifecycle"):
//
//	titanic.retry    [ticket]   → 200 | 400 text   a failed ticket is pending again
//	titanic.cancel   [ticket]   → 200 | 400 text   a pending or running ticket ends as cancelled
//	titanic.pause    [service]  → 200 | 400 text   its tickets are not dispatched; submits are taken
//	titanic.resume   [service]  → 200 | 400 text
//	titanic.attempts [ticket]   → 200 | JSON       the attempts that ended without a reply
//	titanic.purge    [ticket]   → 200 | 400 text   close the ticket only if it has failed
//
// Each writes an op of a kind the first release cannot read (ops record
// 3): a replicated cluster takes it only once its cluster version allows
// (400 not supported: ... until then). The names are in package tsp.

// Sentinel errors of the lifecycle methods, for the HTTP API.
var (
	// ErrNotFailed: a retry of a ticket that has not failed.
	ErrNotFailed = store.ErrNotFailed
	// ErrFinished: a cancel of a ticket that is already done, failed or
	// cancelled.
	ErrFinished = store.ErrFinal
	// ErrUnsupported: the cluster cannot take the op yet (its cluster
	// version is older).
	ErrUnsupported = store.ErrClusterVersion
)

// commitOne hands one client op to the store and calls done with its
// result once durable, or with the batch's error. It returns errBusy when
// the commit queue is full.
func (s *Service) commitOne(op store.Op, done func(store.Result, error)) error {
	return s.enqueue(pendingOp{op: op, client: true, done: func(res store.Result, batchErr error) {
		if batchErr != nil {
			done(res, batchErr)
			return
		}
		done(res, res.Err)
	}})
}

// wait runs an asynchronous lifecycle method to its end (the HTTP API's
// form).
func (s *Service) waitFor(ctx context.Context, start func(done func(error)) error) error {
	if !s.active.Load() {
		return ErrNotActive
	}
	ch := make(chan error, 1)
	if err := start(func(err error) { ch <- err }); err != nil {
		return fmt.Errorf("%w: %w", ErrBusy, err)
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Retry gives a failed ticket another round (titanic.retry).
func (s *Service) Retry(ctx context.Context, id store.ID) error {
	return s.waitFor(ctx, func(done func(error)) error { return s.retry(id, done, true) })
}

// retry commits a retry of id. A retry and a retention sweep exclude
// each other until the retry is durable: the sweep deletes,
// unconditionally, the finished tickets it listed, and a retry
// committed after the listing would have its pending ticket deleted.
// With wait (the HTTP API's, on a goroutine of its own) a retry waits
// for a sweep that has expired tickets to list (it takes the commits of
// the retries in flight and milliseconds); without (9/TSP, on the
// broker's loop, which must not block) it is answered busy meanwhile.
func (s *Service) retry(id store.ID, done func(error), wait bool) error {
	done = s.elsewhereDone(id, done)
	if wait {
		s.sweepGate.RLock()
	} else if !s.sweepGate.TryRLock() {
		return errBusy
	}
	op := store.Op{Kind: store.OpRetry, ID: id, Time: s.cfg.Now()}
	err := s.commitOne(op, func(res store.Result, err error) {
		s.sweepGate.RUnlock()
		if err == nil {
			s.stats.retries.Add(1)
			s.tallyRetry(res.Service)
			s.enlist((&entry{id: id, service: res.Service, seq: res.Seq, queued: op.Time}).withLifecycle(res.Lifecycle, 0), nil)
			s.note(id, "pending", res.Service)
		}
		done(err)
	})
	if err != nil {
		s.sweepGate.RUnlock()
	}
	return err
}

// Purge closes a ticket only if it has failed (titanic.purge, the HTTP
// API's purge): the condition is checked where the close is applied, so
// a ticket retried after a purge listed it is left alone (ErrNotFailed).
// An unknown ticket: store.ErrNotFound.
func (s *Service) Purge(ctx context.Context, id store.ID) error {
	return s.waitFor(ctx, func(done func(error)) error { return s.purge(id, done) })
}

func (s *Service) purge(id store.ID, done func(error)) error {
	done = s.elsewhereDone(id, done)
	op := store.Op{Kind: store.OpPurge, ID: id, Time: s.cfg.Now()}
	return s.commitOne(op, func(res store.Result, err error) {
		if err == nil && !res.Existed {
			err = fmt.Errorf("purge %s: %w", id, store.ErrNotFound)
		}
		if err == nil {
			s.forget(id)
			s.tallyClose(res)
			s.stats.closes.Add(1)
			s.closed(id, res.Service)
		}
		done(err)
	})
}

// Cancel ends a pending or running ticket as cancelled (titanic.cancel): a
// pending one is never dispatched; a running one's reply is dropped.
func (s *Service) Cancel(ctx context.Context, id store.ID, reason string) error {
	return s.waitFor(ctx, func(done func(error)) error { return s.cancel(id, reason, done) })
}

func (s *Service) cancel(id store.ID, reason string, done func(error)) error {
	done = s.elsewhereDone(id, done)
	op := store.Op{Kind: store.OpCancel, ID: id, Time: s.cfg.Now(), Reason: reason}
	return s.commitOne(op, func(res store.Result, err error) {
		if err == nil {
			s.forgetResult(res)
			s.look.notify(id)
			s.note(id, "cancelled", res.Service)
		}
		done(err)
	})
}

// Pause stops the dispatch of service's tickets (titanic.pause); Resume
// starts it again. Both are durable and idempotent.
func (s *Service) Pause(ctx context.Context, service string) error {
	return s.waitFor(ctx, func(done func(error)) error { return s.pause(service, true, done) })
}

// Resume: see Pause.
func (s *Service) Resume(ctx context.Context, service string) error {
	return s.waitFor(ctx, func(done func(error)) error { return s.pause(service, false, done) })
}

func (s *Service) pause(service string, pause bool, done func(error)) error {
	// The names a submit takes; a resume also takes a name paused
	// before this check (by an older release), to clear it.
	if err := checkServiceName(service); err != nil && (pause || !s.d.isPaused(service)) {
		return err
	}
	op := store.Op{Kind: store.OpResume, Service: service, Time: s.cfg.Now()}
	if pause {
		op.Kind = store.OpPause
	}
	return s.commitOne(op, func(_ store.Result, err error) {
		if err == nil {
			s.setPaused(service, pause)
		}
		done(err)
	})
}

// setPaused records a service's pause in the dispatcher; a resumed service
// is offered to its workers again.
func (s *Service) setPaused(service string, pause bool) {
	s.d.setPaused(service, pause)
	if !pause {
		s.b.Wake(service)
	}
}

// loadPaused reads the paused services from the store (on start-up and
// when this node starts serving).
func (s *Service) loadPaused(ctx context.Context) error {
	p, err := s.st.Paused(ctx)
	if err != nil {
		return fmt.Errorf("paused services: %w", err)
	}
	s.d.setAllPaused(slices.Collect(maps.Keys(p)))
	return nil
}

// IsPaused reports whether service's dispatch is paused.
func (s *Service) IsPaused(service string) bool { return s.d.isPaused(service) }

// AttemptJSON is one attempt in titanic.attempts' answer and the HTTP API.
type AttemptJSON struct {
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Seconds float64   `json:"seconds"`
	Worker  string    `json:"worker,omitempty"`
	Outcome string    `json:"outcome"` // retried, failed or cancelled
	Error   string    `json:"error,omitempty"`
}

// Attempts returns a ticket's attempts that ended without a reply, oldest
// first (the dead letters' history). An unknown ticket is store.ErrNotFound
// (ErrNotMerged when the pair's peer may hold it).
func (s *Service) Attempts(ctx context.Context, id store.ID) ([]AttemptJSON, error) {
	as, err := s.st.Attempts(ctx, id)
	if err != nil {
		return nil, err
	}
	if len(as) == 0 {
		// The store keeps nothing for a ticket without failed attempts:
		// an unknown one is said so, as every lookup does.
		if _, err := s.st.Get(ctx, id); err != nil {
			return nil, elsewhere(s.cfg, id, err)
		}
	}
	out := make([]AttemptJSON, 0, len(as))
	for _, a := range as {
		outcome := a.Outcome.String()
		if a.Outcome == store.StatePending {
			outcome = "retried"
		}
		out = append(out, AttemptJSON{Start: a.Start, End: a.End, Seconds: a.End.Sub(a.Start).Seconds(), Worker: a.Worker, Outcome: outcome, Error: a.Error})
	}
	return out, nil
}

// lifecycleAnswer is the TSP answer of a lifecycle op's outcome.
func lifecycleAnswer(what string, err error) [][]byte {
	switch {
	case err == nil:
		return reply(tsp.CodeOK)
	case errors.Is(err, errBadRequest):
		return replyText(tsp.CodeUnknown, err.Error())
	case errors.Is(err, ErrNotMerged):
		return replyText(tsp.CodeError, NotMerged)
	case errors.Is(err, store.ErrNotFound):
		return replyText(tsp.CodeUnknown, string(tsp.UnknownTicket))
	case errors.Is(err, store.ErrNotFailed):
		why := "only a failed ticket can be retried"
		if what == "purge" {
			why = "only a failed ticket is purged"
		}
		return replyText(tsp.CodeUnknown, tsp.NotFailed.Text(fmt.Sprintf("%s: %s (%v)", what, why, err)))
	case errors.Is(err, store.ErrFinal):
		return replyText(tsp.CodeUnknown, tsp.Finished.Text(fmt.Sprintf("%s: the ticket is finished already (%v)", what, err)))
	case errors.Is(err, store.ErrClusterVersion):
		return replyText(tsp.CodeUnknown, tsp.NotSupported.Text(clusterVersionText(err)))
	case errors.Is(err, store.ErrInvalidOp):
		return replyText(tsp.CodeUnknown, err.Error())
	}
	return storeRefusal(what+" not recorded", err)
}

// serveLifecycle answers the lifecycle services; nil when the answer is
// deferred until the op is durable.
func (s *Service) serveLifecycle(req broker.Request) [][]byte {
	answer := func(err error) {
		s.answer(req.Client, req.Service, lifecycleAnswer(req.Service[len(tsp.Prefix):], err))
	}
	var err error
	switch req.Service {
	case tsp.SvcRetry, tsp.SvcCancel, tsp.SvcPurge:
		var id store.ID
		if id, err = parseTicket(req.Body); err != nil {
			break
		}
		switch req.Service {
		case tsp.SvcRetry:
			err = s.retry(id, answer, false)
		case tsp.SvcCancel:
			err = s.cancel(id, "", answer)
		default:
			err = s.purge(id, answer)
		}
	case tsp.SvcPause, tsp.SvcResume:
		if len(req.Body) != 1 {
			err = badRequest("want exactly one service frame")
			break
		}
		err = s.pause(string(req.Body[0]), req.Service == tsp.SvcPause, answer)
	case tsp.SvcAttempts:
		var id store.ID
		if id, err = parseTicket(req.Body); err != nil {
			break
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			as, err := s.Attempts(ctx, id)
			switch {
			case errors.Is(err, ErrNotMerged):
				s.answer(req.Client, req.Service, replyText(tsp.CodeError, NotMerged))
				return
			case errors.Is(err, store.ErrNotFound):
				s.answer(req.Client, req.Service, replyText(tsp.CodeUnknown, string(tsp.UnknownTicket)))
				return
			case err != nil:
				s.answer(req.Client, req.Service, replyText(tsp.CodeError, "attempts: "+err.Error()))
				return
			}
			b, _ := json.Marshal(as)
			s.answer(req.Client, req.Service, reply(tsp.CodeOK, b))
		}()
		return nil
	}
	switch {
	case errors.Is(err, errBadRequest):
		s.stats.badRequests.Add(1)
		return replyText(tsp.CodeUnknown, err.Error())
	case err != nil:
		return busyReply()
	}
	return nil
}
