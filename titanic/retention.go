package titanic

import (
	"context"

	"github.com/titanicmq/titanic/store"
)

// Retention: a closed ticket is deleted at once (titanic.close); a
// finished ticket nobody closes is deleted DoneTTL after it finished, by a
// sweep every SweepInterval on the serving node (the deletes go through the
// store like any op, so replicas delete alike).

// sweepBatch bounds the tickets one sweep deletes, so a sweep never holds
// the store's writer long; the next sweep takes the rest.
const sweepBatch = 1000

// sweep deletes finished tickets older than DoneTTL. It returns how many
// it queued for deletion.
func (s *Service) sweep(ctx context.Context) int {
	if !s.active.Load() {
		return 0
	}
	cutoff := s.cfg.Now().Add(-s.cfg.DoneTTL)
	// A look first, without the gate: most sweeps find nothing, and
	// must not hold retries up.
	if ids, err := s.st.Expired(ctx, cutoff, 1); err != nil || len(ids) == 0 {
		if err != nil {
			s.log.Warn("retention sweep", "err", err)
		}
		return 0
	}
	// No retry in flight from the listing until the closes are queued
	// behind it (see retry).
	s.sweepGate.Lock()
	defer s.sweepGate.Unlock()
	ids, err := s.st.Expired(ctx, cutoff, sweepBatch)
	if err != nil {
		s.log.Warn("retention sweep", "err", err)
		return 0
	}
	if len(ids) == 0 {
		return 0
	}
	ops := make([]pendingOp, len(ids))
	for i, id := range ids {
		ops[i] = pendingOp{op: store.Op{Kind: store.OpClose, ID: id, Time: s.cfg.Now()}, done: func(res store.Result, err error) {
			if err == nil && res.Err == nil && res.Existed {
				// A ticket retried since Expired listed it is held
				// again: it must not stay held once deleted.
				s.forgetResult(res)
				s.stats.expired.Add(1)
				s.tallyClose(res)
				s.closed(res.ID, res.Service)
			}
		}}
	}
	_ = s.enqueue(ops...)
	s.log.Info("retention: deleting finished tickets", "count", len(ids), "ttl", s.cfg.DoneTTL)
	return len(ids)
}
