package titanic

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
)

// Next implements broker.Source: the next pending ticket of service whose
// body is in memory, from the priority level whose turn it is (see
// svcQueue.pick), oldest first within it. It runs on the broker loop, so
// it never touches the store: a head whose body was not cached is handed
// to the loader and dispatched once the loader wakes the broker again.
// Delayed tickets are not in the queues (the schedule moves them in when
// due), so Next never looks at them. The dispatch mark names worker, for
// the attempt history; the store keeps the name only once its data file is
// at format 2 (see store.BoltStore.NewerFormat), so that it never ends a
// rollback to the first release on its own.
func (s *Service) Next(service, worker string) (broker.Job, bool) {
	now := s.cfg.Now()
	var expired []*entry
	job, ok := s.next(service, worker, now, &expired)
	for _, e := range expired {
		s.stats.deadlineExpired.Add(1)
		s.fail(e, expiredReason(e.deadline))
	}
	return job, ok
}

func (s *Service) next(service, worker string, now time.Time, expired *[]*entry) (broker.Job, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused[service] {
		return broker.Job{}, false
	}
	q := s.queues[service]
	for q != nil {
		f := q.pick()
		if f == nil {
			break
		}
		e := f.peek()
		lv := q.levelOf(f)
		if e == nil || !q.win[lv].holds(readyKey(e)) {
			// Tickets of this level wait on disk before e (or the level
			// has only those): its turn waits for the loader.
			q.blocked[lv] = true
			s.requestLoadLocked(service)
			break
		}
		if e.gone {
			f.pop()
			s.gone[service]--
			continue
		}
		if !e.deadline.IsZero() && !e.deadline.After(now) {
			// Its deadline passed a moment ago and the schedule has not
			// failed it yet: it is not dispatched late.
			f.pop()
			s.deadlines.remove(e)
			e.leased, e.failing = true, true
			*expired = append(*expired, e)
			continue
		}
		if e.body == nil {
			s.requestLoadLocked(service)
			break
		}
		f.pop()
		q.spend(f)
		if !q.win[lv].all && f.len() <= s.windowSize()/2 {
			s.requestLoadLocked(service)
		}
		// Dispatched: it no longer expires.
		s.deadlines.remove(e)
		e.deadline = time.Time{}
		e.leased = true
		e.attempts++
		s.stats.dispatches.Add(1)
		if e.attempts > 1 {
			s.stats.redeliveries.Add(1)
		}
		// The dispatch mark is recorded in the next commit, but the worker
		// need not wait for it: if the broker dies first, the ticket is
		// still unfinished in the store and is redelivered on recovery.
		_ = s.enqueue(pendingOp{op: store.Op{Kind: store.OpDispatch, ID: e.id, Time: now, Worker: worker}, done: ignore})
		s.note(e.id, "dispatched", service)
		return broker.Job{Token: []byte(e.id.String()), Body: e.body}, true
	}
	return broker.Job{}, false
}

func ignore(store.Result, error) {}

