package titanic

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// counters are the service's event counts, safe for concurrent update.
type counters struct {
	submits, duplicates, closes, lookups           atomic.Uint64
	dispatches, redeliveries, replies, lateReplies atomic.Uint64
	failed, busy, badRequests, loads               atomic.Uint64
	commits, committedOps, commitErrors            atomic.Uint64
	expired                                        atomic.Uint64
	confirms, unconfirmed                          atomic.Uint64
	verdictRetries, unsent                         atomic.Uint64
	retries                                        atomic.Uint64
	deadlineExpired                                atomic.Uint64
	diskRefused                                    atomic.Uint64
	windowReads                                    atomic.Uint64
}

// Stats is a snapshot of the service's counters and queues.
type Stats struct {
	Submits, Duplicates, Closes, Lookups           uint64
	Dispatches, Redeliveries, Replies, LateReplies uint64
	Failed, Busy, BadRequests, Loads               uint64
	Commits, CommittedOps, CommitErrors            uint64
	Expired                                        uint64 // deleted by retention
	// Confirms counts leadership confirmation rounds (replicated modes),
	// and Unconfirmed the lookups refused because a round failed.
	Confirms, Unconfirmed uint64
	// VerdictRetries counts commits of a reply or a failure tried again
	// after their batch failed (the verdict is held, the job not rerun).
	VerdictRetries uint64
	// Unsent counts dispatches taken back because their send to a worker
	// or peer failed at once: no attempt was counted for them.
	Unsent uint64
	// Retries counts failed tickets given another round (titanic.retry).
	Retries uint64
	// DeadlineExpired counts tickets failed as expired: not dispatched
	// by their deadline.
	DeadlineExpired uint64
	// DiskRefused counts submits refused while the disk was full (they
	// are counted in Busy too); Disk is the full-disk mode now.
	DiskRefused uint64
	Disk        DiskStatus
	// WindowReads counts the reads of a window of a dispatch queue from
	// the store (window.go).
	WindowReads uint64
	// Queued is the number of pending tickets waiting per service for a
	// worker, Delayed the number waiting for their due time, and Leased
	// the number held by workers (not counting those whose worker
	// answered and whose reply waits for its commit).
	Queued  map[string]int
	Delayed map[string]int
	Leased  int
}

// Stats returns a snapshot.
func (s *Service) Stats() Stats {
	c := &s.stats
	st := Stats{
		Submits: c.submits.Load(), Duplicates: c.duplicates.Load(), Closes: c.closes.Load(), Lookups: c.lookups.Load(),
		Dispatches: c.dispatches.Load(), Redeliveries: c.redeliveries.Load(), Replies: c.replies.Load(), LateReplies: c.lateReplies.Load(),
		Failed: c.failed.Load(), Busy: c.busy.Load(), BadRequests: c.badRequests.Load(), Loads: c.loads.Load(),
		Commits: c.commits.Load(), CommittedOps: c.committedOps.Load(), CommitErrors: c.commitErrors.Load(),
		Expired: c.expired.Load(), Confirms: c.confirms.Load(), Unconfirmed: c.unconfirmed.Load(),
		VerdictRetries: c.verdictRetries.Load(), Unsent: c.unsent.Load(), Retries: c.retries.Load(), DeadlineExpired: c.deadlineExpired.Load(),
		DiskRefused: c.diskRefused.Load(), Disk: s.DiskStatus(), WindowReads: c.windowReads.Load(),
		Queued: make(map[string]int), Delayed: make(map[string]int),
	}
	per, leased := s.d.counts(true)
	for svc, c := range per {
		if !c.queue {
			continue
		}
		st.Queued[svc] = c.pending
		if c.delayed > 0 {
			st.Delayed[svc] = c.delayed
		}
	}
	st.Leased = leased
	return st
}

// RateWindow is the window of the rates titanic.stats reports: events of
// the last RateWindow whole seconds, divided by it.
const RateWindow = 10 * time.Second

