package replica

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/store"
)

// A store can hold content that no raft entry made: a backup restored on
// every node to start a new pair or group (titanic restore clears the old
// cluster's bookkeeping, not the tickets), or a single broker's store
// started as a replica. Bootstrapped as raft bootstraps an empty node (a
// configuration entry at index 1, term 1), its log says nothing of that
// content, and a node with an empty data directory (a replaced disk)
// bootstraps the very same entry: raft's log matching then takes the two
// for equal up to index 1, and the leader brings the empty node up to
// date with the entries after it, never with a snapshot. The empty node
// holds the new deployment's work and none of the restored tickets, counts
// as caught up, and once it serves, the restored tickets are lost for
// good (the pair sends its snapshot to the node that still held them).
// Compacting the log at the leader later (PrepareJoin does, before it
// adds a voter) comes too late for a member that is already a voter, and
// raft replicates to a peer as soon as it leads: there is no moment at
// which a leader could compact before an empty member asks.
//
// So such a store bootstraps raft from a snapshot of itself instead, at
// restoredIndex: raft's state is then that snapshot, with the
// configuration, and an empty log. No empty node's log matches it (an
// empty node holds index 1 only, and the leader has no entry at 1 to
// compare), so raft sends an empty member the snapshot, restored tickets
// included, in a pair as in a group, after a reform as before one, and a
// member added later (PrepareJoin finds the log compacted already). Every
// node restored from the same backup makes the same snapshot at the same
// index and term, so the restored nodes of a new deployment agree with
// each other as raft requires.
const (
	// restoredIndex is past the index of the bootstrap entry every empty
	// node writes (1), so that the two never match.
	restoredIndex uint64 = 2
	// restoredTerm is raft's bootstrap term: no leader writes in it (the
	// first election is of term 2), so the store's history names the
	// restored content apart from any entry.
	restoredTerm uint64 = 1
)

// holdsUnloggedContent reports whether the store holds content no raft
// entry made (see restoredIndex): tickets were submitted to it, and it
// has applied no entry; or it is a store whose bootstrap from itself
// (bootstrapFromStore) stopped after it marked the store and before the
// snapshot was written. Only asked when raft has no state at all.
func (n *Node) holdsUnloggedContent(ctx context.Context) (bool, error) {
	h, err := n.st.History(ctx)
	if err != nil {
		return false, fmt.Errorf("store history: %w", err)
	}
	switch {
	case markedForBootstrap(h):
		return true, nil
	case h.Applied != 0 || len(h.Epochs) != 0:
		// A store that applied entries of a raft log whose state was
		// lost (the raft directory removed): it waits for its peers, as
		// it did before.
		return false, nil
	}
	stats, err := n.st.Stats(ctx)
	if err != nil {
		return false, fmt.Errorf("store stats: %w", err)
	}
	// A new store's sequence counter starts at 1; every submit raises it.
	return stats.NextSeq > 1 || len(stats.Services) > 0, nil
}

// markedForBootstrap reports whether h is that of a store
// bootstrapFromStore marked and nothing applied to since: the restored
// epoch alone.
func markedForBootstrap(h store.History) bool {
	return h.Applied == restoredIndex && len(h.Epochs) == 1 && startsRestored(h)
}

// startsRestored reports whether h begins with the restored epoch: the
// store's content was bootstrapped into raft from a snapshot of itself
// (here, or on the member that sent it that snapshot), so no log that
// holds an entry at or below restoredIndex ever held it.
func startsRestored(h store.History) bool {
	return len(h.Epochs) > 0 && h.Epochs[0].Start == restoredIndex && h.Epochs[0].Term == restoredTerm
}

