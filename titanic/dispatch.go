package titanic

import (
	"context"
	"errors"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
)

// Next implements broker.Source: the dispatcher's next ticket of service
// (dispatcher.next: priority turns, FIFO within a level, never a delayed
// one). It runs on the broker loop, so it never touches the store: a head
// whose body was not cached is handed to the loader and dispatched once
// the loader wakes the broker again. The dispatch mark names worker, for
// the attempt history; the store keeps the name only once its data file is
// at format 2 (see store.BoltStore.NewerFormat), so that it never ends a
// rollback to the first release on its own.
func (s *Service) Next(service, worker string) (broker.Job, bool) {
	now := s.cfg.Now()
	d := s.d.next(service, now)
	if d.load {
		s.requestLoad(service)
	}
	if d.ok {
		s.stats.dispatches.Add(1)
		if d.attempts > 1 {
			s.stats.redeliveries.Add(1)
		}
		// The dispatch mark is recorded in the next commit, but the worker
		// need not wait for it: if the broker dies first, the ticket is
		// still unfinished in the store and is redelivered on recovery.
		_ = s.enqueue(pendingOp{op: store.Op{Kind: store.OpDispatch, ID: d.id, Time: now, Worker: worker}, done: ignore})
		s.note(d.id, "dispatched", service)
	}
	s.failAll(d.expired)
	return d.job, d.ok
}

// apply does what a dispatcher decision left to the service.
func (s *Service) apply(fx effects) {
	for _, svc := range fx.load {
		s.requestLoad(svc)
	}
	switch len(fx.wake) {
	case 0:
	case 1:
		s.b.Wake(fx.wake[0])
	default:
		woken := make(map[string]bool, len(fx.wake))
		for _, svc := range fx.wake {
			if !woken[svc] {
				woken[svc] = true
				s.b.Wake(svc)
			}
		}
	}
	if fx.kick {
		s.kickSchedule()
	}
	s.failAll(fx.fail)
	s.settleCut(fx.cut)
}

// settleCut commits what becomes of the tickets whose attempt a restart
// or failover cut short (dispatcher.cutShortLocked): a failure for good,
// or a requeue after the backoff. Each is counted in s.settling until its
// commit's completion ran, so that Recover hands the broker queues that
// hold them where they belong (a requeue at once goes back to its FIFO
// place, before later tickets are dispatched).
func (s *Service) settleCut(cut []cutShort) {
	for _, c := range cut {
		now := s.cfg.Now()
		s.settling.add()
		if c.fail != "" {
			s.log.Info("attempt cut short by a restart or failover: the ticket fails", "ticket", c.e.id, "service", c.e.service, "reason", c.fail)
			s.commitFail(c.e, store.Op{Kind: store.OpFail, ID: c.e.id, Time: now, Reason: c.fail}, c.fail, 0, s.settling.done)
			continue
		}
		op := store.Op{Kind: store.OpRequeue, ID: c.e.id, Time: now, Reason: CutShortReason, Lifecycle: store.Lifecycle{Due: c.due}}
		s.commitRequeue(c.e, op, c.due, s.settling.done)
	}
}

// failAll commits the failures the dispatcher decided.
func (s *Service) failAll(vs []verdict) {
	for _, v := range vs {
		if v.expired {
			s.stats.deadlineExpired.Add(1)
		}
		s.fail(v.e, v.reason)
	}
}

func ignore(store.Result, error) {}

// Completed implements broker.Source: a worker answered. The worker is
// released at once, so it never waits for the disk: its reply goes into
// the next group commit behind its back. Until that commit completes the
// entry stays out of every fifo, marked replied, so the ticket is neither
// dispatched again nor reported done: lookups read the store, which has
// the reply only once it is durable, and meanwhile answer "dispatched"
// (overlay). If the broker dies before the commit, the store still holds
// the ticket unfinished and it is redelivered on recovery (at-least-once);
// if the commit fails, the ticket goes back to pending. First reply wins:
// the store refuses a second one (ErrFinal).
func (s *Service) Completed(lease broker.Lease, body [][]byte) {
	s.b.Release(lease.ID)
	id, err := store.ParseID(string(lease.Token))
	if err != nil || id.IsZero() {
		return
	}
	e, ok := s.d.replied(id, lease.Tag)
	op := store.Op{Kind: store.OpReply, ID: id, Time: s.cfg.Now(), Reply: body}
	s.commitReply(e, ok, op, lease.Service, 0)
}

