package titanic

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/titanicmq/titanic/store"
)

// Windows: the dispatcher holds a bounded part of each queue.
//
// The store keeps dispatch indexes (store.Queue): per service, the ready
// tickets of each priority level in Seq order and the delayed ones in
// (Due, Seq) order. The dispatcher holds, per service, a window of each:
// at most Config.Window tickets, read from the index a window at a time
// (store.Queued) by the loader goroutine, never on the broker loop nor
// under s.mu. A window's cursor is the last key read: every ticket of the
// index at or before it is in memory (or already dispatched or finished);
// those after it wait on disk, counted (svcQueue.onDisk, delayedDisk) so
// that stats stay exact. While a window holds the whole index (all), new
// tickets join it in memory as they always did; once it is full, the
// cursor stops at the last ticket held and later ones are left on disk,
// to be read when the cursor gets there. Memory and start-up (Recover
// reads one window per service) then do not grow with the backlog.
//
// Order holds across the edge: Next does not dispatch a ticket past its
// level's cursor (a delayed ticket that came due with a later Seq than
// tickets not loaded yet waits for them), and a ticket requeued (a
// failed attempt) past a cursor goes back to disk, where its Seq puts it.
//
// A read is a snapshot; tickets committed meanwhile may be past its end
// or not. While a read runs, a ticket left on disk at a key within the
// window (a submit, a requeue) lowers the window's changed mark, and the
// read keeps only what comes before it, so the ticket is read by the next
// one; a ticket that leaves the dispatcher meanwhile (finished, closed,
// moved to the other index) is tombstoned, and the read skips it.

// The windows of a service, as windowRead and windowLoaded number them:
// 0 to levels-1 the priority levels' (ready index), then the delayed
// window and the deadline window (below).
const (
	whichDelayed  = levels
	whichDeadline = levels + 1
	windowKinds   = levels + 2
)

// DefaultWindow is Config.Window's default: tickets per service and
// priority level (and delayed tickets per service) held in memory. 4096
// entries are about a megabyte, and a refill of half of it is a few
// milliseconds of one read transaction.
const DefaultWindow = 4096

// window is the state of one service's window over one dispatch index.
type window struct {
	// all: the whole index is in memory (or dispatched); cursor is then
	// not used.
	all bool
	// cursor is the last key read (started: one was).
	cursor  store.Key
	started bool
	// max is the highest key held since the window last held all: the
	// cursor when it stops holding all.
	max store.Key
	// loading: a read is in flight; changed, changedAt: a ticket was left
	// on disk at changedAt (the lowest such key) since it began.
	loading   bool
	changed   bool
	changedAt store.Key
}

// holds reports whether k is within the window (in memory when present).
func (w *window) holds(k store.Key) bool {
	return w.all || w.started && !w.cursor.Less(k)
}

// saw records that a key is held in memory.
func (w *window) saw(k store.Key) {
	if w.max.Less(k) {
		w.max = k
	}
}

// leftOnDisk records that a ticket at k is on disk past the cursor.
func (w *window) leftOnDisk(k store.Key) {
	if w.loading && (!w.changed || k.Less(w.changedAt)) {
		w.changed, w.changedAt = true, k
	}
}

// close stops holding all: tickets after the highest held stay on disk.
func (w *window) close() {
	w.all, w.cursor, w.started = false, w.max, true
}

func readyKey(e *entry) store.Key { return store.Key{Seq: e.seq} }

func delayedKey(due time.Time, seq uint64) store.Key {
	return store.Key{At: store.TimeKey(due), Seq: seq}
}

// keepLocked decides where a pending ticket the store just queued goes:
// in memory (true: the caller places e) when its window holds its key,
// else on disk, counted. storedDue is the due time the store recorded
// (it chose the index). Callers hold d.mu.
func (d *dispatcher) keepLocked(q *svcQueue, e *entry, storedDue time.Time) bool {
	if storedDue.IsZero() {
		lv := level(e.prio)
		w := &q.win[lv]
		if w.all && q.lv[lv].len() >= d.cfg.window {
			w.close()
		}
		k := readyKey(e)
		if w.holds(k) {
			return true
		}
		q.onDisk++
		w.leftOnDisk(k)
		return false
	}
	w := &q.dwin
	if w.all && q.delayed >= d.cfg.window {
		w.close()
	}
	k := delayedKey(storedDue, e.seq)
	if w.holds(k) {
		return true
	}
	q.delayedDisk++
	w.leftOnDisk(k)
	return false
}