// hasRaftState is raft.HasExistingState, except for the state a
// bootstrap from the store leaves when it stops after setting raft's
// term and before writing the snapshot (see bootstrapSteps): a current
// term of restoredTerm, no log, no snapshot, over a store marked for the
// bootstrap. Raft takes the term alone for state, and would start with
// no configuration, waiting for a leader that may never come (every
// member restored, each stopped there); that bootstrap is done again.
func (n *Node) hasRaftState(ctx context.Context) (bool, error) {
	has, err := raft.HasExistingState(n.logs, n.logs, n.snaps)
	if err != nil || !has {
		return has, err
	}
	// HasExistingState failed on any error but "not found" reading the
	// term: an error here is a log or snapshot without a term.
	if term, err := n.logs.GetUint64(keyCurrentTerm); err != nil || term != restoredTerm {
		return true, nil
	}
	last, err := n.logs.LastIndex()
	if err != nil {
		return false, fmt.Errorf("raft log: %w", err)
	}
	snaps, err := n.snaps.List()
	if err != nil {
		return false, fmt.Errorf("raft snapshots: %w", err)
	}
	if last != 0 || len(snaps) != 0 {
		return true, nil
	}
	h, err := n.st.History(ctx)
	if err != nil {
		return false, fmt.Errorf("store history: %w", err)
	}
	return !markedForBootstrap(h), nil
}

// bootstrapFromStore bootstraps raft with conf from a snapshot of the
// store at restoredIndex and restoredTerm (see restoredIndex), instead of
// raft.BootstrapCluster's configuration entry at index 1, in the steps
// of bootstrapSteps.
func (n *Node) bootstrapFromStore(ctx context.Context, conf raft.Configuration, trans raft.Transport) error {
	for _, step := range n.bootstrapSteps(ctx, conf, trans) {
		if err := step.do(); err != nil {
			return fmt.Errorf("bootstrap raft from the store: %s: %w", step.name, err)
		}
	}
	n.log.Info("bootstrapped raft cluster from the store's content (it holds tickets no raft entry made: a restored backup): an empty member receives it as a snapshot",
		"voters", len(conf.Servers), "index", restoredIndex, "term", restoredTerm)
	return nil
}

// bootstrapStep is one durable step of a bootstrap from the store.
type bootstrapStep struct {
	name string
	do   func() error
}

// bootstrapSteps are the steps of bootstrapFromStore, in order, each
// durable before the next, so that a crash between two leaves a state
// the next start takes up again:
//
//   - the store records restoredIndex as applied, in restoredTerm (so the
//     snapshot carries it, raft does not restore the snapshot over the
//     store at start, a node that receives it applies the leader's
//     entries after it, and the guard knows the store's history for one
//     that began here: startsRestored). A crash after it leaves no raft
//     state and a store holdsUnloggedContent still recognises.
//   - raft's current term is set to restoredTerm, as BootstrapCluster
//     sets it. A crash after it leaves the state hasRaftState takes for
//     none.
//   - the snapshot is written (raft's file snapshot store makes it appear
//     whole or not at all), and from then on raft has state.
//
// The term comes before the snapshot: a snapshot without it left raft's
// term at 0, and raft's first election is then of term 1, restoredTerm
// (a member of one voter leads in it at once; in a group, any restored
// member grants its vote, having cast none in term 1), which no leader
// may write in (see restoredTerm).
func (n *Node) bootstrapSteps(ctx context.Context, conf raft.Configuration, trans raft.Transport) []bootstrapStep {
	return []bootstrapStep{
		{"mark the store", func() error {
			if res := n.st.ApplyLog(ctx, []store.Entry{{Index: restoredIndex, Term: restoredTerm}}); res[0].Err != nil && !errors.Is(res[0].Err, store.ErrApplied) {
				return res[0].Err
			}
			n.fsm.applied.Store(max(n.fsm.applied.Load(), restoredIndex))
			return nil
		}},
		{"current term", func() error { return n.logs.SetUint64(keyCurrentTerm, restoredTerm) }},
		{"snapshot", func() error {
			sink, err := n.snaps.Create(raft.SnapshotVersionMax, restoredIndex, restoredTerm, conf, 1, trans)
			if err != nil {
				return err
			}
			return (&snapshot{st: n.st, ctx: ctx}).Persist(sink)
		}},
	}
}
