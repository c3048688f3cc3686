package replica

import (
	"context"
	"fmt"

	"github.com/hashicorp/raft"
)

// ConfirmLeader returns nil once this node has shown that it was the raft
// leader at a moment after the call began, with every entry committed
// before that moment applied to its store. A read of the local store made
// after it returns nil therefore sees every write acknowledged (by any
// leader) before the call began: a ticket missing from it was not
// acknowledged by then. Otherwise it returns an error wrapping
// ErrNotLeader (or ctx's error): this node may be a deposed leader that
// has not noticed yet, and its store may lack what a newer leader
// acknowledged.
//
// Each call costs one heartbeat round to a quorum (raft's VerifyLeader),
// and the first call of a term one barrier entry: callers that read often
// share one call among the reads that began before it (titanic batches
// its lookups so). It is safe for concurrent use.
//
// It blocks until raft answers: the quorum's acknowledgement, a follower
// that knows a newer term, or the step-down that follows LeaderLeaseTimeout
// without a quorum's contact (raft answers pending verifications then).
// ctx is checked before each step. The barrier and the verification
// go through waitFuture (not bounded by ctx): raft queues them in
// buffered channels, and a raft stopped with one there never answers it.
//
// The residual risk is raft's own: VerifyLeader counts the answer to a
// heartbeat that was already in flight when it began, so a leader stalled
// (paused) in the middle of such a round trip for longer than the election
// timeout could be confirmed by that old answer once.
func (n *Node) ConfirmLeader(ctx context.Context) error {
	r := n.raft()
	term := r.CurrentTerm()
	if r.State() != raft.Leader {
		return ErrNotLeader
	}
	if n.readTerm.Load() != term {
		// The store may lack entries of earlier terms that this node has
		// in its log but has not applied yet (a leader learns what is
		// committed only by committing an entry of its own term). The
		// dispatcher's Activate applies them too, but a node that loses
		// and regains leadership between two polls of its role loop
		// keeps serving without a new Activate.
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := waitFuture(context.WithoutCancel(ctx), r, r.Barrier(n.timeout(ctx))); err != nil {
			return fmt.Errorf("%w: confirm leadership: barrier: %w", ErrNotLeader, err)
		}
		n.readTerm.Store(term)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := waitFuture(context.WithoutCancel(ctx), r, r.VerifyLeader()); err != nil {
		return fmt.Errorf("%w: confirm leadership: %w", ErrNotLeader, err)
	}
	// Leader in the same term before and after: leader throughout (a node
	// leads at most once per term), so the quorum answered this term, and
	// the barrier of this term was applied.
	if r.CurrentTerm() != term || r.State() != raft.Leader {
		return fmt.Errorf("%w: confirm leadership: the term changed", ErrNotLeader)
	}
	return nil
}
