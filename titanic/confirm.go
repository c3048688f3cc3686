package titanic

import (
	"context"
	"sync"
	"sync/atomic"
)

// Reads that cannot be stale. In replicated modes the store answers from
// this node's copy, and the broker's Gate learns that the node lost
// leadership only some time after it did (raft notices, then the role
// loop polls it): a leader that was paused or cut off can meanwhile be
// asked about a ticket that a newer leader acknowledged. A recorded reply
// is final, so sending it is always right; but "unknown" (400) would make
// the client give up on a ticket that exists, and "pending" (300), the
// status of an unfinished ticket or a list may be behind. Such answers are
// sent only after the store confirmed that this node was the leader after
// the lookup began (store.Leadership); otherwise the lookup is refused with
// the not-active 500, and the client moves on to the node that serves.
//
// Confirmations are batched: one confirmer goroutine takes every lookup
// waiting for one, confirms once (a heartbeat round to a quorum), and
// hands them back to the readers to be looked up again, now after the
// confirmation. Lookups that arrive meanwhile wait for the next round, so
// there is one round in flight however many lookups there are, and the
// readers never wait for one.

// confirmQueue holds the lookups waiting for a confirmation round.
type confirmQueue struct {
	mu      sync.Mutex
	pending []readReq
	// n counts lookups queued or in a round, for Idle.
	n    atomic.Int32
	kick chan struct{}
}

// confirmLater queues r for the next confirmation round.
func (s *Service) confirmLater(r readReq) {
	q := &s.confirms
	q.mu.Lock()
	if len(q.pending) >= s.cfg.MaxQueuedReads {
		q.mu.Unlock()
		s.stats.busy.Add(1)
		s.refuseRead(r, busyReply())
		return
	}
	q.pending = append(q.pending, r)
	q.n.Add(1)
	q.mu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// confirmLoop runs the confirmation rounds until ctx is done.
func (s *Service) confirmLoop(ctx context.Context) {
	q := &s.confirms
	failing := false
	for {
		select {
		case <-ctx.Done():
			// Lookups still waiting are refused: the node stops.
			q.mu.Lock()
			batch := q.pending
			q.pending = nil
			q.mu.Unlock()
			for _, r := range batch {
				s.refuseRead(r, Refusal(r.req.Service))
			}
			q.n.Add(-int32(len(batch)))
			return
		case <-q.kick:
		}
		q.mu.Lock()
		batch := q.pending
		q.pending = nil
		q.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		// Every lookup of batch began before this call.
		err := s.leader.ConfirmLeader(ctx)
		s.stats.confirms.Add(1)
		if (err != nil) != failing {
			failing = err != nil
			if failing {
				s.log.Warn("leadership not confirmed: lookups that could be stale are refused", "err", err)
			} else {
				s.log.Info("leadership confirmed again")
			}
		}
		for _, r := range batch {
			if err != nil {
				s.stats.unconfirmed.Add(1)
				s.refuseRead(r, s.unconfirmed(r.req.Service))
				continue
			}
			r.confirmed = true
			select {
			case s.reads <- r:
			default:
				s.stats.busy.Add(1)
				s.refuseRead(r, busyReply())
			}
		}
		q.n.Add(-int32(len(batch)))
	}
}

// refuseRead answers lookup r with out instead of looking it up; a parked
// titanic.wait is unparked (unless it was answered meanwhile).
func (s *Service) refuseRead(r readReq, out [][]byte) {
	if r.w != nil {
		if s.unpark(r.w) {
			s.answer(r.w.req.Client, r.w.req.Service, out)
		}
		return
	}
	s.answer(r.req.Client, r.req.Service, out)
}

// unconfirmed is the answer to a lookup of service that leadership was not
// confirmed for.
func (s *Service) unconfirmed(service string) [][]byte {
	if s.cfg.Unconfirmed != nil {
		if out := s.cfg.Unconfirmed(service); out != nil {
			return out
		}
	}
	return Refusal(service)
}
