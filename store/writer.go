package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// request is one Apply call, or a control request (Check, Restore) that
// needs the writer to itself, waiting in the writer's queue.
type request struct {
	ops   []Op
	index uint64 // replicated-log index (ApplyAt), 0 for Apply
	term  uint64 // the entry's raft term (0: unknown)
	// solo, shared and cluster: see Entry.
	solo, shared bool
	cluster      int
	// diverged is set by the writer when the entry's index was applied
	// with another term: the log was rewritten under the store.
	diverged bool
	ctrl     func() error // non-nil for a control request; runs with no write tx open
	done     chan outcome // capacity 1, so the writer never blocks on a caller
	cb       func(Done)   // ApplyAsync's done, instead of done
	size     int          // OpsSize(ops), for the batch's byte bound
	taken    bool         // guarded by BoltStore.mu; set when the writer takes it
	// lazy: an ApplyAsync of ops nobody waits on, which may linger
	// (Options.Linger) from at.
	lazy bool
	at   time.Time
}

type outcome struct {
	results []Result
	err     error
}

// Apply implements Store. It queues ops for the writer goroutine, which
// commits everything queued at that moment (up to Options.MaxBatch ops and
// Options.MaxBatchBytes bytes) in
// one bbolt transaction and one fsync, and returns after that fsync.
//
// If ctx ends while the ops are still queued they are withdrawn, nothing is
// applied and Apply returns ctx.Err(). If ctx ends after the writer took
// them, Apply still returns ctx.Err() at once, but the ops will be applied
// (or fail) anyway; callers that must know use an idempotency key and
// submit again. In that case the writer may read ops after Apply returned,
// so their byte slices must not be modified.
func (s *BoltStore) Apply(ctx context.Context, ops []Op) ([]Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(ops) == 0 {
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		return []Result{}, nil
	}
	r := &request{ops: ops, done: make(chan outcome, 1), size: OpsSize(ops)}
	if err := s.enqueue(r); err != nil {
		return nil, err
	}
	o := s.wait(ctx, r, false)
	return o.results, o.err
}

// ApplyAsync implements Store: ops join the writer's queue, as Apply's
// do, and done is called on the completer goroutine once they are durable.
func (s *BoltStore) ApplyAsync(ops []Op, done func(Done)) {
	r := &request{ops: ops, cb: done, size: OpsSize(ops)}
	if s.opts.Linger > 0 && lazyOps(ops) {
		r.lazy, r.at = true, time.Now()
	}
	if err := s.enqueue(r); err != nil {
		// Closed: the completer may be gone; nothing is in flight to
		// keep an order with.
		go done(Done{Err: err, Last: true})
	}
}

// ApplyAt is Apply for a replicated log (the store as a raft state
// machine): index is the log position of ops. The highest index applied is
// recorded in the same transaction as the ops, and a call whose index is
// not above it applies nothing and fails with ErrApplied, so replaying a
// log over a durable store applies each entry exactly once. Calls must
// come in index order; concurrent calls may share one commit.
func (s *BoltStore) ApplyAt(ctx context.Context, index uint64, ops []Op) ([]Result, error) {
	out := s.ApplyLog(ctx, []Entry{{Index: index, Ops: ops}})
	return out[0].Results, out[0].Err
}

// Entry is one replicated-log entry for ApplyLog. Term, when set, goes
// into the store's epoch history (see History), so that an entry replayed
// at an index the store applied under another term, or an entry whose
// term is lower than the last applied one, is reported (ErrDiverged)
// instead of silently skipped, however old the entry.
type Entry struct {
	Index uint64
	Term  uint64
	Ops   []Op
	// Solo: a leader that was the only voter wrote the entry; the
	// tickets it changes go in the solo journal (see ForkOps).
	Solo bool
	// Shared: the entry was committed by every node of a pair, and so
	// was all before it: the journal is pruned before it.
	Shared bool
	// ClusterVersion, when above the store's, raises it (see
	// ClusterVersion): the leader saw every member report a binary that
	// reads ops records of that version. It never goes down.
	ClusterVersion int
}

// EntryResult is the outcome of one Entry: as ApplyAt's results and error.
type EntryResult struct {
	Results []Result
	Err     error
}