// tombLocked records that id left the dispatcher while a read may hold
// it, and ends its deadline's watch. Callers hold d.mu.
func (d *dispatcher) tombLocked(id store.ID) {
	d.unwatchLocked(id)
	if d.loads > 0 {
		d.tomb[id] = struct{}{}
	}
}

// needsLoadLocked reports whether a window of q runs low. Callers hold
// d.mu.
func (d *dispatcher) needsLoadLocked(q *svcQueue) bool {
	low := d.cfg.window / 2
	for i := range q.win {
		if !q.win[i].all && !q.win[i].loading && q.lv[i].len() <= low {
			return true
		}
	}
	if d.deadlinesLowLocked(q) {
		return true
	}
	return !q.dwin.all && !q.dwin.loading && q.delayed <= low && q.lv[0].len()+q.lv[1].len()+q.lv[2].len() < 4*d.cfg.window
}

// fill reads what service's low windows miss, then wakes the broker for
// it and the schedule; it reports whether a window still needs a read (a
// snapshot raced a change: read again).
func (s *Service) fill(ctx context.Context, service string) bool {
	again, read := false, false
	for i := range windowKinds {
		a, r := s.loadWindow(ctx, service, i)
		again, read = again || a, read || r
	}
	if read {
		s.b.Wake(service)
		s.kickSchedule()
	}
	return again
}

// loadWindow reads the next part of one window of service (whichDelayed,
// whichDeadline or a level). It reports whether the window should be
// read again at once, and whether it read anything.
func (s *Service) loadWindow(ctx context.Context, service string, which int) (again, read bool) {
	rd, ok := s.d.windowRead(service, which)
	if !ok {
		return false, false
	}
	got, err := s.st.Queued(ctx, rd.QueueRead)
	s.stats.windowReads.Add(1)
	again, read, fx, err := s.d.windowLoaded(rd, got, err, s.cfg.Now())
	if err != nil && ctx.Err() == nil {
		s.log.Warn("read dispatch window", "service", service, "err", err)
	}
	s.apply(fx)
	return again, read
}

// windowReading is a read of a window the dispatcher asked for: the
// loader does it (store.Queued) and hands the outcome to windowLoaded.
type windowReading struct {
	store.QueueRead
	which int
	q     *svcQueue // the queue it is for: a reset meanwhile voids it
}

// windowRead decides whether one window of service (a level,
// whichDelayed or whichDeadline) needs a read, and marks it loading; ok
// false: it does not (it holds all, a read is in flight, or it holds
// enough).
func (d *dispatcher) windowRead(service string, which int) (rd windowReading, ok bool) {
	size := d.cfg.window
	d.mu.Lock()
	defer d.mu.Unlock()
	q := d.queues[service]
	if q == nil {
		return rd, false
	}
	var (
		w    *window
		have int
		r    = store.QueueRead{Service: service}
	)
	switch {
	case which < levels:
		w, have = &q.win[which], q.lv[which].len()
		r.Queue, r.Level = store.QueueReady, levelPriority[which]
	case which == whichDeadline:
		w, have = &q.dl.win, len(q.dl.items)
		r.Queue = store.QueueDeadline
		size = d.cfg.deadlineWindow
	default:
		w, have = &q.dwin, q.delayed
		r.Queue = store.QueueDelayed
		if q.lv[0].len()+q.lv[1].len()+q.lv[2].len() >= 4*size {
			// What came due is not dispatched yet: the rest waits on
			// disk rather than in memory.
			return rd, false
		}
	}
	if w.all || w.loading || have > size/2 && !(which < levels && q.blocked[which]) {
		return rd, false
	}
	r.Limit = max(size-have, size/4, 1)
	r.After, r.Started = w.cursor, w.started
	w.loading, w.changed = true, false
	d.loads++
	return windowReading{QueueRead: r, which: which, q: q}, true
}