const rateSecs = int64(RateWindow / time.Second)

// rateRing counts events per second over the last rateSecs whole seconds
// and the current one (a slot more, so the current second never overwrites
// the oldest one still counted).
type rateRing struct {
	sec [rateSecs + 1]int64 // unix second of each slot
	n   [rateSecs + 1]uint64
}

func (r *rateRing) add(now int64, k uint64) {
	i := now % (rateSecs + 1)
	if r.sec[i] != now {
		r.sec[i], r.n[i] = now, 0
	}
	r.n[i] += k
}

// rate is the events per second over the rateSecs whole seconds before
// now's.
func (r *rateRing) rate(now int64) float64 {
	var sum uint64
	for i, s := range r.sec {
		if s >= now-rateSecs && s < now {
			sum += r.n[i]
		}
	}
	return float64(sum) / float64(rateSecs)
}

// svcTally is what titanic.stats reports of a service beyond the
// dispatcher's queues: finished tickets in the store (read once when the
// service starts serving, then followed commit by commit) and the rates.
type svcTally struct {
	done, failed     int
	submits, replies rateRing
}

// tallies are the per-service tallies, under their own lock: they are
// updated on the store's completer, which must not wait for dispatch.
type tallies struct {
	mu   sync.Mutex
	svcs map[string]*svcTally
}

// get returns service's tally, creating it. Callers hold t.mu.
func (t *tallies) get(service string) *svcTally {
	if t.svcs == nil {
		t.svcs = make(map[string]*svcTally)
	}
	v := t.svcs[service]
	if v == nil {
		v = &svcTally{}
		t.svcs[service] = v
	}
	return v
}

func (s *Service) unix() int64 { return s.cfg.Now().Unix() }

// tallySubmit counts a new ticket of service.
func (s *Service) tallySubmit(service string) {
	now := s.unix()
	s.tally.mu.Lock()
	s.tally.get(service).submits.add(now, 1)
	s.tally.mu.Unlock()
}

// tallyFinish counts a ticket of service that became done (or failed).
func (s *Service) tallyFinish(service string, done bool) {
	now := s.unix()
	s.tally.mu.Lock()
	v := s.tally.get(service)
	if done {
		v.done++
		v.replies.add(now, 1)
	} else {
		v.failed++
	}
	s.tally.mu.Unlock()
}

// tallyRetry uncounts a failed ticket given another round (it is held by
// the dispatcher again).
func (s *Service) tallyRetry(service string) {
	s.tally.mu.Lock()
	v := s.tally.get(service)
	v.failed = max(v.failed-1, 0)
	s.tally.mu.Unlock()
}

// tallyClose uncounts the finished ticket a close deleted.
func (s *Service) tallyClose(res store.Result) {
	if !res.Existed || res.Closed != store.StateDone && res.Closed != store.StateFailed {
		return // unfinished tickets are counted from the dispatcher
	}
	s.tally.mu.Lock()
	v := s.tally.get(res.Service)
	if res.Closed == store.StateDone {
		v.done = max(v.done-1, 0)
	} else {
		v.failed = max(v.failed-1, 0)
	}
	s.tally.mu.Unlock()
}

// loadCounts sets the finished tickets of every service from the store's
// counters (no ticket is read). The service calls it when it starts
// serving, and after a merge, whose ops it does not follow one by one.
func (s *Service) loadCounts(ctx context.Context) (map[string]store.Counts, error) {
	counts, err := s.st.Counts(ctx)
	if err != nil {
		return nil, fmt.Errorf("ticket counts: %w", err)
	}
	s.tally.mu.Lock()
	defer s.tally.mu.Unlock()
	for _, v := range s.tally.svcs {
		v.done, v.failed = 0, 0
	}
	for svc, c := range counts {
		if c.Done > 0 || c.Failed > 0 {
			v := s.tally.get(svc)
			v.done, v.failed = c.Done, c.Failed
		}
	}
	return counts, nil
}

