package titanic

import (
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
	// failing is set, with leased, on an entry taken out of its queue to
	// fail for good (expired, or no worker) while the failure commits: no
	// worker holds it, so no lease token may name it.
	failing bool
	// lease is the dispatcher's number of the entry's current dispatch
	// (broker.Job.Tag): a lease's end acts on the entry only if it names
	// it. An older lease of the ticket (given out before a reset, whose
	// entry was then recovered and dispatched again) may end late, and
	// must not end the current one.
	lease uint64
	// stored is the state the store records for the ticket while no
	// worker holds it (pending; a ticket read dispatched is held until
	// its cut-short attempt is recorded: cutShortLocked); 0 when not
	// known. A titanic.reply answered from memory reads it (pending.go).
	stored store.State

	// The ticket's lifecycle (store.Lifecycle). due is when it may be
	// dispatched: while it is in the future the entry waits in the
	// service's delay heap, in no fifo. deadline is when it expires if
	// not dispatched; it is cleared on the first dispatch (a dispatched
	// ticket does not expire). retry overrides the service's and the
	// broker's retry policy field by field.
	prio     store.Priority
	due      time.Time
	deadline time.Time
	retry    store.RetryPolicy
	// duePos and deadlinePos are the entry's positions in the delay and
	// deadline heaps, plus one: 0 means not in that heap.
	duePos, deadlinePos int
}

// withLifecycle sets e's lifecycle from a ticket's or a submit's. A
// ticket that was dispatched before has no deadline left.
func (e *entry) withLifecycle(l store.Lifecycle, attempts int) *entry {
	e.prio, e.due, e.retry = l.Priority, l.Due, l.Retry
	if attempts == 0 {
		e.deadline = l.Deadline
	}
	return e
}

func bodySize(body [][]byte) int {
	n := 0
	for _, f := range body {
		n += len(f)
	}
	return n
}

// fifo is one priority level's pending tickets of a service, in Seq order.
// Tickets mostly arrive in Seq order (submits commit in order, recovery
// reads in order), so new ones are appended; one older than the tail (a
// requeue, a delayed ticket that came due) goes to a min-heap by Seq that
// Next consults too. Every push and pop is O(1) or O(log n), so a queue
// of 100,000 costs a submit no more than a queue of 10.
type fifo struct {
	items []*entry // items[head:] are live, in Seq order
	head  int
	retry []*entry // a binary min-heap by Seq
}

func (q *fifo) len() int { return len(q.items) - q.head + len(q.retry) }

func (q *fifo) push(e *entry) {
	if n := len(q.items); n > q.head && q.items[n-1].seq > e.seq {
		// Out of order: keep Seq order.
		q.pushRetry(e)
		return
	}
	q.items = append(q.items, e)
}

func (q *fifo) pushRetry(e *entry) {
	q.retry = append(q.retry, e)
	for i := len(q.retry) - 1; i > 0; {
		p := (i - 1) / 2
		if q.retry[p].seq <= q.retry[i].seq {
			break
		}
		q.retry[p], q.retry[i] = q.retry[i], q.retry[p]
		i = p
	}
}