// windowLoaded takes what the loader read for rd (or the read's error)
// into the window: the tickets become entries, placed in their fifos or
// the delay heap, but for those that left the dispatcher or were held
// already meanwhile. It reports whether the window should be read again
// at once, and whether anything was read; err is the read's error when
// it concerns the queue still (not one reset meanwhile).
func (d *dispatcher) windowLoaded(rd windowReading, got []store.QueuedTicket, readErr error, now time.Time) (again, read bool, fx effects, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	q, which, service := rd.q, rd.which, rd.Service
	w := &q.dwin
	switch {
	case which < levels:
		w = &q.win[which]
	case which == whichDeadline:
		w = &q.dl.win
	}
	defer func() {
		// After the tickets were checked against the tombstones: they
		// are this read's too.
		if d.loads--; d.loads == 0 {
			clear(d.tomb)
		}
	}()
	w.loading = false
	if d.queues[service] != q {
		return false, false, fx, nil // reset meanwhile (this node stopped or started serving)
	}
	if readErr != nil {
		return false, false, fx, readErr
	}
	keep := got
	if w.changed {
		for i, t := range got {
			if !t.Key.Less(w.changedAt) {
				keep = got[:i]
				break
			}
		}
	}
	if which == whichDeadline {
		fx.kick = d.deadlinesLoadedLocked(q, service, keep)
	} else {
		d.queuedLoadedLocked(q, service, which, keep, now, &fx)
	}
	if len(keep) > 0 {
		w.cursor, w.started = keep[len(keep)-1].Key, true
		w.saw(w.cursor)
	}
	if which < levels {
		q.blocked[which] = false
	}
	if len(got) < rd.Limit && !w.changed {
		w.all = true
	}
	if which == whichDeadline {
		d.trimDeadlinesLocked(q)
	}
	return !w.all && (w.changed || len(keep) == 0 && len(got) > 0), true, fx, nil
}

// queuedLoadedLocked makes entries of the tickets a read of a level's or
// the delayed window found, and places them. Callers hold d.mu.
func (d *dispatcher) queuedLoadedLocked(q *svcQueue, service string, which int, keep []store.QueuedTicket, now time.Time, fx *effects) {
	for _, t := range keep {
		if _, dead := d.tomb[t.ID]; dead {
			continue
		}
		if _, dup := d.entries[t.ID]; dup {
			continue
		}
		// In memory now: its deadline is the deadline heap's.
		d.unwatchLocked(t.ID)
		e := (&entry{id: t.ID, service: service, seq: t.Seq, attempts: t.Attempts}).withLifecycle(t.Lifecycle, t.Attempts)
		// The no-worker timeout counts from when it became pending, or
		// came due (and from when its service lost its workers, or this
		// node began serving: reap takes the later).
		e.queued = t.Updated
		e.stored = t.State
		if e.due.After(e.queued) {
			e.queued = e.due
		}
		d.entries[t.ID] = e
		if which < levels {
			// In the ready index: due (a dispatched ticket a restart
			// redelivers keeps the due time it had).
			e.due = time.Time{}
			q.onDisk--
		} else {
			q.delayedDisk--
		}
		if t.State == store.StateDispatched {
			// Not this node's lease (that entry would be held): its
			// attempt was cut short. It is not queued as it stands.
			d.cutShortLocked(e, now, fx)
			continue
		}
		if _, kick := d.placeLocked(e, now); kick {
			fx.kick = true
		}
	}
}

// cutShortLocked decides what becomes of e, read from the store as
// dispatched though no lease of this node holds it: the node that
// dispatched it stopped or lost its role while the attempt ran (README: a
// lost worker's attempt counts, and attempts are dispatches at most). So
// its attempt ended without a reply: the ticket fails for good when that
// was its last, else it is requeued after its backoff, as Failed does;
// either op records the attempt in its history. The entry is held out of
// every fifo meanwhile, and counted in flight, as the store has it.
// Callers hold d.mu.
func (d *dispatcher) cutShortLocked(e *entry, now time.Time, fx *effects) {
	e.leased, e.failing = true, true
	p := d.cfg.retry.policy(e)
	if e.attempts >= p.MaxAttempts {
		fx.cut = append(fx.cut, cutShort{e: e, fail: fmt.Sprintf("attempt %d of %d failed: %s", e.attempts, p.MaxAttempts, CutShortReason)})
		return
	}
	var due time.Time
	if b := backoffWith(p, e.attempts, d.cfg.jitter); b > 0 {
		due = now.Add(b)
	}
	fx.cut = append(fx.cut, cutShort{e: e, due: due})
}