// ApplyLog is ApplyAt for consecutive entries: they are queued together,
// in order, so the store commits them in as few transactions (and fsyncs)
// as MaxBatch and MaxBatchBytes allow.
func (s *BoltStore) ApplyLog(ctx context.Context, entries []Entry) []EntryResult {
	out := make([]EntryResult, len(entries))
	reqs := make([]*request, 0, len(entries))
	for i, e := range entries {
		if e.Index == 0 {
			out[i].Err = fmt.Errorf("%w: log index 0", ErrInvalidOp)
			continue
		}
		reqs = append(reqs, &request{ops: e.Ops, index: e.Index, term: e.Term, solo: e.Solo, shared: e.Shared, cluster: e.ClusterVersion, done: make(chan outcome, 1), size: OpsSize(e.Ops)})
	}
	if err := ctx.Err(); err != nil {
		for i := range out {
			out[i].Err = err
		}
		return out
	}
	if err := s.enqueue(reqs...); err != nil {
		for i := range out {
			if out[i].Err == nil {
				out[i].Err = err
			}
		}
		return out
	}
	j := 0
	for i := range out {
		if out[i].Err != nil {
			continue
		}
		o := s.wait(ctx, reqs[j], true)
		out[i] = EntryResult{Results: o.results, Err: o.err}
		j++
	}
	return out
}

// AppliedIndex returns the highest log index applied through ApplyAt (0
// for a store never used as a replica).
func (s *BoltStore) AppliedIndex(ctx context.Context) (uint64, error) {
	var n uint64
	err := s.view(ctx, func(tx *bolt.Tx) error {
		if v := tx.Bucket(metaBucket).Get(appliedKey); len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return n, err
}

// ClusterVersion returns the cluster version recorded in the store: the
// newest ops record version that every member of a replicated cluster was
// known to read when its leader last raised it (Entry.ClusterVersion). A
// store that never had one raised reports 1, the first release's
// version. A replicated store writes an op only if its kind's Version is
// at most this (except OpAdopt, which only a pair's nodes exchange, and
// only when both take part); a store on its own reads and writes every
// kind this build knows.
func (s *BoltStore) ClusterVersion(ctx context.Context) (int, error) {
	n := uint64(1)
	err := s.view(ctx, func(tx *bolt.Tx) error {
		if v := tx.Bucket(metaBucket).Get(clusterKey); len(v) == 8 {
			n = max(n, binary.BigEndian.Uint64(v))
		}
		return nil
	})
	return int(min(n, 1<<20)), err
}

// control runs fn on the writer goroutine between two commits, so fn sees
// no write transaction in progress and may even replace the file. Once
// taken, fn runs to the end and control waits for it, whatever ctx says.
func (s *BoltStore) control(ctx context.Context, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &request{ctrl: fn, done: make(chan outcome, 1)}
	if err := s.enqueue(r); err != nil {
		return err
	}
	return s.wait(ctx, r, true).err
}

func (s *BoltStore) enqueue(rs ...*request) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.queue = append(s.queue, rs...)
	s.mu.Unlock()
	s.signal()
	return nil
}

// signal wakes the writer without blocking; one pending token is enough
// because the writer empties the queue before it waits again.
func (s *BoltStore) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// wait waits for r's outcome or for ctx. See Apply for what a cancelled
// ctx means; with mustFinish, a taken request is waited for to the end.
func (s *BoltStore) wait(ctx context.Context, r *request, mustFinish bool) outcome {
	select {
	case o := <-r.done:
		return o
	case <-ctx.Done():
	}
	s.mu.Lock()
	if !r.taken {
		if i := slices.Index(s.queue, r); i >= 0 {
			s.queue = slices.Delete(s.queue, i, i+1)
		}
		s.mu.Unlock()
		return outcome{err: ctx.Err()}
	}
	s.mu.Unlock()
	if mustFinish {
		return <-r.done
	}
	select {
	case o := <-r.done: // finished meanwhile: the outcome is known, report it
		return o
	default:
		return outcome{err: ctx.Err()}
	}
}

// run is the writer goroutine: the only one that writes to the database.
// It never sleeps to gather a batch: it commits as soon as it is idle, and
// whatever queued during that commit's fsync forms the next batch. It
// hands the ApplyAsync calls of each commit to the completer, so that
// their dones run while the next batch is written.
func (s *BoltStore) run() {
	defer close(s.done)
	defer close(s.completions)
	defer s.prefill.close()
	for {
		batch, ok := s.take()
		if !ok {
			return
		}
		if r := batch[0]; r.ctrl != nil {
			r.done <- outcome{err: r.ctrl()}
			continue
		}
		s.commit(batch)
		if len(s.finished) > 0 {
			s.completions <- s.finished
			s.finished = nil
		}
		// After the answers are on their way, before the next commit.
		if s.db != nil {
			s.prefill.after(s.db, s.grown)
		}
	}
}

// complete is the completer goroutine: it calls the dones of ApplyAsync
// calls, commit by commit, in the order the writer committed them.
func (s *BoltStore) complete() {
	defer close(s.completed)
	for batch := range s.completions {
		for i, c := range batch {
			c.cb(Done{Results: c.o.results, Err: c.o.err, Last: i == len(batch)-1})
		}
	}
}

// completion is an ApplyAsync call's outcome, waiting for the completer.
type completion struct {
	cb func(Done)
	o  outcome
}

// answer delivers r's outcome: to its Apply caller at once, or to the
// completer after the commit (writer only).
func (s *BoltStore) answer(r *request, o outcome) {
	if r.cb != nil {
		s.finished = append(s.finished, completion{cb: r.cb, o: o})
		return
	}
	r.done <- o
}

// OpsSize is the bytes a batch's ops weigh against Options.MaxBatchBytes:
// their frames and strings, plus a fixed overhead per op for what the
// encoding adds (IDs, times, lengths). It is an estimate of EncodeOps'
// length, cheap enough to compute at every hand-over.
func OpsSize(ops []Op) int {
	n := 0
	for i := range ops {
		o := &ops[i]
		n += opOverhead + len(o.Service) + len(o.IdemKey) + len(o.Reason)
		for _, f := range o.Body {
			n += len(f) + 4
		}
		for _, f := range o.Reply {
			n += len(f) + 4
		}
	}
	return n
}

const opOverhead = 48

// take waits for work and removes from the queue either one control
// request or the longest run of Apply calls holding at most MaxBatch ops
// and MaxBatchBytes bytes (OpsSize). The first call is always taken, so a
// call larger than either bound commits alone. It reports false when the
// store is closed and the queue drained.
func (s *BoltStore) take() ([]*request, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		for len(s.queue) == 0 {
			if s.closed {
				return nil, false
			}
			s.mu.Unlock()
			<-s.wake
			s.mu.Lock()
		}
		wait := s.lingerFor()
		if wait <= 0 {
			break
		}
		s.mu.Unlock()
		s.waitLinger(wait)
		s.mu.Lock()
	}
	n := 1
	if s.queue[0].ctrl == nil {
		ops, size := len(s.queue[0].ops), s.queue[0].size
		for n < len(s.queue) {
			r := s.queue[n]
			if r.ctrl != nil || ops+len(r.ops) > s.opts.MaxBatch || size+r.size > s.opts.MaxBatchBytes {
				break
			}
			ops, size = ops+len(r.ops), size+r.size
			n++
		}
	}
	batch := s.queue[:n:n]
	for _, r := range batch {
		r.taken = true
	}
	s.queue = slices.Clone(s.queue[n:])
	return batch, true
}

