package titanic

import (
	"context"
	"errors"
	"time"

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
	n := len(s.ops)
	s.opMu.Unlock()
	if n == len(ops) || n >= pipelineMin {
		s.signalOps()
	}
	return nil
}

// signalOps wakes the committer without blocking.
func (s *Service) signalOps() {
	select {
	case s.opReady <- struct{}{}:
	default:
	}
}

// commitLoop is the group commit: it takes every op queued while the
// previous batch was being handed over and applies them as one batch, so
// one fsync (or one raft entry) covers them all; a completer goroutine
// then runs their completions, in order. With a store that can keep
// batches in flight (ApplyAsync: the replicated store), up to
// maxInflightBatches are, so that raft replicates them together. It
// returns when ctx is done and the queue is empty.
func (s *Service) commitLoop(ctx context.Context) {
	inflight := make(chan inflightBatch, maxInflightBatches)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ib := range inflight {
			res, err := ib.wait(context.Background())
			if s.cfg.ObserveCommit != nil {
				s.cfg.ObserveCommit(time.Since(ib.start))
			}
			s.complete(ib.batch, res, err)
			s.batches.Add(-1)
			s.signalOps() // the committer may take a small batch now
		}
	}()
	defer func() {
		close(inflight)
		<-done
	}()
	for {
		s.opMu.Lock()
		if n := len(s.ops); n > 0 && n < pipelineMin && s.batches.Load() > 0 {
			// A batch is in flight and few ops wait: let more gather (or
			// the batch complete) rather than send a small one.
			s.opMu.Unlock()
			select {
			case <-s.opReady:
			case <-ctx.Done():
			}
			continue
		}
		batch := s.ops
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
		if len(batch) > 0 {
			s.batches.Add(1)
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
		ops := make([]store.Op, len(batch))
		for i, p := range batch {
			ops[i] = p.op
		}
		// The batch is applied even while shutting down: its submits were
		// accepted and their clients wait for an answer.
		inflight <- inflightBatch{batch: batch, wait: s.st.ApplyAsync(ops), start: time.Now()}
	}
}

// maxInflightBatches bounds the batches handed to the store and not yet
// completed; pipelineMin is the fewest ops sent as a batch while another
// is in flight.
const (
	maxInflightBatches = 4
	pipelineMin        = 64
)

type inflightBatch struct {
	start time.Time
	batch []pendingOp
	wait  func(context.Context) ([]store.Result, error)
}

// complete runs a batch's completions. Completer goroutine only.
func (s *Service) complete(batch []pendingOp, res []store.Result, err error) {
	s.refreshUsage()
	s.stats.commits.Add(1)
	s.stats.committedOps.Add(uint64(len(batch)))
	if err != nil {
		s.stats.commitErrors.Add(1)
		s.log.Error("commit failed", "ops", len(batch), "err", err)
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
	if s.cfg.MintTag != 0 {
		id[15] = id[15]&0xf0 | s.cfg.MintTag&0x0f
	}
	op := store.Op{Kind: store.OpSubmit, ID: id, Time: s.cfg.Now(), Service: r.service, Body: r.body, IdemKey: r.idemKey}
	keyed := req.Service == SvcSubmit
	answer := func(out [][]byte) {
		if keyed {
			out = withKey(out, req.Body)
		}
		s.answer(req.Client, req.Service, out)
	}
	err := s.enqueue(pendingOp{op: op, client: true, done: func(res store.Result, batchErr error) {
		switch {
		case batchErr != nil:
			answer(replyText(CodeError, "not stored: "+batchErr.Error()))
			return
		case res.Err != nil:
			answer(replyText(CodeError, "not stored: "+res.Err.Error()))
			return
		}
		s.stats.submits.Add(1)
		if !res.Duplicate {
			s.enlist(&entry{id: res.ID, service: r.service, seq: res.Seq, queued: op.Time}, r.body)
			s.note(res.ID, "pending", r.service)
		} else {
			s.stats.duplicates.Add(1)
		}
		ticket := []byte(res.ID.String())
		if keyed {
			how := "new"
			if res.Duplicate {
				how = "duplicate"
			}
			answer(reply(CodeOK, ticket, []byte(how)))
			return
		}
		answer(reply(CodeOK, ticket))
	}})
	if err != nil {
		return busyReply()
	}
	return nil
}

// enlist queues a durable pending ticket for dispatch; the completer wakes
// the broker once the batch's completions have run. Completer only.
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
		if !res.Existed && s.cfg.MaybeElsewhere != nil && s.cfg.MaybeElsewhere(id) {
			// The peer may hold it (a split not merged yet): a 200 now
			// would let its handover bring it back. Try again later.
			s.answer(req.Client, req.Service, replyText(CodeError, NotMerged))
			return
		}
		s.stats.closes.Add(1)
		if res.Existed {
			s.note(id, "closed", "")
		}
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
