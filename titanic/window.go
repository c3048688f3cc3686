package titanic

import (
	"context"
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
// it. Callers hold d.mu.
func (d *dispatcher) tombLocked(id store.ID) {
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
	return !q.dwin.all && !q.dwin.loading && q.delayed <= low && q.lv[0].len()+q.lv[1].len()+q.lv[2].len() < 4*d.cfg.window
}

// fill reads what service's low windows miss, then wakes the broker for
// it and the schedule; it reports whether a window still needs a read (a
// snapshot raced a change: read again).
func (s *Service) fill(ctx context.Context, service string) bool {
	again, read := false, false
	for i := range levels + 1 {
		a, r := s.loadWindow(ctx, service, i)
		again, read = again || a, read || r
	}
	if read {
		s.b.Wake(service)
		s.kickSchedule()
	}
	return again
}

// loadWindow reads the next part of one window of service: level 0-2, or
// the delayed window (levels). It reports whether the window should be
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

// windowRead decides whether one window of service (level 0-2, or the
// delayed window: levels) needs a read, and marks it loading; ok false:
// it does not (it holds all, a read is in flight, or it holds enough).
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
	if which < levels {
		w, have = &q.win[which], q.lv[which].len()
		r.Queue, r.Level = store.QueueReady, levelPriority[which]
	} else {
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
	if which < levels {
		w = &q.win[which]
	}
	if d.loads--; d.loads == 0 {
		clear(d.tomb)
	}
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
	for _, t := range keep {
		if _, dead := d.tomb[t.ID]; dead {
			continue
		}
		if _, dup := d.entries[t.ID]; dup {
			continue
		}
		e := (&entry{id: t.ID, service: service, seq: t.Seq, attempts: t.Attempts}).withLifecycle(t.Lifecycle, t.Attempts)
		// The no-worker timeout counts from when it became pending, or
		// came due (and from when its service lost its workers, or this
		// node began serving: reap takes the later).
		e.queued = t.Updated
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
		if _, kick := d.placeLocked(e, now); kick {
			fx.kick = true
		}
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
	return !w.all && (w.changed || len(keep) == 0 && len(got) > 0), true, fx, nil
}

// levelPriority is the priority of each level (level's inverse).
var levelPriority = [levels]store.Priority{store.PriorityHigh, store.PriorityNormal, store.PriorityLow}