// lazyOps reports whether ops only record what workers did (Options.Linger).
func lazyOps(ops []Op) bool {
	for i := range ops {
		switch ops[i].Kind {
		case OpDispatch, OpReply, OpRequeue, OpFail, OpUndispatch:
		default:
			return false
		}
	}
	return len(ops) > 0
}

// LingerOps is the most ops of lazy requests the writer holds back
// (Options.Linger): that many commit at once.
const LingerOps = 256

// lingerFor is how much longer the writer may wait before it takes the
// queue: while it holds only lazy requests (fewer than LingerOps ops and
// no control request, the store not closing), until the oldest has
// waited Options.Linger. Callers hold s.mu; the queue is not empty.
func (s *BoltStore) lingerFor() time.Duration {
	if s.opts.Linger <= 0 || s.closed {
		return 0
	}
	ops := 0
	for _, r := range s.queue {
		if !r.lazy {
			return 0
		}
		if ops += len(r.ops); ops >= LingerOps {
			return 0
		}
	}
	return time.Until(s.queue[0].at.Add(s.opts.Linger))
}

// waitLinger waits d, or until a request is queued (or the store closes).
// Writer only.
func (s *BoltStore) waitLinger(d time.Duration) {
	if s.lingerTimer == nil {
		s.lingerTimer = time.NewTimer(d)
	} else {
		s.lingerTimer.Reset(d)
	}
	select {
	case <-s.wake:
	case <-s.lingerTimer.C:
	}
	s.lingerTimer.Stop()
}

// applyError marks a failure while applying one request's ops, as opposed
// to a failure of the commit itself.
type applyError struct{ err error }

