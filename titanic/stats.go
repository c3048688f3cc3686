package titanic

import "sync/atomic"

// counters are the service's event counts, safe for concurrent update.
type counters struct {
	submits, duplicates, closes, lookups           atomic.Uint64
	dispatches, redeliveries, replies, lateReplies atomic.Uint64
	failed, busy, badRequests, loads               atomic.Uint64
	commits, committedOps, commitErrors            atomic.Uint64
	expired                                        atomic.Uint64
	confirms, unconfirmed                          atomic.Uint64
	verdictRetries                                 atomic.Uint64
	retries                                        atomic.Uint64
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
	// Retries counts failed tickets given another round (titanic.retry).
	Retries uint64
	// Queued is the number of pending tickets waiting per service, and
	// Leased the number held by workers (not counting those whose worker
	// answered and whose reply waits for its commit).
	Queued map[string]int
	Leased int
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
		VerdictRetries: c.verdictRetries.Load(), Retries: c.retries.Load(),
		Queued: make(map[string]int),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for svc, q := range s.queues {
		st.Queued[svc] = q.len() - s.gone[svc]
	}
	for _, e := range s.entries {
		if e.leased && !e.replied {
			st.Leased++
		}
	}
	return st
}