// leased returns the dispatched entry a lease token names, if it is still
// known (a ticket closed while a worker held it is not) and its worker has
// not answered yet.
func (s *Service) leased(token []byte) (*entry, store.ID, bool) {
	id, err := store.ParseID(string(token))
	if err != nil {
		return nil, id, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[id]
	if !ok || !e.leased || e.replied || e.failing {
		return nil, id, false
	}
	return e, id, true
}

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
	e, id, ok := s.leased(lease.Token)
	if !ok && id.IsZero() {
		return
	}
	if ok {
		s.mu.Lock()
		e.replied = true
		s.mu.Unlock()
	}
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
			if ok && s.holdVerdict(e, "reply", tries, batchErr, func() { s.commitReply(e, ok, op, service, tries+1) }) {
				return
			}
			s.forget(id)
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
			s.notify(id)
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
	s.mu.Lock()
	cur, known := s.entries[e.id]
	s.mu.Unlock()
	if !known || cur != e || !s.active.Load() || s.stopping() {
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
	e, id, ok := s.leased(lease.Token)
	if !ok {
		return
	}
	s.mu.Lock()
	attempts := e.attempts
	s.mu.Unlock()
	p := s.retryPolicy(e)
	if attempts >= p.MaxAttempts {
		s.fail(e, fmt.Sprintf("attempt %d of %d failed: %s", attempts, p.MaxAttempts, reason))
		return
	}
	now := s.cfg.Now()
	var due time.Time
	if d := backoff(p, attempts); d > 0 {
		due = now.Add(d)
	}
	s.commitRequeue(e, store.Op{Kind: store.OpRequeue, ID: id, Time: now, Reason: reason, Lifecycle: store.Lifecycle{Due: due}}, due)
}

// commitRequeue records that e is pending again, due at due, then queues
// it. A cluster that cannot record a due time yet (its cluster version is
// older: store.ErrClusterVersion) gets the requeue without it; the
// backoff is then kept in memory only, and a node that takes over
// redelivers at once.
func (s *Service) commitRequeue(e *entry, op store.Op, due time.Time) {
	_ = s.enqueue(pendingOp{op: op, done: func(res store.Result, batchErr error) {
		switch {
		case batchErr == nil && errors.Is(res.Err, store.ErrClusterVersion) && !op.Due.IsZero():
			op.Due = time.Time{}
			s.commitRequeue(e, op, due)
			return
		case batchErr == nil && res.Err != nil:
			s.forget(op.ID) // closed or finished meanwhile
			return
		}
		stored := op.Due
		if batchErr != nil {
			stored = time.Time{} // the store still has it dispatched: ready
		}
		s.requeue(e, due, stored)
	}})
}

// fail records that a ticket failed for good. e must be out of its fifo
// (leased, or popped by the reaper).
func (s *Service) fail(e *entry, reason string) {
	s.commitFail(e, store.Op{Kind: store.OpFail, ID: e.id, Time: s.cfg.Now(), Reason: reason}, reason, 0)
}

// commitFail records a failure for good; a failed commit is tried again
// (holdVerdict), the job is not run again.
func (s *Service) commitFail(e *entry, op store.Op, reason string, tries int) {
	_ = s.enqueue(pendingOp{op: op, done: func(res store.Result, batchErr error) {
		if batchErr != nil {
			if !s.holdVerdict(e, "failure", tries, batchErr, func() { s.commitFail(e, op, reason, tries+1) }) {
				s.forget(e.id)
			}
			return
		}
		if res.Err == nil {
			s.stats.failed.Add(1)
			s.tallyFinish(e.service, false)
			s.log.Info("ticket failed", "ticket", e.id, "service", e.service, "reason", reason)
		}
		s.forget(e.id)
		s.notify(e.id)
		if res.Err == nil {
			s.note(e.id, "failed", e.service)
		}
	}})
}

// requeue puts a ticket back in its fifo, at its Seq position, or in the
// delay heap until due; or, when that position is past its window's
// cursor, back on disk (it is read again when the cursor gets there).
// stored is the due time the store recorded: it chose the index.
func (s *Service) requeue(e *entry, due, stored time.Time) {
	now := s.cfg.Now()
	s.mu.Lock()
	if cur, ok := s.entries[e.id]; !ok || cur != e {
		s.mu.Unlock()
		return
	}
	if stored.Equal(due) && !s.keepLocked(s.queue(e.service), e, stored) {
		// On disk now, as the store has it; still counted in held.
		delete(s.entries, e.id)
		s.tombLocked(e.id)
		s.cached -= e.size
		e.body, e.size = nil, 0
		s.mu.Unlock()
		return
	}
	e.leased, e.replied = false, false
	e.queued, e.due = now, due
	ready := s.placeLocked(e, now)
	s.mu.Unlock()
	if ready {
		s.b.Wake(e.service)
	}
}

// Workers implements broker.Source.
func (s *Service) Workers(service string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.workers[service] = n
	if n == 0 {
		s.idleSince[service] = s.cfg.Now()
	} else {
		delete(s.idleSince, service)
	}
}

func (s *Service) requestLoadLocked(service string) {
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
	s.mu.Lock()
	if q := s.queues[service]; q != nil && s.needsLoadLocked(q) {
		s.requestLoadLocked(service) // more than a pass: after the others
	}
	if s.workers[service] == 0 {
		select {
		case s.reapKick <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
	var want []*entry
	s.mu.Lock()
	if q := s.queues[service]; q != nil {
		q.each(func(e *entry) bool {
			if !e.gone && e.body == nil {
				want = append(want, e)
			}
			return len(want) < loadBatch
		})
	}
	s.mu.Unlock()
	loaded := 0
	for _, e := range want {
		t, err := s.st.Get(ctx, e.id)
		s.mu.Lock()
		switch {
		case errors.Is(err, store.ErrNotFound):
			s.dropLocked(e.id)
		case err != nil:
			s.log.Warn("load request body", "ticket", e.id, "err", err)
		case e.body == nil && s.entries[e.id] == e:
			e.body, e.size = t.Body, bodySize(t.Body)
			if e.body == nil {
				e.body = [][]byte{}
			}
			s.cached += e.size
			loaded++
		}
		s.mu.Unlock()
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
// no worker registered.
func (s *Service) reapLoop(ctx context.Context) {
	every := min(s.cfg.NoWorkerTimeout/4, time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.reap()
			s.pruneClients()
			s.expirePresence()
		case <-s.reapKick:
			s.reap()
		}
	}
}

func (s *Service) reap() {
	now := s.cfg.Now()
	var dead []*entry
	s.mu.Lock()
	for service, q := range s.queues {
		if s.workers[service] > 0 || s.paused[service] {
			continue // a paused service's tickets wait for its resume
		}
		since := s.idleSince[service]
		for i := range q.lv {
			f := &q.lv[i]
			for {
				e := f.peek()
				if e == nil {
					break
				}
				if e.gone {
					f.pop()
					s.gone[service]--
					continue
				}
				start := e.queued
				if since.After(start) {
					start = since
				}
				if now.Sub(start) < s.cfg.NoWorkerTimeout {
					break
				}
				f.pop()
				s.deadlines.remove(e)
				e.leased, e.failing = true, true // out of the fifo while its verdict commits
				dead = append(dead, e)
			}
			if !q.win[i].all && f.len() <= s.windowSize()/2 {
				// The window ran low: the loader reads on, and kicks
				// the reaper again.
				s.requestLoadLocked(service)
			}
		}
	}
	s.mu.Unlock()
	for _, e := range dead {
		s.fail(e, fmt.Sprintf("no worker for service %q within %s", e.service, s.cfg.NoWorkerTimeout))
	}
}
