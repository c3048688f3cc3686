package titanic

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
)

// The dispatcher: the in-memory state of dispatch, and the decisions made
// from it.
//
// It owns the entries (every unfinished ticket held in memory), each
// service's queues (a fifo per priority level, and the windows over the
// store's dispatch indexes: window.go), the delay and deadline heaps
// (schedule.go), the leases, the body cache, the paused services and the
// workers' counts. It opens no socket, runs no goroutine, calls neither
// the store nor the broker and reads no clock: every method takes the
// time it decides at, and returns what the Service must do about its
// decision (commit a dispatch mark or a failure, read a window or
// bodies, wake the broker, look at the schedule again). The Service's
// loops do that IO and feed the outcome back (windowLoaded, bodyLoaded,
// requeue). So the dispatcher is tested with events in and decisions
// out, on a clock the test sets (dispatcher_test.go).
//
// Its methods are safe for concurrent use: the broker loop (Next,
// Completed, Failed), the store completer (new, requeued and finished
// tickets), the loader, the reaper, the schedule and the readers (stats,
// overlay) all call in; one mutex, held only for the decision itself,
// guards the state.

// dispatchConfig is what the dispatcher needs of Config.
type dispatchConfig struct {
	// window bounds the tickets held per service and level, and the
	// delayed ones per service (Config.Window).
	window int
	// deadlineWindow bounds the deadlines held per service of tickets
	// waiting on disk (DeadlineWindow; tests set less).
	deadlineWindow int
	// bodyCache bounds the bytes of bodies held (Config.BodyCache).
	bodyCache int
	// noWorkerTimeout: a ticket waiting this long while its service has
	// no worker fails (Config.NoWorkerTimeout).
	noWorkerTimeout time.Duration
	retry           retryConfig
	// jitter returns a uniform duration in [0, n): the backoff's jitter
	// (tests make it deterministic).
	jitter func(n time.Duration) time.Duration
}

func (c *Config) dispatchConfig() dispatchConfig {
	return dispatchConfig{
		window:          c.Window,
		deadlineWindow:  DeadlineWindow,
		bodyCache:       c.BodyCache,
		noWorkerTimeout: c.NoWorkerTimeout,
		retry:           c.retryConfig(),
		jitter:          rand.N[time.Duration],
	}
}

// dispatcher is the dispatch state; see above.
type dispatcher struct {
	cfg dispatchConfig

	mu        sync.Mutex
	queues    map[string]*svcQueue
	entries   map[store.ID]*entry
	workers   map[string]int
	idleSince map[string]time.Time // when a service's last worker left
	cached    int                  // bytes of bodies held
	gone      map[string]int       // gone entries still linked, per service
	held      map[string]int       // unfinished tickets per service, in memory or on disk
	// loads counts the window reads in flight; tomb, the tickets that
	// left the dispatcher since the first of them began (window.go).
	loads     int
	tomb      map[store.ID]struct{}
	paused    map[string]bool // services whose dispatch is paused (OpPause)
	delays    entryHeap       // delayed entries of every service, by (due, seq)
	deadlines entryHeap       // entries with a deadline not dispatched yet
	// diskDeadlines holds the deadline windows' items of every service,
	// by (deadline, seq); watched, the same by ticket (window.go).
	diskDeadlines entryHeap
	watched       map[store.ID]*entry
	// finishing counts, per ticket, the ops in flight that may finish or
	// delete it (pending.go); a reset keeps it, as it keeps those ops.
	finishing map[store.ID]int32
	// doubt holds the tickets whose last finishing op's batch failed
	// (finishEnds): the store may show its outcome all the same.
	doubt map[store.ID]struct{}
	// dispatches numbers the dispatches (entry.lease); a reset keeps
	// it, so that no lease given out before names an entry after.
	dispatches uint64
}