// commitReply records a worker's reply. When the batch holding it fails
// (a full disk, a failing store) the reply is held and its commit tried
// again after a pause, doubling up to verdictRetryMax: the job is not run
// again for an answer the broker already has, nor its attempts counted. A
// retry stops when the entry is gone (closed, or the dispatcher was reset:
// another node serves now, and redelivers from its store) or the service
// stopped. tries counts the failed commits so far.
func (s *Service) commitReply(e *entry, ok bool, op store.Op, service string, tries int) {
	id := op.ID
	_ = s.enqueue(pendingOp{op: op, done: func(res store.Result, batchErr error) {
		switch {
		case batchErr != nil:
			// Nothing is recorded: the ticket stays as it was. A reply
			// that ended no lease of the current dispatch (late, or
			// from before a reset) leaves the entry alone.
			if ok && !s.holdVerdict(e, "reply", tries, batchErr, func() { s.commitReply(e, ok, op, service, tries+1) }) {
				s.d.forgetEntry(e)
			}
		case res.Err != nil:
			if isFinal(res.Err) {
				s.stats.lateReplies.Add(1)
			} else {
				s.log.Warn("reply not recorded", "ticket", id, "err", res.Err)
			}
			s.forget(id)
		default:
			s.stats.replies.Add(1)
			s.tallyFinish(service, true)
			s.forget(id)
			s.look.notify(id)
			s.note(id, "done", service)
		}
	}})
}

// Pauses between tries of a verdict's commit (commitReply, fail).
const (
	verdictRetryMin = 50 * time.Millisecond
	verdictRetryMax = 5 * time.Second
)

// holdVerdict schedules retry after a verdict's failed commit, if e is
// still the dispatcher's entry and the service runs; it reports whether
// it did. The first failure of a ticket's verdict is logged.
func (s *Service) holdVerdict(e *entry, what string, tries int, batchErr error, retry func()) bool {
	if !s.d.current(e) || !s.active.Load() || s.stopping() {
		return false
	}
	s.stats.verdictRetries.Add(1)
	if tries == 0 {
		s.log.Warn(what+" not durable: holding it and committing it again, without running the job again", "ticket", e.id, "err", batchErr)
	}
	d := verdictRetryMin << min(tries, 7)
	time.AfterFunc(min(d, verdictRetryMax), retry)
	return true
}

// Failed implements broker.Source: an attempt ended without a reply. The
// ticket is requeued after its backoff (delayed until then, durably: the
// requeue carries the due time), or fails for good once its attempts are
// used up.
func (s *Service) Failed(lease broker.Lease, reason string) {
	id, err := store.ParseID(string(lease.Token))
	if err != nil {
		return
	}
	now := s.cfg.Now()
	e, d, ok := s.d.attemptFailed(id, lease.Tag, reason, now)
	switch {
	case !ok:
	case d.fail != "":
		s.fail(e, d.fail)
	default:
		s.commitRequeue(e, store.Op{Kind: store.OpRequeue, ID: id, Time: now, Reason: reason, Lifecycle: store.Lifecycle{Due: d.due}}, d.due, nil)
	}
}

// Unsent implements broker.Source: the job never reached its worker or
// peer (the send failed at once), so no attempt was made. The dispatch is
// taken back (store.OpUndispatch: pending again, its attempt not
// counted) and the ticket queued again at its place, once that is
// recorded. A cluster that cannot record it yet (a member runs a release
// without the op: store.ErrClusterVersion) counts the attempt instead, as
// Failed does.
func (s *Service) Unsent(lease broker.Lease, reason string) {
	id, err := store.ParseID(string(lease.Token))
	if err != nil {
		return
	}
	e, ok := s.d.unsent(id, lease.Tag)
	if !ok {
		return
	}
	s.stats.unsent.Add(1)
	op := store.Op{Kind: store.OpUndispatch, ID: id, Time: s.cfg.Now()}
	_ = s.enqueue(pendingOp{op: op, done: func(res store.Result, batchErr error) {
		switch {
		case batchErr == nil && errors.Is(res.Err, store.ErrClusterVersion):
			s.d.chargeAttempt(e)
			s.Failed(lease, reason)
			return
		case batchErr == nil && res.Err != nil && !errors.Is(res.Err, store.ErrNotDispatched):
			// Closed or cancelled meanwhile. (Not dispatched: the
			// dispatch mark's own batch failed; it is pending.)
			s.forget(id)
			return
		}
		state := store.StatePending
		if batchErr != nil {
			state = 0 // the dispatch mark may be recorded, or not
		}
		s.requeue(e, time.Time{}, time.Time{}, state)
	}})
}

