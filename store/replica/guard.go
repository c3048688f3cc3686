package replica

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/store"
)

// logGuard is the raft log store as raft sees it: raft-boltdb, with a
// check on the two writes by which raft would replace entries this node's
// store has already applied. Raft replaces a follower's entries that
// conflict with the leader's (same index, other term). Entries a node
// applied were committed, and raft never replaces committed entries,
// unless two histories forked: both nodes of a pair went on alone (each
// reformed raft as a single voter; see Node.Reform, whose fenced terms
// make the two histories differ in term at every index). Then the store
// holds acknowledged work the leader's log lacks, and letting raft
// truncate the log, or the leader's later entries land on top, would lose
// it without a trace. So the guard refuses, and the node stops with
// store.ErrDiverged (the pair then hands the fork's work over; see
// titanic/ha).
type logGuard struct {
	raft.LogStore
	fsm *fsm
	// snaps is raft's snapshot store (nil: GetLog answers from the log
	// alone).
	snaps raft.SnapshotStore
	// committed reads the running raft's commit index (nil: raft not
	// returned from NewRaft yet).
	committed atomic.Pointer[func() uint64]
}

func (g *logGuard) setCommitted(f func() uint64) { g.committed.Store(&f) }

// held is the last index this node may not let raft replace: what its
// store applied, and what its raft committed, which the fsm may not have
// applied yet. A node that led alone commits its entries at once and
// applies them a moment later; a peer's leader whose AppendEntries
// arrives in that moment would otherwise have them replaced while the
// fsm still applies them (the store then holds the replaced entries and
// skips the peer's at the same indexes: tickets the peer acknowledged,
// lost; seen in the pair simulation, seed 831874142).
func (g *logGuard) held() uint64 {
	h := g.fsm.applied.Load()
	if f := g.committed.Load(); f != nil {
		h = max(h, (*f)())
	}
	return h
}

// DeleteRange refuses to truncate the tail of the log below the store's
// applied index. Compaction deletes from the head of the log and is let
// through, compactChunk entries per write transaction.
func (g *logGuard) DeleteRange(lo, hi uint64) error {
	first, err := g.FirstIndex()
	if err != nil {
		return err
	}
	held := g.held()
	if lo <= held && lo > 0 {
		last, err := g.LastIndex()
		if err != nil {
			return err
		}
		if lo > first && hi >= last {
			return g.fsm.fail(fmt.Errorf("%w: raft would replace log entries %d-%d, and this node committed or applied up to %d",
				store.ErrDiverged, lo, hi, held))
		}
	}
	if lo > first || hi < lo {
		return g.LogStore.DeleteRange(lo, hi)
	}
	if g.snaps != nil {
		// Compaction keeps the latest snapshot's own entry, so that a
		// log beginning right after a snapshot is only ever a follower's
		// that installed it without holding that entry, where GetLog may
		// make it up: on a leader, a replication that read the entry
		// before it and then the entry itself, with this compaction in
		// between, would send the made-up no-op in place of the command.
		// (A range that does not reach back to the snapshot is raft
		// replacing entries after it: not compaction, left whole.)
		if snap, ok := g.latestSnapshot(); ok && lo <= snap.Index && hi >= snap.Index {
			hi = snap.Index - 1
			if hi < lo {
				return nil
			}
		}
	}
	for from := lo; from <= hi; from += compactChunk {
		if err := g.LogStore.DeleteRange(from, min(from+compactChunk-1, hi)); err != nil {
			return err
		}
	}
	return nil
}

