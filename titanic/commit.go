package titanic

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/titanicmq/titanic/store"
)

// pendingOp is a mutation handed to the store, with what to do once it
// is durable (or once its batch failed: res.Err is then the batch error).
type pendingOp struct {
	op     store.Op
	done   func(res store.Result, batchErr error)
	client bool // counted against MaxQueuedOps
}

// asyncApplier is what the committer needs of the store: its one commit
// pipeline (store.Store.ApplyAsync).
type asyncApplier interface {
	ApplyAsync(ops []store.Op, done func(store.Done))
}

// committer is the part of the Service that hands mutations to the
// store's commit pipeline and runs their completions. It owns the count
// of ops in flight (all of them, for Idle and the drain on shutdown, and
// the client-originated ones, bounded by MaxQueuedOps) and the services
// to wake once the commit being completed has ended. It decides nothing
// about tickets: each op's done does, on the store's completer goroutine.
type committer struct {
	st        asyncApplier
	maxClient int64
	stats     *counters
	log       *slog.Logger
	// observe is Config.ObserveCommit (may be nil).
	observe func(time.Duration)
	// beginCommit runs before the first completion of each commit, so
	// that its answers see what the commit changed (the quota's usage,
	// the free disk space).
	beginCommit func()
	// wake tells the broker that a service has new work (Broker.Wake).
	wake func(service string)
	// finishing, when set, is told of every op that may finish or
	// delete its ticket before the store sees it, and again once its
	// completion ran (see pending.go).
	finishing finishMarks

	// Mutations handed to the store and not yet completed: all of
	// them, and the client-originated ones (MaxQueuedOps). drain waits
	// on drained for inflight to reach 0.
	inflight  atomic.Int64
	clientOps atomic.Int64
	drainMu   sync.Mutex
	drained   *sync.Cond
	// toWake collects the services that got new tickets in the commit
	// being completed; commitEnded: the last completion ended a commit
	// (the next one begins another).
	wakeMu      sync.Mutex
	toWake      map[string]struct{}
	commitEnded bool
}

// finishMarks counts the ops in flight that may finish or delete a
// ticket (dispatcher.finishBegins, finishEnds).
type finishMarks interface {
	finishBegins(id store.ID)
	finishEnds(id store.ID, failed bool)
}

// newCommitter returns a committer over st that refuses client ops past
// maxClient in flight.
func newCommitter(st asyncApplier, maxClient int, stats *counters, log *slog.Logger, observe func(time.Duration), beginCommit func(), wake func(string)) *committer {
	c := &committer{
		st:          st,
		maxClient:   int64(maxClient),
		stats:       stats,
		log:         log,
		observe:     observe,
		beginCommit: beginCommit,
		wake:        wake,
		toWake:      make(map[string]struct{}),
		commitEnded: true,
	}
	c.drained = sync.NewCond(&c.drainMu)
	return c
}

// enqueue hands ops to the store (store.Store.ApplyAsync) without blocking;
// the store's queue is the only one between the service and the disk, and
// the store calls the completions in order on its completer goroutine.
// Client-originated ops are refused with errBusy while MaxQueuedOps of
// them are not yet durable; internal ops (dispatch marks, replies,
// requeues) are bounded by the number of leases and always taken, so a
// worker's answer is never dropped.
func (c *committer) enqueue(ops ...pendingOp) error {
	if len(ops) == 0 {
		return nil
	}
	client := 0
	if ops[0].client {
		client = len(ops)
		if n := c.clientOps.Add(int64(client)); n > c.maxClient {
			c.clientOps.Add(-int64(client))
			c.stats.busy.Add(1)
			return errBusy
		}
	}
	c.inflight.Add(1)
	c.markFinishing(ops)
	h := &handover{start: time.Now()}
	// Most hand-overs are one op: it and its copy for the store live in
	// h, so that the caller's ops stay on its stack (they are copied
	// when there are more).
	if len(ops) == 1 {
		h.one[0], h.oneOp[0] = ops[0], ops[0].op
		h.ops, h.batch = h.one[:], h.oneOp[:]
	} else {
		h.ops, h.batch = slices.Clone(ops), make([]store.Op, len(ops))
		for i, p := range ops {
			h.batch[i] = p.op
		}
	}
	c.st.ApplyAsync(h.batch, func(d store.Done) {
		c.complete(h.ops, d, h.start)
		c.clientOps.Add(-int64(client))
		if c.inflight.Add(-1) == 0 {
			c.drainMu.Lock()
			c.drained.Broadcast()
			c.drainMu.Unlock()
		}
	})
	return nil
}

// markFinishing counts the ops that may finish or delete their ticket
// before the store sees them: from then until their completion ran, a
// lookup may see them done in the store while the dispatcher still holds
// the ticket.
func (c *committer) markFinishing(ops []pendingOp) {
	if c.finishing == nil {
		return
	}
	for i := range ops {
		if mayFinish(ops[i].op.Kind) {
			c.finishing.finishBegins(ops[i].op.ID)
		}
	}
}

// handover is one enqueue's ops and its batch for the store, in one
// allocation when it is one op.
type handover struct {
	ops   []pendingOp
	batch []store.Op
	start time.Time
	one   [1]pendingOp
	oneOp [1]store.Op
}

// complete runs the completions of one hand-over. Per-commit work is done
// once: beginCommit runs before the commit's first answer (the quota's
// usage and the free space are read again), its stats are counted, and
// the broker is woken once per service after its last. Store completer only (one goroutine, in
// hand-over order).
func (c *committer) complete(ops []pendingOp, d store.Done, start time.Time) {
	err := d.Err
	if err == nil && len(d.Results) != len(ops) {
		err = fmt.Errorf("store answered %d results for %d ops", len(d.Results), len(ops))
	}
	c.wakeMu.Lock()
	first := c.commitEnded
	c.commitEnded = d.Last
	c.wakeMu.Unlock()
	if first {
		c.beginCommit()
		c.stats.commits.Add(1)
		if err != nil {
			c.stats.commitErrors.Add(1)
		}
	}
	if err != nil {
		c.log.Error("commit failed", "ops", len(ops), "err", err)
	}
	c.stats.committedOps.Add(uint64(len(ops)))
	for i, p := range ops {
		var r store.Result
		if err == nil {
			r = d.Results[i]
		}
		p.done(r, err)
		if c.finishing != nil && mayFinish(p.op.Kind) {
			c.finishing.finishEnds(p.op.ID, err != nil)
		}
	}
	if !d.Last {
		return
	}
	if c.observe != nil {
		c.observe(time.Since(start))
	}
	c.wakeMu.Lock()
	for svc := range c.toWake {
		c.wake(svc)
		delete(c.toWake, svc)
	}
	c.wakeMu.Unlock()
}

// drain waits until every op handed to the store has completed.
func (c *committer) drain() {
	c.drainMu.Lock()
	defer c.drainMu.Unlock()
	for c.inflight.Load() > 0 {
		c.drained.Wait()
	}
}

// wakeAfter has the broker woken for service once the commit being
// completed has ended (once per service and commit). Store completer
// only.
func (c *committer) wakeAfter(service string) {
	c.wakeMu.Lock()
	c.toWake[service] = struct{}{}
	c.wakeMu.Unlock()
}

// idle reports whether every op handed to the store has completed.
func (c *committer) idle() bool { return c.inflight.Load() == 0 }