// enlistCut takes in e, dispatched in the store though no lease of this
// node holds it (an adoption of a ticket that ran on the yielding side of
// a split brain), as cutShortLocked does one a window read: held, counted
// in flight, until its requeue or failure commits. A ticket the
// dispatcher holds already is left alone (took false).
func (d *dispatcher) enlistCut(e *entry, now time.Time) (fx effects, took bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, dup := d.entries[e.id]; dup {
		return fx, false
	}
	d.held[e.service]++
	d.queue(e.service, now)
	d.unwatchLocked(e.id)
	d.entries[e.id] = e
	d.cutShortLocked(e, now, &fx)
	return fx, true
}

// levelPriority is the priority of each level (level's inverse).
var levelPriority = [levels]store.Priority{store.PriorityHigh, store.PriorityNormal, store.PriorityLow}

// The deadline window: deadlines of tickets that wait on disk.
//
// A ticket in memory that was never dispatched and has a deadline is in
// the deadline heap (schedule.go). One waiting on disk, past its
// service's windows, is not; the store's deadline index
// (store.QueueDeadline: per service, by (Deadline, Seq), the pending
// tickets never dispatched that have one) has it. The dispatcher holds a
// window of that index per service too, read by the loader like the
// others: the earliest deadlines of the tickets not in memory, at most
// Config's deadline window (DeadlineWindow) of them, kept in Key order
// and in one heap over every service (diskDeadlines), which the schedule
// looks at with the deadline heap. When one passes, the schedule makes
// the ticket an entry taken out to fail (leased and failing, as one the
// deadline heap expires): it fails as expired with the same op, reason
// and counters, and no window read can queue it meanwhile (it is held).
//
// A watched ticket is one the store has pending, never dispatched, and
// not in memory; each change of that ends its watch at once, under d.mu,
// before anything else can act on the ticket: a read into memory (a
// level's or the delayed window: its deadline is then the deadline
// heap's, and a dispatch clears it), and every way of leaving the
// dispatcher (finished, cancelled, closed: tombLocked). A read of the
// deadline index races them as the other reads race submits: it skips
// what is in memory or left meanwhile (the tombstones), and a ticket left
// on disk meanwhile at a key within the window is watched at once, or
// (past the cursor, while a read runs) truncates the read (changed), so
// that the next read finds it.
//
// The window is bounded: a ticket left on disk with a deadline before
// the cursor must be watched (reads go on after the cursor), so when that
// makes the window overflow, its latest deadlines go back to disk and the
// cursor back to the last one kept. It is read again at its low-water
// mark, half of it.

// DeadlineWindow is the deadlines of tickets waiting on disk that the
// dispatcher holds per service: each is an entry (about 200 bytes), and a
// refill of half of it one short read transaction. The earliest are held,
// so only a service with more than this many deadlines in the time a
// refill takes could see one late.
const DeadlineWindow = 1024

// diskDeadlines is a service's window over its deadline index: the
// watched tickets, by (Deadline, Seq). An item is an entry of its own,
// in no fifo and not in d.entries (the ticket is on disk), and in
// d.diskDeadlines.
type diskDeadlines struct {
	win   window
	items []*entry
}

func deadlineKey(e *entry) store.Key {
	return store.Key{At: store.TimeKey(e.deadline), Seq: e.seq}
}

// search returns the position of the first item at or after k.
func (dl *diskDeadlines) search(k store.Key) int {
	return sort.Search(len(dl.items), func(i int) bool { return !deadlineKey(dl.items[i]).Less(k) })
}

// watchLocked adds it to q's deadline window; it reports whether it is
// now the earliest of every service's. Callers hold d.mu.
func (d *dispatcher) watchLocked(q *svcQueue, it *entry) bool {
	if _, ok := d.watched[it.id]; ok {
		return false
	}
	k := deadlineKey(it)
	q.dl.items = slices.Insert(q.dl.items, q.dl.search(k), it)
	q.dl.win.saw(k)
	d.watched[it.id] = it
	return d.diskDeadlines.push(it)
}

// unwatchLocked ends the watch of id, if any: it is in memory now, or
// left. Callers hold d.mu.
func (d *dispatcher) unwatchLocked(id store.ID) {
	it, ok := d.watched[id]
	if !ok {
		return
	}
	delete(d.watched, id)
	d.diskDeadlines.remove(it)
	if q := d.queues[it.service]; q != nil {
		if i := q.dl.search(deadlineKey(it)); i < len(q.dl.items) && q.dl.items[i] == it {
			q.dl.items = slices.Delete(q.dl.items, i, i+1)
		}
	}
}