func newDispatcher(cfg dispatchConfig) *dispatcher {
	if cfg.jitter == nil {
		cfg.jitter = rand.N[time.Duration]
	}
	if cfg.deadlineWindow < 1 {
		cfg.deadlineWindow = DeadlineWindow
	}
	return &dispatcher{
		cfg:       cfg,
		queues:    make(map[string]*svcQueue),
		entries:   make(map[store.ID]*entry),
		workers:   make(map[string]int),
		idleSince: make(map[string]time.Time),
		gone:      make(map[string]int),
		held:      make(map[string]int),
		tomb:      make(map[store.ID]struct{}),
		paused:    make(map[string]bool),
		delays:    newDueHeap(),
		deadlines: newDeadlineHeap(),

		diskDeadlines: newDeadlineHeap(),
		watched:       make(map[store.ID]*entry),
	}
}

// verdict is a ticket the dispatcher took out of its queues to fail for
// good (its deadline passed, or its service had no worker): the entry is
// marked leased and failing, so no lease names it and nothing dispatches
// it, until the Service has committed the failure and forgets it.
type verdict struct {
	e       *entry
	reason  string
	expired bool // by its deadline (else: no worker)
}

// effects is what a dispatcher decision leaves to the Service: the IO and
// the wake-ups the dispatcher never does itself. The zero value asks for
// nothing.
type effects struct {
	// load: services whose windows or bodies the loader should read.
	load []string
	// wake: services the broker should offer their workers again.
	wake []string
	// kick: an earlier time is at the top of the delay or deadline heap;
	// the schedule must look again.
	kick bool
	// fail: tickets to fail for good.
	fail []verdict
	// cut: tickets whose last attempt was cut short (see cutShortLocked),
	// to requeue after their backoff.
	cut []cutShort
}

// cutShort is a ticket the dispatcher found dispatched in the store with
// no lease of its own: the node that dispatched it stopped, or lost its
// role, while the attempt ran. The attempt counts, as a lost worker's
// does; the entry is held (leased and failing: no lease names it, nothing
// dispatches it) until the Service committed its failure for good (fail,
// when its attempts are spent: the reason) or its requeue, due then.
type cutShort struct {
	e    *entry
	fail string
	due  time.Time
}

// CutShortReason is why an attempt that a broker's stop or a failover
// cut short ended: the store had it dispatched when this node began to
// serve, and no worker's answer can reach this node's lease of it.
const CutShortReason = "cut short: the broker restarted or failed over while it ran"

func (fx *effects) loadService(service string) {
	if n := len(fx.load); n == 0 || fx.load[n-1] != service {
		fx.load = append(fx.load, service)
	}
}

func (fx *effects) wakeService(service string) {
	if n := len(fx.wake); n == 0 || fx.wake[n-1] != service {
		fx.wake = append(fx.wake, service)
	}
}

// reset drops every ticket (this node stopped or starts serving: the
// store is read again). Workers and pauses are kept; the no-worker
// timeout of an idle service counts from now.
func (d *dispatcher) reset(now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.resetLocked(now)
}

func (d *dispatcher) resetLocked(now time.Time) {
	d.queues = make(map[string]*svcQueue)
	d.delays, d.deadlines = newDueHeap(), newDeadlineHeap()
	d.diskDeadlines, d.watched = newDeadlineHeap(), make(map[store.ID]*entry)
	d.entries = make(map[store.ID]*entry)
	d.gone = make(map[string]int)
	d.held = make(map[string]int)
	d.cached = 0
	for svc := range d.idleSince {
		d.idleSince[svc] = now
	}
}

// recover resets the dispatcher to the store's counts: every service with
// unfinished tickets gets a queue whose windows are not read yet (the
// loader reads them, window.go). It returns those services and their
// tickets.
func (d *dispatcher) recover(counts map[string]store.Counts, now time.Time) (services []string, n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.resetLocked(now)
	for svc, c := range counts {
		u := c.Pending + c.Dispatched
		if u == 0 {
			continue
		}
		q := d.queue(svc, now)
		q.partial()
		q.onDisk, q.delayedDisk = u-c.Delayed, c.Delayed
		d.held[svc] += u
		services = append(services, svc)
		n += u
	}
	return services, n
}

// services returns the services that have a queue.
func (d *dispatcher) services() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.queues))
	for svc := range d.queues {
		out = append(out, svc)
	}
	return out
}

