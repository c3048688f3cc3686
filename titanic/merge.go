package titanic

import (
	"context"
	"errors"
	"fmt"

	"github.com/titanicmq/titanic/store"
)

// Merge takes in the work another history did (the node of a pair that
// yields after a split brain hands it over; see titanic/ha): tickets it
// minted alone (store.OpAdopt), the answers it recorded (OpReply, OpFail),
// the failed tickets it gave another round (OpRetry), the closes its
// clients made (OpClose; OpPurge for a purge, which closes a ticket only
// if it is still failed here: one this node's clients retried meanwhile
// is left alone, its ErrNotFailed no failure of the merge), and the pauses and resumes of services its
// operators made (OpPause, OpResume: the state they left). The store applies them
// idempotently (an adopted ticket already here is left alone, the first
// reply wins, a ticket closed here stays closed), and a batch marked as
// part of a handover (store.OpHandover) is taken once: a handover redone
// after a lost answer changes nothing, also what this node's clients did
// in between (a retry of a ticket the handover failed, a resume of a
// service it paused). Adopted unfinished tickets join
// their queues; tickets finished or closed by the merge leave them.
// Active node only.
func (s *Service) Merge(ctx context.Context, ops []store.Op) error {
	for i := range ops {
		switch ops[i].Kind {
		case store.OpAdopt, store.OpRetry, store.OpReply, store.OpFail, store.OpCancel, store.OpClose, store.OpPurge, store.OpPause, store.OpResume, store.OpHandover:
		default:
			return fmt.Errorf("%w: %s is not a merge op", store.ErrInvalidOp, ops[i].Kind)
		}
	}
	if !s.active.Load() {
		return ErrNotActive
	}
	// Past the committer: its finishing ops are counted here, until the
	// dispatcher forgot what they finished (see pending.go).
	var finishing []store.ID
	for i := range ops {
		if mayFinish(ops[i].Kind) {
			s.d.finishBegins(ops[i].ID)
			finishing = append(finishing, ops[i].ID)
		}
	}
	var applyErr error
	defer func() {
		for _, id := range finishing {
			s.d.finishEnds(id, applyErr != nil)
		}
	}()
	res, err := s.st.Apply(ctx, ops)
	applyErr = err
	if err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	now := s.cfg.Now()
	// final: finished or closed by this batch; adopted: taken in by it.
	final, adopted := map[store.ID]bool{}, map[store.ID]bool{}
	for i := range ops {
		switch {
		case res[i].Err != nil, ops[i].Kind == store.OpHandover:
		case ops[i].Kind == store.OpAdopt:
			adopted[ops[i].ID] = !res[i].Duplicate
		case ops[i].Kind != store.OpRetry:
			final[ops[i].ID] = true
		}
	}
	woken := map[string]bool{}
	kick := false
	for i := range ops {
		op, r := &ops[i], res[i]
		if op.Kind == store.OpHandover {
			continue
		}
		if op.Kind == store.OpPause || op.Kind == store.OpResume {
			if r.Err == nil {
				s.setPaused(op.Service, op.Kind == store.OpPause)
			}
			continue
		}
		var e *entry
		switch {
		case op.Kind == store.OpAdopt && r.Err == nil && !r.Duplicate && !final[op.ID]:
			// With its attempts elsewhere: dispatched once, it does not
			// expire, and they count toward its policy's.
			e = (&entry{id: op.ID, service: op.Service, seq: r.Seq, queued: now, attempts: r.Attempts}).withLifecycle(op.Lifecycle, r.Attempts)
			if r.State == store.StateDispatched {
				// It ran on the yielding side when handed over, and
				// that side drops its leases as it rejoins: its attempt
				// was cut short, as by a failover.
				fx, took := s.d.enlistCut(e, now)
				s.apply(fx)
				if took {
					woken[e.service] = true
				}
				continue
			}
		case op.Kind == store.OpRetry && r.Err == nil && !final[op.ID]:
			// It was failed here, so the dispatcher does not hold it.
			e = (&entry{id: op.ID, service: r.Service, seq: r.Seq, queued: now}).withLifecycle(r.Lifecycle, 0)
		case op.Kind != store.OpAdopt && r.Err == nil && adopted[op.ID]:
			// Adopted and finished by this one batch: the dispatcher
			// never counted it, so it must not count it out (the
			// service's in-flight count went below 0). Its tombstone
			// keeps a window read in flight from queuing it.
			s.d.forget(op.ID)
		case op.Kind != store.OpAdopt && r.Err == nil:
			r.ID = op.ID
			s.d.forgetResult(r)
		}
		if e == nil {
			continue
		}
		if _, k, took := s.d.enlist(e, nil, now); took {
			woken[e.service] = true
			kick = kick || k
		}
	}
	if kick {
		s.kickSchedule()
	}
	for i := range ops {
		switch ops[i].Kind {
		case store.OpAdopt, store.OpRetry, store.OpPause, store.OpResume, store.OpHandover:
		default:
			if res[i].Err == nil {
				s.look.notify(ops[i].ID)
			}
		}
	}
	if _, err := s.loadCounts(ctx); err != nil {
		s.log.Warn("merge: finished tickets not counted again", "err", err)
	}
	for svc := range woken {
		s.b.Wake(svc)
	}
	s.log.Info("merged work handed over by the peer", "ops", len(ops), "queued", len(woken))
	return MergeRefusal(res)
}

// MergeRefusal is the error a handover's results make: an op this
// cluster's version refused (an op of a newer kind the peer wrote alone
// after raising its version) would be dropped with the peer's fork, so
// the handover fails and the peer sends it again, the version raised by
// then (the peer reports its release to this node). The other ops of
// the batch are applied and take it again as duplicates.
func MergeRefusal(res []store.Result) error {
	for _, r := range res {
		if errors.Is(r.Err, store.ErrClusterVersion) {
			return fmt.Errorf("merge: a handed-over op this cluster's version refuses; send it again once the version is raised: %w", r.Err)
		}
	}
	return nil
}
