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
func (l *lookups) confirmLater(r readReq) {
	q := &l.confirms
	q.mu.Lock()
	if len(q.pending) >= l.cfg.MaxQueuedReads {
		q.mu.Unlock()
		l.stats.busy.Add(1)
		l.refuseRead(r, busyReply())
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
func (l *lookups) confirmLoop(ctx context.Context) {
	q := &l.confirms
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
				l.refuseRead(r, Refusal(r.req.Service))
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
		err := l.leader.ConfirmLeader(ctx)
		l.stats.confirms.Add(1)
		if (err != nil) != failing {
			failing = err != nil
			if failing {
				l.log.Warn("leadership not confirmed: lookups that could be stale are refused", "err", err)
			} else {
				l.log.Info("leadership confirmed again")
			}
		}
		for _, r := range batch {
			if err != nil {
				l.stats.unconfirmed.Add(1)
				l.refuseRead(r, l.unconfirmed(r.req.Service))
				continue
			}
			r.confirmed = true
			select {
			case l.reads <- r:
			default:
				l.stats.busy.Add(1)
				l.refuseRead(r, busyReply())
			}
		}
		q.n.Add(-int32(len(batch)))
	}
}

// refuseRead answers lookup r with out instead of looking it up; a parked
// titanic.wait is unparked (unless it was answered meanwhile).
func (l *lookups) refuseRead(r readReq, out [][]byte) {
	if r.w != nil {
		if l.unpark(r.w) {
			l.answer(r.w.req.Client, r.w.req.Service, out)
		}
		return
	}
	l.answer(r.req.Client, r.req.Service, out)
}

// unconfirmed is the answer to a lookup of service that leadership was not
// confirmed for.
func (l *lookups) unconfirmed(service string) [][]byte {
	if l.cfg.Unconfirmed != nil {
		if out := l.cfg.Unconfirmed(service); out != nil {
			return out
		}
	}
	return Refusal(service)
}