// watchLeftLocked is keepLocked's complement for the deadline window: e,
// with a deadline, was just left on disk (its store due time storedDue).
// It reports whether its deadline is now the earliest watched. Callers
// hold d.mu.
func (d *dispatcher) watchLeftLocked(q *svcQueue, e *entry, storedDue time.Time) (kick bool) {
	if e.deadline.IsZero() {
		return false
	}
	k := deadlineKey(e)
	if w := &q.dl.win; !w.holds(k) {
		w.leftOnDisk(k) // the next read finds it
		return false
	}
	it := &entry{id: e.id, service: e.service, seq: e.seq, prio: e.prio, due: storedDue, deadline: e.deadline, retry: e.retry}
	kick = d.watchLocked(q, it)
	d.trimDeadlinesLocked(q)
	return kick && it.deadlinePos != 0
}

// deadlinesLoadedLocked watches what a read of q's deadline index found,
// but for tickets in memory (the deadline heap has theirs), left
// meanwhile, or watched already. It reports whether an earlier deadline
// is now the earliest watched. Callers hold d.mu.
func (d *dispatcher) deadlinesLoadedLocked(q *svcQueue, service string, keep []store.QueuedTicket) (kick bool) {
	for _, t := range keep {
		if _, dead := d.tomb[t.ID]; dead {
			continue
		}
		if _, held := d.entries[t.ID]; held {
			continue
		}
		it := (&entry{id: t.ID, service: service, seq: t.Seq, attempts: t.Attempts}).withLifecycle(t.Lifecycle, t.Attempts)
		if it.deadline.IsZero() {
			continue // dispatched once: it no longer expires
		}
		if t.State != store.StatePending {
			continue
		}
		if d.watchLocked(q, it) {
			kick = true
		}
	}
	return kick
}

// trimDeadlinesLocked bounds q's deadline window: the latest deadlines
// over it go back to disk, and the cursor to the last one kept (a read in
// flight, which began after the old cursor, is then read again). Callers
// hold d.mu.
func (d *dispatcher) trimDeadlinesLocked(q *svcQueue) {
	dl := &q.dl
	n := len(dl.items) - d.cfg.deadlineWindow
	if n <= 0 {
		return
	}
	keep := len(dl.items) - n
	lowest := deadlineKey(dl.items[keep])
	for _, it := range dl.items[keep:] {
		delete(d.watched, it.id)
		d.diskDeadlines.remove(it)
	}
	clear(dl.items[keep:])
	dl.items = dl.items[:keep]
	w := &dl.win
	w.all, w.started = false, true
	w.cursor = deadlineKey(dl.items[keep-1])
	w.max = w.cursor
	w.leftOnDisk(lowest)
}

// deadlinesLowLocked reports whether q's deadline window should be read
// on: it does not hold all and is at its low-water mark. Callers hold
// d.mu.
func (d *dispatcher) deadlinesLowLocked(q *svcQueue) bool {
	w := &q.dl.win
	return !w.all && !w.loading && len(q.dl.items) <= d.cfg.deadlineWindow/2
}

// expireWatchedLocked takes out, to fail, the watched tickets whose
// deadline passed by now: each becomes an entry held by the dispatcher
// (leased and failing, as the deadline heap's expire), so that no read
// queues it while its failure commits. Callers hold d.mu.
func (d *dispatcher) expireWatchedLocked(now time.Time, fx *effects) {
	for it := d.diskDeadlines.top(); it != nil && !it.deadline.After(now); it = d.diskDeadlines.top() {
		d.unwatchLocked(it.id)
		q := d.queues[it.service]
		if _, held := d.entries[it.id]; held || q == nil {
			continue // in memory: the deadline heap decides
		}
		if it.due.IsZero() {
			q.onDisk = max(q.onDisk-1, 0)
		} else {
			q.delayedDisk = max(q.delayedDisk-1, 0)
		}
		it.leased, it.failing = true, true
		d.entries[it.id] = it
		fx.fail = append(fx.fail, verdict{e: it, reason: expiredReason(it.deadline), expired: true})
		if d.deadlinesLowLocked(q) {
			fx.loadService(it.service)
		}
	}
}