// queue returns the queue of service, creating it. Callers hold d.mu.
func (d *dispatcher) queue(service string, now time.Time) *svcQueue {
	q := d.queues[service]
	if q == nil {
		q = newSvcQueue()
		d.queues[service] = q
		if _, ok := d.idleSince[service]; !ok && d.workers[service] == 0 {
			d.idleSince[service] = now
		}
	}
	return q
}

// dispatched is next's decision.
type dispatched struct {
	// ok: job is leased to the worker; the Service commits the dispatch
	// mark of id (attempts is its count now).
	ok       bool
	job      broker.Job
	id       store.ID
	attempts int
	// load: the loader should read for this service (a window ran low,
	// or the head's body is not in memory).
	load bool
	// expired: heads whose deadline passed, taken out to fail.
	expired []verdict
}

// next picks the next pending ticket of service whose body is in memory,
// from the priority level whose turn it is (see svcQueue.pick), oldest
// first within it, and leases it. Delayed tickets are not in the queues,
// so it never looks at them. A head not loaded yet (past its window's
// cursor, or its body not cached) stops it: the loader is asked for it.
func (d *dispatcher) next(service string, now time.Time) dispatched {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out dispatched
	if d.paused[service] {
		return out
	}
	q := d.queues[service]
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
			out.load = true
			break
		}
		if e.gone {
			f.pop()
			d.gone[service]--
			continue
		}
		if !e.deadline.IsZero() && !e.deadline.After(now) {
			// Its deadline passed a moment ago and the schedule has not
			// failed it yet: it is not dispatched late.
			f.pop()
			d.deadlines.remove(e)
			e.leased, e.failing = true, true
			out.expired = append(out.expired, verdict{e: e, reason: expiredReason(e.deadline), expired: true})
			continue
		}
		if e.body == nil {
			out.load = true
			break
		}
		f.pop()
		q.spend(f)
		if !q.win[lv].all && f.len() <= d.cfg.window/2 {
			out.load = true
		}
		// Dispatched: it no longer expires.
		d.deadlines.remove(e)
		e.deadline = time.Time{}
		e.leased = true
		e.attempts++
		d.dispatches++
		e.lease = d.dispatches
		out.ok, out.id, out.attempts = true, e.id, e.attempts
		out.job = broker.Job{Token: []byte(e.id.String()), Body: e.body, Tag: e.lease}
		return out
	}
	return out
}

// leasedLocked returns the dispatched entry of id, if it is still known (a
// ticket closed while a worker held it is not), tag names its current
// dispatch, and its worker has not answered yet. Callers hold d.mu.
func (d *dispatcher) leasedLocked(id store.ID, tag uint64) (*entry, bool) {
	e, ok := d.entries[id]
	if !ok || !e.leased || e.replied || e.failing || e.lease != tag {
		return nil, false
	}
	return e, true
}

// replied records that the worker holding id answered: the entry stays
// out of every fifo, neither dispatched again nor reported done, until
// the reply's commit either forgets it or requeues it. ok is false when
// no lease of id is known (closed meanwhile, or answered already), or
// tag is not its current dispatch's.
func (d *dispatcher) replied(id store.ID, tag uint64) (*entry, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.leasedLocked(id, tag)
	if ok {
		e.replied = true
	}
	return e, ok
}

// retryDecision is attemptFailed's decision.
type retryDecision struct {
	// fail, when not empty: the ticket fails for good with this reason.
	fail string
	// due: else it is requeued, due then (zero: at once).
	due time.Time
}

// attemptFailed decides what becomes of a lease of id that ended without
// a reply: requeued after its backoff, or failed for good once its
// attempts are used up. ok is false when no lease of id is known, or tag
// is not its current dispatch's. The entry stays leased until the
// Service committed the decision (requeue, or forget).
func (d *dispatcher) attemptFailed(id store.ID, tag uint64, reason string, now time.Time) (*entry, retryDecision, bool) {
	d.mu.Lock()
	e, ok := d.leasedLocked(id, tag)
	if !ok {
		d.mu.Unlock()
		return nil, retryDecision{}, false
	}
	attempts := e.attempts
	d.mu.Unlock()
	p := d.cfg.retry.policy(e)
	if attempts >= p.MaxAttempts {
		return e, retryDecision{fail: fmt.Sprintf("attempt %d of %d failed: %s", attempts, p.MaxAttempts, reason)}, true
	}
	var due time.Time
	if b := backoffWith(p, attempts, d.cfg.jitter); b > 0 {
		due = now.Add(b)
	}
	return e, retryDecision{due: due}, true
}

