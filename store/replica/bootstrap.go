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
	case h.Applied == restoredIndex && len(h.Epochs) == 1 && h.Epochs[0].Term == restoredTerm && h.Epochs[0].Start == restoredIndex:
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

// bootstrapFromStore bootstraps raft with conf from a snapshot of the
// store at restoredIndex and restoredTerm (see restoredIndex), instead of
// raft.BootstrapCluster's configuration entry at index 1. In order, each
// step durable before the next: the store records restoredIndex as
// applied (so the snapshot carries it, raft does not restore the
// snapshot over the store at start, and a node that receives it applies
// the leader's entries after it); the snapshot is written (raft's file
// snapshot store makes it appear whole or not at all, and from then on
// raft has state); raft's current term is set to restoredTerm, as
// BootstrapCluster sets it. A crash before the snapshot leaves no raft
// state and a store holdsUnloggedContent still recognises; after it, a
// term of 0, which raft raises at its first election.
func (n *Node) bootstrapFromStore(ctx context.Context, conf raft.Configuration, trans raft.Transport) error {
	if res := n.st.ApplyLog(ctx, []store.Entry{{Index: restoredIndex, Term: restoredTerm}}); res[0].Err != nil && !errors.Is(res[0].Err, store.ErrApplied) {
		return fmt.Errorf("bootstrap raft from the store: %w", res[0].Err)
	}
	n.fsm.applied.Store(max(n.fsm.applied.Load(), restoredIndex))
	sink, err := n.snaps.Create(raft.SnapshotVersionMax, restoredIndex, restoredTerm, conf, 1, trans)
	if err != nil {
		return fmt.Errorf("bootstrap raft from the store: %w", err)
	}
	if err := (&snapshot{st: n.st, ctx: ctx}).Persist(sink); err != nil {
		return fmt.Errorf("bootstrap raft from the store: %w", err)
	}
	if err := n.logs.SetUint64(keyCurrentTerm, restoredTerm); err != nil {
		return fmt.Errorf("bootstrap raft from the store: current term: %w", err)
	}
	n.log.Info("bootstrapped raft cluster from the store's content (it holds tickets no raft entry made: a restored backup): an empty member receives it as a snapshot",
		"voters", len(conf.Servers), "index", restoredIndex, "term", restoredTerm)
	return nil
}