func (e *applyError) Error() string { return e.err.Error() }
func (e *applyError) Unwrap() error { return e.err }

// applyOps applies one request's ops in t. A panic in apply (a bug, or a
// page bbolt finds damaged) fails the request instead of the process:
// the transaction is rolled back, commit retries the others alone, and the
// request's caller gets the error. Left to unwind, it took the broker down,
// and in a raft group every restart replayed the entry and panicked again;
// now a replica stops at that entry with the error (see replica's fsm).
func (s *BoltStore) applyOps(t *txn, ops []Op) (res []Result, err error) {
	j := 0
	defer func() {
		if r := recover(); r != nil {
			res, err = nil, fmt.Errorf("%w: applying %s %s panicked: %v", ErrInvalidOp, ops[j].Kind, ops[j].ID, r)
			s.log.Error("apply panicked: the call fails, the store goes on", "op", ops[j].Kind.String(), "ticket", ops[j].ID, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	res = make([]Result, len(ops))
	taken := 0 // ops after an OpHandover that this store took before
	for j = range ops {
		if s.failOp != nil {
			if err := s.failOp(&ops[j]); err != nil {
				return nil, err
			}
		}
		if taken > 0 {
			taken--
			res[j] = Result{ID: ops[j].ID, Err: opErr(&ops[j], ErrHandedOver, "")}
			continue
		}
		if ops[j].Kind == OpHandover {
			if res[j], taken, err = t.handover(&ops[j], len(ops)-j-1); err != nil {
				return nil, err
			}
			continue
		}
		if res[j], err = t.apply(&ops[j]); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// commit applies a batch in one transaction and answers every request. If
// applying one request's ops fails (a bbolt error, not an op's own error),
// the transaction is rolled back and each request is retried alone, so the
// failure stays with the request that caused it. A failed commit (write or
// fsync error) fails the whole batch: nothing of it was applied.
// It reports whether the whole batch was applied.
func (s *BoltStore) commit(batch []*request) bool {
	results, err := s.update(batch)
	var ae *applyError
	if err != nil && len(batch) > 1 && errors.As(err, &ae) {
		s.log.Warn("batch failed, retrying its calls one by one", "calls", len(batch), "err", err)
		var logGap error
		for _, r := range batch {
			if r.index > 0 && logGap != nil {
				// A log entry must not be applied after an earlier one
				// failed: the applied index would skip the failed one.
				s.answer(r, outcome{err: logGap})
				continue
			}
			if !s.commit([]*request{r}) && r.index > 0 {
				logGap = fmt.Errorf("apply: log entry %d failed before this one", r.index)
			}
		}
		return false
	}
	if err != nil {
		s.log.Error("commit failed", "calls", len(batch), "err", err)
		err = fmt.Errorf("apply: %w", err)
	}
	// Count before answering, so that a caller reading Stats after its
	// Apply returned sees its own call counted.
	s.applies.Add(uint64(len(batch)))
	for i, r := range batch {
		if err != nil {
			s.answer(r, outcome{err: err})
			continue
		}
		if results[i] == nil && r.index > 0 {
			if r.diverged {
				s.answer(r, outcome{err: fmt.Errorf("%w: log index %d term %d is not in the history this store applied", ErrDiverged, r.index, r.term)})
				continue
			}
			s.answer(r, outcome{err: fmt.Errorf("%w: log index %d", ErrApplied, r.index)})
			continue
		}
		s.ops.Add(uint64(len(r.ops)))
		s.answer(r, outcome{results: results[i]})
	}
	return err == nil
}

// update runs one write transaction over batch. Only the writer calls it,
// and only the writer replaces s.db, so it reads s.db without dbMu.
func (s *BoltStore) update(batch []*request) ([][]Result, error) {
	if s.db == nil {
		return nil, fmt.Errorf("%w: no data file open after a failed restore", ErrClosed)
	}
	if s.stopped != nil {
		return nil, s.stopped
	}
	results := make([][]Result, len(batch))
	var (
		txid    int
		applied bool // the ops are in; an error now comes from the commit
		newer   bool // the commit moves the file to formatV2
		raised  bool // so does its raise of the cluster version
		size    int64
	)
	start := time.Now()
	err := s.db.Update(func(tx *bolt.Tx) error {
		txid, size = tx.ID(), tx.Size()
		t, err := newTxn(tx, &s.bufs)
		if err != nil {
			return err
		}
		var (
			ep     *epochs
			forked bool // an earlier entry of this batch diverged
		)
		for i, r := range batch {
			if r.index > 0 {
				if ep == nil {
					if ep, err = openEpochs(tx); err != nil {
						return err
					}
				}
				if forked {
					r.diverged = true
					continue
				}
				if r.index <= t.applied {
					// Already applied: results[i] stays nil. Under the
					// same term it is a replay; under another, the log
					// this store followed was replaced.
					was, err := ep.termAt(r.index, t.applied)
					if err != nil {
						return err
					}
					r.diverged = !sameTerm(was, r.term)
					forked = r.diverged
					continue
				}
				backwards, err := ep.record(r.index, r.term, t.applied)
				if err != nil {
					return err
				}
				if backwards {
					r.diverged, forked = true, true
					continue
				}
				t.applied, t.appliedDirty = r.index, true
				if c := uint64(max(r.cluster, 0)); c > max(t.cluster, 1) {
					t.cluster, t.clusterDirty = c, true
					// A raised cluster may write newer kinds from now on,
					// so the first release must not start on this store
					// any more (formatV2): rolled back, it skipped the
					// entries it could not read and served without the
					// tickets in them, acknowledged (found by a reviewer
					// of upgrades). Its optional fields stay out until a
					// newer kind is used (kindsUsed), as before the raise.
					t.raise = true
				}
			}
			t.logged = r.index > 0
			if r.shared {
				// Before the entry's ops: a mark among them is of a
				// handover still going on.
				if err := t.forgetHandovers(); err != nil {
					return &applyError{err}
				}
			}
			res, err := s.applyOps(t, r.ops)
			if err != nil {
				return &applyError{err}
			}
			if r.solo {
				if err := t.journal(r.index, r.ops, res); err != nil {
					return &applyError{err}
				}
			}
			if r.shared {
				if err := t.pruneJournal(r.index); err != nil {
					return &applyError{err}
				}
			}
			results[i] = res
		}
		if err := t.finish(); err != nil {
			return err
		}
		newer = t.newerKind
		raised = t.raise
		applied = true
		return nil
	})
	if err != nil {
		if applied {
			s.afterFailedCommit(txid, err)
		}
		return nil, err
	}
	if newer || raised {
		s.newerFormat.Store(true)
	}
	if newer {
		s.newerKinds.Store(true)
	}
	// For the next commit (no write transaction runs now), from the size
	// this one began with and the free pages it left: the commit that
	// takes the data past the threshold is followed by one that writes
	// the list.
	syncFreelist(s.db, size, s.opts)
	s.grown = size
	s.commits.Add(1)
	if s.opts.ObserveCommit != nil {
		s.opts.ObserveCommit(time.Since(start))
	}
	return results, nil
}

// afterFailedCommit decides whether writes may go on after a commit
// failed. When the data pages could not be written or synced (a full
// disk, typically), bbolt never wrote the meta page: the transaction is
// simply lost and the next one starts from the previous state. But when
// only the final fdatasync of the meta page failed, the meta page is in
// the page cache: this process now sees the transaction as committed, yet
// it may never reach the disk, and after a failed fsync Linux may drop the
// dirty pages without retrying. Committing on top of it could then make a
// later, successful fsync reference pages that were never written. So in
// that case the writer stops: every later Apply fails with ErrClosed until
// the store is reopened (reads still work).
func (s *BoltStore) afterFailedCommit(txid int, cause error) {
	seen := 0
	if err := s.db.View(func(tx *bolt.Tx) error { seen = tx.ID(); return nil }); err != nil || seen >= txid {
		s.stopped = fmt.Errorf("%w: writes stopped after commit %d failed with its meta page written (%v); reopen the store",
			ErrClosed, txid, cause)
		s.log.Error("commit failed after its meta page was written; writes stopped", "tx", txid, "err", cause)
		s.stopOnce.Do(func() { close(s.writesStopped) })
	}
}

// WritesStopped is closed when the store stops writing for good after a
// commit whose outcome is in doubt (see afterFailedCommit): only a
// reopen, which reads the file as the disk holds it, writes again. A
// single broker stops on it (a supervisor starts it again); a replica
// stops on its failed apply.
func (s *BoltStore) WritesStopped() <-chan struct{} { return s.writesStopped }

// BatchLimits returns the bounds of one batch (Options.MaxBatch and
// MaxBatchBytes); a replicated store builds its log entries within them.
func (s *BoltStore) BatchLimits() (ops, bytes int) { return s.opts.MaxBatch, s.opts.MaxBatchBytes }