// unsent takes back the dispatch of id that never reached a worker or
// peer: the attempt it counted is given back. ok is false when no lease
// of id is known, or tag is not its current dispatch's. Like
// attemptFailed, it leaves the entry leased until the Service committed
// what becomes of it.
func (d *dispatcher) unsent(id store.ID, tag uint64) (*entry, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.leasedLocked(id, tag)
	if ok {
		e.attempts = max(e.attempts-1, 0)
	}
	return e, ok
}

// chargeAttempt counts again the attempt unsent gave back, for a cluster
// whose store could not take the dispatch back (see Service.Unsent).
func (d *dispatcher) chargeAttempt(e *entry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e.attempts++
}

// current reports whether e is still the dispatcher's entry of its ticket
// (not forgotten, and not dropped by a reset).
func (d *dispatcher) current(e *entry) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	cur, ok := d.entries[e.id]
	return ok && cur == e
}

// requeue puts a leased ticket back in its fifo, at its Seq position, or
// in the delay heap until due; or, when that position is past its
// window's cursor, back on disk (it is read again when the cursor gets
// there). stored is the due time the store recorded: it chose the index;
// state is the state the store records now (StatePending once the
// requeue committed; 0 when unknown: the batch failed, and the dispatch
// mark may have failed with it).
func (d *dispatcher) requeue(e *entry, due, stored time.Time, state store.State, now time.Time) effects {
	d.mu.Lock()
	defer d.mu.Unlock()
	var fx effects
	if cur, ok := d.entries[e.id]; !ok || cur != e {
		return fx
	}
	if stored.Equal(due) && !d.keepLocked(d.queue(e.service, now), e, stored) {
		// On disk now, as the store has it; still counted in held.
		delete(d.entries, e.id)
		d.tombLocked(e.id)
		d.cached -= e.size
		e.body, e.size = nil, 0
		return fx
	}
	e.leased, e.replied, e.failing = false, false, false
	e.stored = state
	e.queued, e.due = now, due
	ready, kick := d.placeLocked(e, now)
	if ready {
		fx.wakeService(e.service)
	}
	fx.kick = kick
	return fx
}

// setWorkers records the number of workers of service.
//
// Service names come from the network (a worker's READY, a peer's state)
// and are told here as they come and go: a service with no worker and no
// ticket is forgotten, or every name ever told would stay for the life of
// the process. idleSince is kept while the service has tickets, whose
// no-worker timeout counts from it.
func (d *dispatcher) setWorkers(service string, n int, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case n > 0:
		d.workers[service] = n
		delete(d.idleSince, service)
	case d.held[service] > 0:
		delete(d.workers, service)
		d.idleSince[service] = now
	default:
		delete(d.workers, service)
		delete(d.idleSince, service)
	}
}

// unheldLocked forgets when service's last worker left once its last
// ticket is gone: a ticket queued later counts its no-worker timeout from
// its own queueing, which is later. Callers hold d.mu.
func (d *dispatcher) unheldLocked(service string) {
	if d.held[service]--; d.held[service] <= 0 {
		delete(d.held, service)
		if d.workers[service] == 0 {
			delete(d.idleSince, service)
		}
	}
}

// cacheHorizon: the body of a ticket due further ahead than this is not
// kept in memory (it is read back when it comes due), so that a large
// backlog of delayed work does not take the body cache from the work
// that runs now.
const cacheHorizon = time.Minute

