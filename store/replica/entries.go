package replica

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/titanicmq/titanic/store"
)

// The entry builder turns the leader's ApplyAsync calls into raft log
// entries. It is the replicated form of the store's writer queue (see
// store.BoltStore.ApplyAsync), and the only queue of pending ops in a
// replicated node: calls wait here while the entries before them
// replicate, every call queued meanwhile goes into the next entry (one
// entry is one batch: up to the store's BatchLimits, in ops and in bytes,
// so an entry stays far below what raft can send within its transport
// timeout and what raft-boltdb can store as one value), and up to
// maxInFlight entries are in raft at once so that raft replicates them
// together. Once raft commits an entry, the fsm applies it to the store
// on every node (fsm.go): that hand-over carries entries raft has already
// ordered and batched, one caller at a time, and queues nothing.
//
// The dones of the calls are called in hand-over order on the completer
// goroutine, as the store's are.

// maxInFlight bounds the entries handed to raft and not yet applied;
// pipelineMin is the fewest ops sent as an entry while another is in
// flight: fewer wait for more, or for the entry in flight to complete.
const (
	maxInFlight = 4
	pipelineMin = 64
)

// calls is the queue of ApplyAsync calls waiting for an entry.
type calls struct {
	mu     sync.Mutex
	queue  []call
	ops    int  // ops in queue
	flying int  // entries handed to raft, not completed
	closed bool // the builder has returned: calls fail at once
	wake   chan struct{}
}

type call struct {
	ops  []store.Op
	size int
	done func(store.Done)
}

type flight struct {
	calls []call
	wait  func(context.Context) ([]store.Result, error)
}

func (c *calls) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// ApplyAsync implements store.Store: ops join the next log entry. On a
// node that is not the leader the call fails with ErrNotLeader; after
// Close, with store.ErrClosed (and ErrNotLeader, for callers that branch
// on that).
func (n *Node) ApplyAsync(ops []store.Op, done func(store.Done)) {
	if slices.ContainsFunc(ops, func(o store.Op) bool { return unknownKind(o) || gated(o) }) {
		ops, done = n.admit(ops, done)
	}
	c := &n.calls
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		go done(store.Done{Err: fmt.Errorf("%w: %w", store.ErrClosed, ErrNotLeader), Last: true})
		return
	}
	c.queue = append(c.queue, call{ops: ops, size: store.OpsSize(ops), done: done})
	c.ops += len(ops)
	c.mu.Unlock()
	c.signal()
}

// buildEntries is the entry builder goroutine; the completer runs beside
// it. Both stop when the node closes, after every call queued has been
// answered (those still queued fail with store.ErrClosed).
func (n *Node) buildEntries() {
	defer n.wg.Done()
	c := &n.calls
	inflight := make(chan flight, maxInFlight)
	completed := make(chan struct{})
	go func() {
		defer close(completed)
		for f := range inflight {
			n.completeEntry(f)
		}
	}()
	defer func() {
		close(inflight)
		<-completed
	}()
	maxOps, maxBytes := n.st.BatchLimits()
	for {
		c.mu.Lock()
		stopping := false
		select {
		case <-n.stop:
			stopping = true
		default:
		}
		if len(c.queue) == 0 || (!stopping && c.ops < pipelineMin && c.flying > 0) {
			if stopping {
				c.closed = true
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
			select {
			case <-c.wake:
			case <-n.stop:
			}
			continue
		}
		k, ops, size := 1, len(c.queue[0].ops), c.queue[0].size
		for k < len(c.queue) && ops+len(c.queue[k].ops) <= maxOps && size+c.queue[k].size <= maxBytes {
			ops, size = ops+len(c.queue[k].ops), size+c.queue[k].size
			k++
		}
		batch := c.queue[:k:k]
		c.queue = slices.Clone(c.queue[k:])
		c.ops -= ops
		c.flying++
		c.mu.Unlock()

		var wait func(context.Context) ([]store.Result, error)
		switch {
		case stopping:
			wait = func(context.Context) ([]store.Result, error) {
				return nil, fmt.Errorf("%w: %w", store.ErrClosed, ErrNotLeader)
			}
		case ops == 0:
			wait = func(context.Context) ([]store.Result, error) { return []store.Result{}, nil }
		default:
			all := make([]store.Op, 0, ops)
			for _, b := range batch {
				all = append(all, b.ops...)
			}
			wait = n.propose(all)
		}
		inflight <- flight{calls: batch, wait: wait}
	}
}

// completeEntry waits for an entry and calls its calls' dones, in order.
func (n *Node) completeEntry(f flight) {
	res, err := f.wait(context.Background())
	if err == nil && len(res) != countOps(f.calls) {
		err = fmt.Errorf("raft apply: %d results for %d ops", len(res), countOps(f.calls))
	}
	for i, b := range f.calls {
		d := store.Done{Err: err, Last: i == len(f.calls)-1}
		if err == nil {
			d.Results, res = res[:len(b.ops):len(b.ops)], res[len(b.ops):]
		}
		b.done(d)
	}
	c := &n.calls
	c.mu.Lock()
	c.flying--
	c.mu.Unlock()
	c.signal() // the builder may send a small entry now
}

func countOps(cs []call) int {
	n := 0
	for _, c := range cs {
		n += len(c.ops)
	}
	return n
}