// GetLog answers for the index of the latest snapshot, which the log
// lacks, with the snapshot's index and term (an entry of no content),
// as raft's leader does when it replicates from a snapshot. Raft's
// follower checks the leader's previous entry in its log alone
// (hashicorp/raft#205): a follower sent a snapshot, then entries after
// it whose AppendEntries answer the leader did not get (its RPC timed
// out while the follower stored them), kept those entries but not the
// snapshot's: it refused every AppendEntries after the snapshot's index,
// the leader, stepping back, found its log compacted there and sent the
// snapshot again, and so on until the leader took a newer snapshot: a
// member that joined never caught up (seen in TestOperatorVoteRefusedUntilCaughtUp
// under load, applied index stuck at the join's snapshot for 30 s).
// Only when the log begins right after the snapshot: raft then reads
// such an entry only to check the previous entry's term, since its
// leader sends an entry only after reading the one before it (here
// missing too), and it applies only entries after the snapshot it
// restored. A log that holds entries before the snapshot's index (a
// follower behind when the snapshot came keeps its trailing entries)
// would let a leader read the made-up entry as one to send: that one
// stays not found, so raft sends the snapshot.
func (g *logGuard) GetLog(index uint64, l *raft.Log) error {
	err := g.LogStore.GetLog(index, l)
	if !errors.Is(err, raft.ErrLogNotFound) || g.snaps == nil {
		return err
	}
	if first, ferr := g.LogStore.FirstIndex(); ferr != nil || first != index+1 || index <= 1 {
		// Index 1: a leader reads a peer's first entry without reading
		// one before it.
		return err
	}
	snap, ok := g.latestSnapshot()
	if !ok || snap.Index != index {
		return err
	}
	*l = raft.Log{Index: index, Term: snap.Term, Type: raft.LogNoop}
	return nil
}

// latestSnapshot is the meta of raft's latest snapshot (false: none, or
// the snapshot store could not be read).
func (g *logGuard) latestSnapshot() (*raft.SnapshotMeta, bool) {
	list, err := g.snaps.List()
	if err != nil || len(list) == 0 {
		return nil, false
	}
	return list[0], true
}

// compactChunk bounds the entries one write transaction deletes from the
// head of the log. Raft compacts after each snapshot, on its snapshot
// goroutine, while its leader goes on appending; raft-boltdb deletes a
// range in one transaction, which holds the log's only writer for all of
// it: 0.5-1.2 s for the 12,000-32,000 entries compacted at 10,000,000
// pending (make backlog-pair), a stall of every append, and so of every
// commit, meanwhile. In chunks, appends go between them; a crash midway
// leaves a shorter compaction, which raft takes as it is.
const compactChunk = 1024

// StoreLog implements raft.LogStore through StoreLogs.
func (g *logGuard) StoreLog(l *raft.Log) error { return g.StoreLogs([]*raft.Log{l}) }

// StoreLogs refuses a command entry at an index the store applied under
// another term (the tail was cleared by someone else, or the log was lost
// while the store was kept), and any entry at or below restoredIndex
// reaching a store whose history starts with the restored epoch
// (startsRestored; errNotFromSnapshot).
func (g *logGuard) StoreLogs(logs []*raft.Log) error {
	if len(logs) > 0 && logs[0].Index <= g.fsm.applied.Load() {
		if err := g.check(logs); err != nil {
			return err
		}
	}
	return g.LogStore.StoreLogs(logs)
}

func (g *logGuard) check(logs []*raft.Log) error {
	if err := g.fsm.err(); err != nil {
		return err
	}
	h, err := g.fsm.st.History(context.Background())
	if err != nil {
		return fmt.Errorf("store history: %w", err)
	}
	for _, l := range logs {
		if l.Index <= restoredIndex && startsRestored(h) {
			return g.fsm.fail(fmt.Errorf("%w: %w: log entry %d of term %d", store.ErrDiverged, errNotFromSnapshot, l.Index, l.Term))
		}
		if l.Type != raft.LogCommand || l.Index > h.Applied {
			continue
		}
		if was := h.TermAt(l.Index); was != 0 && was != l.Term {
			return g.fsm.fail(fmt.Errorf("%w: log entry %d of term %d replaces one this store applied in term %d",
				store.ErrDiverged, l.Index, l.Term, was))
		}
	}
	return nil
}

// errNotFromSnapshot is the divergence of a store bootstrapped into raft
// from a snapshot of its own content (bootstrapFromStore: a restored
// backup, or a single broker's store), or that received such a
// snapshot, sent entries at or below the snapshot's index: the leader's
// log began with raft's usual first entry, not with that snapshot, so
// neither it nor the members that follow it hold the store's content
// (they started empty, or from another backup, and elected a leader
// before this node was there). The configuration entry and the no-op
// there are no command the term check above would refuse, and the
// group's entries after them would apply on top of tickets no other
// member has, silently.
var errNotFromSnapshot = errors.New("the leader's raft log began without this store's content: it was not started from the same backup")