// enlist queues a durable pending ticket (new, retried, adopted) for
// dispatch or for its due time, with its body when the cache has room for
// it (nil: read it when needed). A ticket the dispatcher holds already is
// left alone (took false). ready: the ticket can be dispatched now (the
// broker should be woken for its service); kick: the schedule must look
// again. (Not effects: a submit's path allocates nothing here.)
func (d *dispatcher) enlist(e *entry, body [][]byte, now time.Time) (ready, kick, took bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, dup := d.entries[e.id]; dup {
		return false, false, false
	}
	d.held[e.service]++
	q := d.queue(e.service, now)
	if !d.keepLocked(q, e, e.due) {
		// Past its window: it waits on disk, and is read when the
		// window's cursor gets there; its deadline, if it has one, is
		// watched (window.go). Its body is not held: nothing would
		// count it out of the cache.
		return false, d.watchLeftLocked(q, e, e.due), true
	}
	if body != nil && !e.due.After(now.Add(cacheHorizon)) {
		if size := bodySize(body); d.cached+size <= d.cfg.bodyCache {
			e.body, e.size = body, size
			d.cached += size
		}
	}
	d.unwatchLocked(e.id)
	e.stored = store.StatePending // durable as such: enlist's callers say so
	d.entries[e.id] = e
	ready, kick = d.placeLocked(e, now)
	return ready, kick, true
}

// forget drops a ticket from the dispatcher (closed or finished).
func (d *dispatcher) forget(id store.ID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dropLocked(id)
}

// forgetEntry is forget, if e is still the dispatcher's entry of its
// ticket: a verdict about e whose commit failed must not drop the entry
// a reset recovered for the same ticket since.
func (d *dispatcher) forgetEntry(e *entry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if cur, ok := d.entries[e.id]; ok && cur == e {
		d.dropLocked(e.id)
	}
}

// forgetResult drops the ticket an op finished or deleted (res.ID), also
// when it waited on disk, not in memory: then it is counted out of its
// service's tickets on disk (res.Unqueued says which).
func (d *dispatcher) forgetResult(res store.Result) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dropResultLocked(res)
}

func (d *dispatcher) dropResultLocked(res store.Result) {
	if _, ok := d.entries[res.ID]; ok || res.Unqueued == 0 || res.Service == "" {
		d.dropLocked(res.ID)
		return
	}
	d.tombLocked(res.ID)
	q := d.queues[res.Service]
	if q == nil {
		return
	}
	if res.Unqueued == store.QueueReady {
		q.onDisk = max(q.onDisk-1, 0)
	} else {
		q.delayedDisk = max(q.delayedDisk-1, 0)
	}
	d.unheldLocked(res.Service)
}

func (d *dispatcher) dropLocked(id store.ID) {
	d.tombLocked(id)
	e, ok := d.entries[id]
	if !ok {
		return
	}
	delete(d.entries, id)
	d.unheldLocked(e.service)
	d.cached -= e.size
	e.body, e.size = nil, 0
	if d.unscheduleLocked(e) || e.leased {
		return // not linked in a fifo
	}
	e.gone = true
	d.gone[e.service]++
	if q := d.queues[e.service]; q != nil && d.gone[e.service] > 64 && d.gone[e.service]*2 > q.len() {
		q.compact()
		d.gone[e.service] = 0
	}
}

// reap takes out of their queues the tickets that waited NoWorkerTimeout
// (when set: not negative) while their service had no worker (counted
// from when they became pending, or from when the service lost its last
// worker, whichever is later), to fail; a paused service's tickets wait
// for its resume.
func (d *dispatcher) reap(now time.Time) effects {
	var fx effects
	d.mu.Lock()
	defer d.mu.Unlock()
	for service, q := range d.queues {
		if d.deadlinesLowLocked(q) {
			// Watched tickets closed or cancelled on disk emptied the
			// deadline window without a read: this pass is its refill's
			// safety net.
			fx.loadService(service)
		}
		if d.workers[service] > 0 || d.paused[service] {
			continue
		}
		since := d.idleSince[service]
		for i := range q.lv {
			f := &q.lv[i]
			for {
				e := f.peek()
				if e == nil {
					break
				}
				if e.gone {
					f.pop()
					d.gone[service]--
					continue
				}
				start := e.queued
				if since.After(start) {
					start = since
				}
				if d.cfg.noWorkerTimeout < 0 || now.Sub(start) < d.cfg.noWorkerTimeout {
					break // waits for a worker for ever, or not long enough yet
				}
				f.pop()
				d.deadlines.remove(e)
				e.leased, e.failing = true, true // out of the fifo while its verdict commits
				fx.fail = append(fx.fail, verdict{e: e, reason: fmt.Sprintf("no worker for service %q within %s", e.service, d.cfg.noWorkerTimeout)})
			}
			if !q.win[i].all && f.len() <= d.cfg.window/2 {
				// The window ran low: the loader reads on, and kicks
				// the reaper again.
				fx.loadService(service)
			}
		}
	}
	return fx
}