func (q *fifo) popRetry() *entry {
	h := q.retry
	e := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h[n] = nil
	h = h[:n]
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < n && h[l].seq < h[m].seq {
			m = l
		}
		if l+1 < n && h[l+1].seq < h[m].seq {
			m = l + 1
		}
		if m == i {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	q.retry = h
	return e
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
		return q.popRetry()
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

// each calls fn on entries in Seq order until fn returns false. The heap
// is walked best-first (a small frontier of its nodes), so visiting the
// first m entries costs O(m log m), whatever the queue's length.
func (q *fifo) each(fn func(*entry) bool) {
	var frontier []int // indexes into q.retry, a min-heap by their Seq
	less := func(a, b int) bool { return q.retry[frontier[a]].seq < q.retry[frontier[b]].seq }
	add := func(i int) {
		if i >= len(q.retry) {
			return
		}
		frontier = append(frontier, i)
		for c := len(frontier) - 1; c > 0; {
			p := (c - 1) / 2
			if !less(c, p) {
				break
			}
			frontier[p], frontier[c] = frontier[c], frontier[p]
			c = p
		}
	}
	take := func() int {
		top := frontier[0]
		n := len(frontier) - 1
		frontier[0] = frontier[n]
		frontier = frontier[:n]
		for i := 0; ; {
			l, m := 2*i+1, i
			if l < n && less(l, m) {
				m = l
			}
			if l+1 < n && less(l+1, m) {
				m = l + 1
			}
			if m == i {
				break
			}
			frontier[i], frontier[m] = frontier[m], frontier[i]
			i = m
		}
		add(2*top + 1)
		add(2*top + 2)
		return top
	}
	add(0)
	j := q.head
	for len(frontier) > 0 || j < len(q.items) {
		var e *entry
		if j >= len(q.items) || (len(frontier) > 0 && q.retry[frontier[0]].seq < q.items[j].seq) {
			e = q.retry[take()]
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
	old := q.retry
	q.retry = nil
	for _, e := range old {
		if !e.gone {
			q.pushRetry(e)
		}
	}
}

// Priority levels, in the order a round visits them, and the weights of
// the round: while all three have work, 7 dispatches in a row give 4 to
// high, 2 to normal and 1 to low (weighted round robin), so that a steady
// stream of high-priority work slows the lower levels down but never
// starves them. A level without work gives its turn to the others.
const levels = 3

var levelWeight = [levels]int{4, 2, 1}

// level is the index of p's fifo: 0 high, 1 normal, 2 low. Unknown values
// (a newer release's levels) take the nearest known one.
func level(p store.Priority) int {
	switch {
	case p > store.PriorityNormal:
		return 0
	case p < store.PriorityNormal:
		return 2
	}
	return 1
}

// svcQueue is one service's tickets waiting for dispatch: one fifo per
// priority level, and the count of its entries in the delay heap (which
// is shared by every service, see schedule.go).
type svcQueue struct {
	lv [levels]fifo
	// credit is what each level has left of its weight in this round.
	credit [levels]int
	// delayed counts the service's entries in the delay heap.
	delayed int

	// The windows over the store's dispatch indexes (window.go): one per
	// level, and the delayed one. onDisk and delayedDisk count the
	// tickets of each index not in memory. blocked: Next found a level
	// whose next ticket is not loaded yet.
	win         [levels]window
	dwin        window
	dl          diskDeadlines // the deadline window
	onDisk      int
	delayedDisk int
	blocked     [levels]bool
}

// newSvcQueue returns the queue of a service that has no ticket on disk:
// its windows hold everything.
func newSvcQueue() *svcQueue {
	q := &svcQueue{}
	for i := range q.win {
		q.win[i].all = true
	}
	q.dwin.all = true
	q.dl.win.all = true
	return q
}

// partial marks every window as not loaded yet: the service's tickets
// are on disk (Recover).
func (q *svcQueue) partial() {
	for i := range q.win {
		q.win[i] = window{}
	}
	q.dwin = window{}
	q.dl = diskDeadlines{}
}

// len is the number of entries linked in the fifos, gone ones included.
func (q *svcQueue) len() int {
	n := 0
	for i := range q.lv {
		n += q.lv[i].len()
	}
	return n
}

func (q *svcQueue) push(e *entry) {
	lv := level(e.prio)
	q.lv[lv].push(e)
	q.win[lv].saw(readyKey(e))
}

// pick returns the fifo whose turn it is, nil when every fifo is empty:
// the highest level that has work and credit left in this round; when no
// level with work has credit, a new round starts. It does not spend the
// credit (spend does, once an entry is dispatched from it), so that gone
// entries and bodies not loaded yet do not use up a level's turn.
//
// A level with tickets on disk only has work too: pick returns it, empty,
// and the caller waits for the loader.
func (q *svcQueue) pick() *fifo {
	for round := 0; round < 2; round++ {
		for i := range q.lv {
			if (q.lv[i].len() > 0 || !q.win[i].all) && q.credit[i] > 0 {
				return &q.lv[i]
			}
		}
		q.credit = levelWeight
	}
	return nil
}

// levelOf is the index of f in q.lv.
func (q *svcQueue) levelOf(f *fifo) int {
	for i := range q.lv {
		if &q.lv[i] == f {
			return i
		}
	}
	return -1
}

// spend charges a dispatch from f to its level's credit.
func (q *svcQueue) spend(f *fifo) {
	for i := range q.lv {
		if &q.lv[i] == f {
			q.credit[i]--
			return
		}
	}
}

// each calls fn on the entries in the fifos, level by level (high first),
// in Seq order within a level, until fn returns false.
func (q *svcQueue) each(fn func(*entry) bool) {
	for i := range q.lv {
		more := true
		q.lv[i].each(func(e *entry) bool { more = fn(e); return more })
		if !more {
			return
		}
	}
}

func (q *svcQueue) compact() {
	for i := range q.lv {
		q.lv[i].compact()
	}
}
