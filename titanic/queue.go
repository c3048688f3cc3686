package titanic

import (
	"sort"
	"time"

	"github.com/titanicmq/titanic/store"
)

// entry is a ticket the dispatcher knows about: waiting in a service queue
// or held by a worker.
type entry struct {
	id       store.ID
	service  string
	seq      uint64
	attempts int
	// queued is when the entry last became pending (submit, recovery or
	// requeue); the no-worker timeout counts from here.
	queued time.Time
	// body is cached while the cache budget allows; nil means it must be
	// loaded from the store before dispatch.
	body [][]byte
	size int
	// gone marks an entry closed or failed while still linked in a fifo;
	// pop skips it and compact drops it.
	gone bool
	// leased is set while a worker holds the entry (it is then in no fifo).
	leased bool
	// replied is set, with leased, once the worker answered and was
	// released while the reply waits for its commit: the entry stays out
	// of every fifo until the commit's outcome either forgets it (durable,
	// or refused by the store) or requeues it (the batch failed).
	replied bool
}

func bodySize(body [][]byte) int {
	n := 0
	for _, f := range body {
		n += len(f)
	}
	return n
}

// fifo is one service's pending tickets in Seq order. Tickets arrive in Seq
// order (submits commit in order, recovery reads in order), so new ones are
// appended; a requeued ticket is older than most and goes to a small sorted
// retry list that Next consults first. Both ends are O(1) in the common case
// so a queue of 100,000 costs a submit no more than a queue of 10.
type fifo struct {
	items []*entry // items[head:] are live, in Seq order
	head  int
	retry []*entry // sorted by Seq
}

func (q *fifo) len() int { return len(q.items) - q.head + len(q.retry) }

func (q *fifo) push(e *entry) {
	if n := len(q.items); n > q.head && q.items[n-1].seq > e.seq {
		// Out of order (a requeue, or a late recovery): keep Seq order.
		q.pushRetry(e)
		return
	}
	q.items = append(q.items, e)
}

func (q *fifo) pushRetry(e *entry) {
	i := sort.Search(len(q.retry), func(i int) bool { return q.retry[i].seq > e.seq })
	q.retry = append(q.retry, nil)
	copy(q.retry[i+1:], q.retry[i:])
	q.retry[i] = e
}

// peek returns the oldest entry without removing it.
func (q *fifo) peek() *entry {
	var a, b *entry
	if len(q.retry) > 0 {
		a = q.retry[0]
	}
	if q.head < len(q.items) {
		b = q.items[q.head]
	}
	switch {
	case a == nil:
		return b
	case b == nil || a.seq < b.seq:
		return a
	}
	return b
}

// pop removes the entry peek returned.
func (q *fifo) pop() *entry {
	e := q.peek()
	if e == nil {
		return nil
	}
	if len(q.retry) > 0 && q.retry[0] == e {
		q.retry[0] = nil
		q.retry = q.retry[1:]
		return e
	}
	q.items[q.head] = nil
	q.head++
	// Reclaim the consumed prefix once it dominates the slice, so memory
	// follows the live length and appends stay amortised O(1).
	if q.head > 1024 && q.head*2 > len(q.items) {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items = q.items[:n]
		q.head = 0
	}
	return e
}

// each calls fn on entries in Seq order until fn returns false.
func (q *fifo) each(fn func(*entry) bool) {
	i, j := 0, q.head
	for i < len(q.retry) || j < len(q.items) {
		var e *entry
		if j >= len(q.items) || (i < len(q.retry) && q.retry[i].seq < q.items[j].seq) {
			e = q.retry[i]
			i++
		} else {
			e = q.items[j]
			j++
		}
		if !fn(e) {
			return
		}
	}
}

// compact drops gone entries, so that tickets closed while waiting do not
// hold memory until they would have reached the head.
func (q *fifo) compact() {
	live := q.items[:0]
	for _, e := range q.items[q.head:] {
		if !e.gone {
			live = append(live, e)
		}
	}
	clear(q.items[len(live):])
	q.items, q.head = live, 0
	r := q.retry[:0]
	for _, e := range q.retry {
		if !e.gone {
			r = append(r, e)
		}
	}
	clear(q.retry[len(r):])
	q.retry = r
}