// commitRequeue records that e is pending again, due at due, then queues
// it. A cluster that cannot record a due time yet (its cluster version is
// older: store.ErrClusterVersion) gets the requeue without it; the
// backoff is then kept in memory only, and a node that takes over
// redelivers at once. after, when set, runs once it is done (queued or
// forgotten).
func (s *Service) commitRequeue(e *entry, op store.Op, due time.Time, after func()) {
	_ = s.enqueue(pendingOp{op: op, done: func(res store.Result, batchErr error) {
		switch {
		case batchErr == nil && errors.Is(res.Err, store.ErrClusterVersion) && !op.Due.IsZero():
			op.Due = time.Time{}
			s.commitRequeue(e, op, due, after)
			return
		case batchErr == nil && res.Err != nil:
			s.forget(op.ID) // closed or finished meanwhile
			runAfter(after)
			return
		}
		stored, state := op.Due, store.StatePending
		if batchErr != nil {
			// The store still has it dispatched (ready), unless the
			// dispatch mark failed too: its state is not known.
			stored, state = time.Time{}, 0
		}
		s.requeue(e, due, stored, state)
		runAfter(after)
	}})
}

func runAfter(after func()) {
	if after != nil {
		after()
	}
}

// fail records that a ticket failed for good. e must be out of its fifo
// (leased, or popped by the reaper).
func (s *Service) fail(e *entry, reason string) {
	s.commitFail(e, store.Op{Kind: store.OpFail, ID: e.id, Time: s.cfg.Now(), Reason: reason}, reason, 0, nil)
}

// commitFail records a failure for good; a failed commit is tried again
// (holdVerdict), the job is not run again. after, when set, runs once
// it is done (committed, or given up).
func (s *Service) commitFail(e *entry, op store.Op, reason string, tries int, after func()) {
	_ = s.enqueue(pendingOp{op: op, done: func(res store.Result, batchErr error) {
		if batchErr != nil {
			if !s.holdVerdict(e, "failure", tries, batchErr, func() { s.commitFail(e, op, reason, tries+1, after) }) {
				s.d.forgetEntry(e)
				runAfter(after)
			}
			return
		}
		if res.Err == nil {
			s.stats.failed.Add(1)
			s.tallyFinish(e.service, false)
			s.log.Info("ticket failed", "ticket", e.id, "service", e.service, "reason", reason)
		}
		s.forget(e.id)
		s.look.notify(e.id)
		if res.Err == nil {
			s.note(e.id, "failed", e.service)
		}
		runAfter(after)
	}})
}

// requeue puts a ticket back in its queue once its requeue committed
// (dispatcher.requeue).
func (s *Service) requeue(e *entry, due, stored time.Time, state store.State) {
	s.apply(s.d.requeue(e, due, stored, state, s.cfg.Now()))
	if state == store.StatePending {
		// Pending again, as recorded: a redelivery's subscribers hear of
		// it (found by an outside-in tester).
		s.note(e.id, "pending", e.service)
	}
}

// Workers implements broker.Source.
func (s *Service) Workers(service string, n int) {
	s.d.setWorkers(service, n, s.cfg.Now())
}

// requestLoad asks the loader to read for service.
func (s *Service) requestLoad(service string) {
	select {
	case s.loadReq <- service:
	default:
		// The loader is behind; the next Next for this service asks again.
	}
}

// loadBatch is how many bodies the loader reads per pass.
const loadBatch = 256

// loadLoop reads bodies that were not cached, for the heads of the queues,
// so that dispatch (on the broker loop) never waits on the disk.
func (s *Service) loadLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case service := <-s.loadReq:
			s.load(ctx, service)
		}
	}
}

func (s *Service) load(ctx context.Context, service string) {
	// The windows first: what they read is what the bodies are for.
	for range 8 {
		if !s.fill(ctx, service) {
			break
		}
	}
	more, noWorker := s.d.afterFill(service)
	if more {
		s.requestLoad(service) // more than a pass: after the others
	}
	if noWorker {
		select {
		case s.reapKick <- struct{}{}:
		default:
		}
	}
	want := s.d.bodiesWanted(service, loadBatch)
	loaded := 0
	for _, e := range want {
		t, err := s.st.Get(ctx, e.id)
		if s.d.bodyLoaded(e, t, err) {
			loaded++
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("load request body", "ticket", e.id, "err", err)
		}
		if err != nil && ctx.Err() != nil {
			return
		}
	}
	s.stats.loads.Add(uint64(loaded))
	if len(want) > 0 {
		s.b.Wake(service)
	}
}

// reapLoop fails tickets that waited NoWorkerTimeout while their service had
// no worker registered (when it is set), and refills the deadline windows.
func (s *Service) reapLoop(ctx context.Context) {
	every := time.Second
	if s.cfg.NoWorkerTimeout > 0 {
		// Not under a millisecond: a ticker of 0 panics.
		every = max(min(s.cfg.NoWorkerTimeout/4, every), time.Millisecond)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.reap()
			s.adm.pruneClients()
			s.adm.expirePresence()
		case <-s.reapKick:
			s.reap()
		}
	}
}

func (s *Service) reap() {
	s.apply(s.d.reap(s.cfg.Now()))
}