// afterFill reports, once the loader read service's windows, whether a
// window still runs low (the loader should come back to it) and whether
// the service has no worker (the reaper should look at what was read).
func (d *dispatcher) afterFill(service string) (more, noWorker bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if q := d.queues[service]; q != nil && d.needsLoadLocked(q) {
		more = true
	}
	return more, d.workers[service] == 0
}

// bodiesWanted returns up to n queued entries of service whose body is
// not in memory, in dispatch order (the loader reads them).
func (d *dispatcher) bodiesWanted(service string, n int) []*entry {
	d.mu.Lock()
	defer d.mu.Unlock()
	var want []*entry
	if q := d.queues[service]; q != nil {
		q.each(func(e *entry) bool {
			if !e.gone && e.body == nil {
				want = append(want, e)
			}
			return len(want) < n
		})
	}
	return want
}

// bodyLoaded takes the outcome of the loader's read of e's ticket: its
// body, or ErrNotFound (it was closed meanwhile: dropped). It reports
// whether the body was taken.
func (d *dispatcher) bodyLoaded(e *entry, t store.Ticket, err error) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case errors.Is(err, store.ErrNotFound):
		d.dropLocked(e.id)
	case err != nil:
	case e.body == nil && d.entries[e.id] == e:
		e.body, e.size = t.Body, bodySize(t.Body)
		if e.body == nil {
			e.body = [][]byte{}
		}
		d.cached += e.size
		return true
	}
	return false
}

// setPaused records a service's pause; setAllPaused replaces them all
// (read from the store).
func (d *dispatcher) setPaused(service string, pause bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if pause {
		d.paused[service] = true
	} else {
		delete(d.paused, service)
	}
}

func (d *dispatcher) setAllPaused(services []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.paused)
	for _, svc := range services {
		d.paused[svc] = true
	}
}

// pausedServices returns the services whose dispatch is paused.
func (d *dispatcher) pausedServices() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Collect(maps.Keys(d.paused))
}

func (d *dispatcher) isPaused(service string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.paused[service]
}

// leasedAttempts returns the attempts of id when a worker holds it (its
// dispatch mark may not be in the store yet: lookups overlay it).
func (d *dispatcher) leasedAttempts(id store.ID) (int, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.entries[id]; ok && e.leased {
		return e.attempts, true
	}
	return 0, false
}

// svcCounts is one service's tickets as the dispatcher counts them.
type svcCounts struct {
	pending, delayed, inFlight int
	// queue: the service has a queue (Stats reports it); held: it has
	// unfinished tickets (titanic.stats reports it).
	queue, held bool
}

// counts returns, per service with unfinished tickets, those waiting for
// a worker (in memory or on disk), those waiting for their due time, and
// those held by workers or whose verdict commits; with leases, leased
// counts the leases whose worker has not answered (a walk of every
// entry).
func (d *dispatcher) counts(leases bool) (per map[string]svcCounts, leased int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	per = make(map[string]svcCounts, len(d.queues))
	for svc, q := range d.queues {
		c := svcCounts{pending: q.len() - d.gone[svc] + q.onDisk, delayed: q.delayed + q.delayedDisk, queue: true}
		n, held := d.held[svc]
		c.inFlight, c.held = n-c.pending-c.delayed, held
		per[svc] = c
	}
	for svc, n := range d.held {
		if _, ok := per[svc]; !ok {
			per[svc] = svcCounts{inFlight: n, held: true}
		}
	}
	if !leases {
		return per, 0
	}
	for _, e := range d.entries {
		if e.leased && !e.replied {
			leased++
		}
	}
	return per, leased
}

// workerCounts returns the registered workers per service.
func (d *dispatcher) workerCounts() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]int, len(d.workers))
	for svc, n := range d.workers {
		out[svc] = n
	}
	return out
}
