package titanic

import (
	"context"
	"errors"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
)

// pendingOp is a mutation waiting for the committer, with what to do once
// it is durable (or once its batch failed: res.Err is then the batch error).
type pendingOp struct {
	op     store.Op
	done   func(res store.Result, batchErr error)
	client bool // counted against MaxQueuedOps
}

// enqueue hands ops to the committer without blocking. Client-originated
// ops are refused with errBusy past MaxQueuedOps; internal ops (dispatch
// marks, replies, requeues) are bounded by the number of leases and always
// taken, so a worker's answer is never dropped.
func (s *Service) enqueue(ops ...pendingOp) error {
	s.opMu.Lock()
	if len(ops) > 0 && ops[0].client {
		if s.clientOps+len(ops) > s.cfg.MaxQueuedOps {
			s.opMu.Unlock()
			s.stats.busy.Add(1)
			return errBusy
		}
		s.clientOps += len(ops)
	}
	s.ops = append(s.ops, ops...)
	s.opMu.Unlock()
	select {
	case s.opReady <- struct{}{}:
	default:
	}
	return nil
}

// commitLoop is the group commit: it takes every op queued while the
// previous commit ran and applies them as one batch, so one fsync (or one
// raft entry) covers them all, then runs their completions. It returns when
// ctx is done and the queue is empty.
func (s *Service) commitLoop(ctx context.Context) {
	for {
		s.opMu.Lock()
		batch := s.ops
		s.committing.Store(len(batch) > 0)
		if len(batch) > s.cfg.MaxBatch {
			batch = batch[:s.cfg.MaxBatch]
			s.ops = append([]pendingOp(nil), s.ops[s.cfg.MaxBatch:]...)
		} else {
			s.ops = nil
		}
		for _, p := range batch {
			if p.client {
				s.clientOps--
			}
		}
		s.opMu.Unlock()
		if len(batch) == 0 {
			select {
			case <-s.opReady:
				continue
			case <-ctx.Done():
				return
			}
		}
		s.applyBatch(batch)
	}
}

func (s *Service) applyBatch(batch []pendingOp) {
	ops := make([]store.Op, len(batch))
	for i, p := range batch {
		ops[i] = p.op
	}
	// The batch is applied even while shutting down: its submits were
	// accepted and their clients wait for an answer.
	res, err := s.st.Apply(context.Background(), ops)
	s.refreshUsage()
	s.stats.commits.Add(1)
	s.stats.committedOps.Add(uint64(len(ops)))
	if err != nil {
		s.stats.commitErrors.Add(1)
		s.log.Error("commit failed", "ops", len(ops), "err", err)
	}
	for i, p := range batch {
		var r store.Result
		if err == nil {
			r = res[i]
		}
		p.done(r, err)
	}
	// One wake per service per batch, not per submit.
	for svc := range s.toWake {
		s.b.Wake(svc)
		delete(s.toWake, svc)
	}
}

// submit stores a new ticket and answers once it is durable.
func (s *Service) submit(req broker.Request, r submitReq) [][]byte {
	id := store.NewID()
	op := store.Op{Kind: store.OpSubmit, ID: id, Time: s.cfg.Now(), Service: r.service, Body: r.body, IdemKey: r.idemKey}
	keyed := req.Service == SvcSubmit
	err := s.enqueue(pendingOp{op: op, client: true, done: func(res store.Result, batchErr error) {
		switch {
		case batchErr != nil:
			s.answer(req.Client, req.Service, replyText(CodeError, "not stored: "+batchErr.Error()))
			return
		case res.Err != nil:
			s.answer(req.Client, req.Service, replyText(CodeError, "not stored: "+res.Err.Error()))
			return
		}
		s.stats.submits.Add(1)
		if !res.Duplicate {
			s.enlist(&entry{id: res.ID, service: r.service, seq: res.Seq, queued: op.Time}, r.body)
		} else {
			s.stats.duplicates.Add(1)
		}
		ticket := []byte(res.ID.String())
		if keyed {
			how := "new"
			if res.Duplicate {
				how = "duplicate"
			}
			s.answer(req.Client, req.Service, reply(CodeOK, ticket, []byte(how)))
			return
		}
		s.answer(req.Client, req.Service, reply(CodeOK, ticket))
	}})
	if err != nil {
		return busyReply()
	}
	return nil
}

// enlist queues a durable pending ticket for dispatch; the committer wakes
// the broker once the batch's completions have run. Committer only.
func (s *Service) enlist(e *entry, body [][]byte) {
	s.mu.Lock()
	if _, dup := s.entries[e.id]; dup {
		s.mu.Unlock()
		return
	}
	if body != nil {
		if size := bodySize(body); s.cached+size <= s.cfg.BodyCache {
			e.body, e.size = body, size
			s.cached += size
		}
	}
	s.entries[e.id] = e
	s.queue(e.service).push(e)
	s.mu.Unlock()
	s.toWake[e.service] = struct{}{}
}

// closeTicket deletes a ticket (9/TSP titanic.close) and answers 200.
func (s *Service) closeTicket(req broker.Request, id store.ID) [][]byte {
	op := store.Op{Kind: store.OpClose, ID: id, Time: s.cfg.Now()}
	err := s.enqueue(pendingOp{op: op, client: true, done: func(res store.Result, batchErr error) {
		if batchErr != nil {
			s.answer(req.Client, req.Service, replyText(CodeError, "not closed: "+batchErr.Error()))
			return
		}
		s.forget(id)
		s.stats.closes.Add(1)
		s.answer(req.Client, req.Service, reply(CodeOK))
	}})
	if err != nil {
		return busyReply()
	}
	return nil
}

// forget drops a ticket from the dispatcher (closed or finished).
func (s *Service) forget(id store.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropLocked(id)
}

func (s *Service) dropLocked(id store.ID) {
	e, ok := s.entries[id]
	if !ok {
		return
	}
	delete(s.entries, id)
	s.cached -= e.size
	e.body, e.size = nil, 0
	if e.leased {
		return // not linked in a fifo
	}
	e.gone = true
	s.gone[e.service]++
	if q := s.queues[e.service]; q != nil && s.gone[e.service] > 64 && s.gone[e.service]*2 > q.len() {
		q.compact()
		s.gone[e.service] = 0
	}
}

// isFinal reports whether err means the ticket was closed or finished
// meanwhile, which is normal and not a failure of the batch.
func isFinal(err error) bool {
	return errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrFinal)
}