// WorkerCount is a service's registered workers: Idle of them wait for
// work, Busy hold a request or a job.
type WorkerCount struct {
	Workers, Idle, Busy int
}

// QueueStats and ServiceQueue are titanic.stats' answer (tsp owns the
// JSON, which the client reads too).
type (
	QueueStats   = tsp.QueueStats
	ServiceQueue = tsp.ServiceQueue
)

// emptyQueue reports a service line with nothing to show.
func emptyQueue(q ServiceQueue) bool {
	return q.Pending == 0 && q.Delayed == 0 && q.InFlight == 0 && q.Done == 0 && q.Failed == 0 &&
		q.Workers == 0 && q.SubmitRate == 0 && q.ReplyRate == 0 && !q.Paused
}

// QueueStats returns every service's queue: from the dispatcher's memory
// and the tallies, without reading the store. Workers' idle and busy come
// from Config.Workers when set (the broker's view; it may wait for the
// broker loop, so never call QueueStats on it). service, when not empty,
// selects one service.
func (s *Service) QueueStats(ctx context.Context, service string) (QueueStats, error) {
	now := s.cfg.Now()
	var wc map[string]WorkerCount
	if s.cfg.Workers != nil {
		var err error
		if wc, err = s.cfg.Workers(ctx); err != nil {
			return QueueStats{}, fmt.Errorf("workers: %w", err)
		}
	}
	rows := make(map[string]*ServiceQueue)
	row := func(svc string) *ServiceQueue {
		r := rows[svc]
		if r == nil {
			r = &ServiceQueue{Service: svc}
			rows[svc] = r
		}
		return r
	}
	per, _ := s.d.counts(false)
	for svc, c := range per {
		if c.held {
			r := row(svc)
			r.Pending, r.Delayed, r.InFlight = c.pending, c.delayed, c.inFlight
		}
	}
	for _, svc := range s.d.pausedServices() {
		row(svc).Paused = true
	}
	if wc == nil {
		for svc, n := range s.d.workerCounts() {
			row(svc).Workers = n
		}
	}
	for svc, w := range wc {
		r := row(svc)
		idle, busy := w.Idle, w.Busy
		r.Workers, r.Idle, r.Busy = w.Workers, &idle, &busy
	}
	sec := now.Unix()
	s.tally.mu.Lock()
	for svc, v := range s.tally.svcs {
		r := row(svc)
		r.Done, r.Failed = v.done, v.failed
		r.SubmitRate, r.ReplyRate = v.submits.rate(sec), v.replies.rate(sec)
	}
	s.tally.mu.Unlock()
	out := QueueStats{Time: now, WindowSeconds: RateWindow.Seconds(), Services: []ServiceQueue{}}
	for svc, r := range rows {
		if wc != nil && r.Idle == nil {
			// The broker knows every worker: none here.
			r.Idle, r.Busy = new(int), new(int)
		}
		if (service != "" && svc != service) || strings.HasPrefix(svc, tsp.Prefix) || emptyQueue(*r) {
			continue
		}
		out.Services = append(out.Services, *r)
	}
	slices.SortFunc(out.Services, func(a, b ServiceQueue) int { return strings.Compare(a.Service, b.Service) })
	return out, nil
}

// readStats answers titanic.stats [service]: [200 | QueueStats as JSON].
func (s *Service) readStats(ctx context.Context, body [][]byte) ([][]byte, error) {
	if len(body) > 1 {
		return nil, badRequest("titanic.stats wants at most one frame (a service), got %d", len(body))
	}
	svc := ""
	if len(body) == 1 {
		svc = string(body[0])
	}
	st, err := s.QueueStats(ctx, svc)
	if err != nil {
		return nil, err
	}
	js, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encode stats: %w", err)
	}
	return reply(tsp.CodeOK, js), nil
}
