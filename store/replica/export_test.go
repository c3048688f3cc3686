package replica

import (
	"io"

	"github.com/hashicorp/raft"
)

// DisableRelog stops n from restarting raft over a log a snapshot install
// left stale, so that a test can show hashicorp/raft#697 without it.
func DisableRelog(n *Node) { n.relogOff.Store(true) }

// SnapshotIndex returns the index of n's newest snapshot that is not a
// reform's placeholder (0: none).
func SnapshotIndex(n *Node) uint64 {
	if m, ok := n.newestRealSnapshot(); ok {
		return m.Index
	}
	return 0
}

// Installs returns how many snapshots n's store was restored from since
// it opened.
func Installs(n *Node) int64 { return n.fsm.restores.Load() }

// newestRealSnapshot returns the kept snapshot of the highest index that
// is not a reform's placeholder (raft lists them by term first).
func (n *Node) newestRealSnapshot() (*raft.SnapshotMeta, bool) {
	list, err := n.snaps.List()
	if err != nil {
		return nil, false
	}
	var best *raft.SnapshotMeta
	for _, m := range list {
		if best != nil && m.Index <= best.Index {
			continue
		}
		if n.isPlaceholder(m) {
			continue
		}
		best = m
	}
	return best, best != nil
}

// RestoreSnapshot hands r to n's state machine as raft does with a
// snapshot it installs.
func RestoreSnapshot(n *Node, r io.Reader) error { return n.fsm.Restore(io.NopCloser(r)) }

// TakeSnapshot has n's raft snapshot now.
func TakeSnapshot(n *Node) error { return n.raft().Snapshot().Error() }
