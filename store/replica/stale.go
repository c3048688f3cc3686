package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// A log left stale by a snapshot install.
//
// When a follower installs a snapshot from the leader, the Raft paper has
// it keep its log only if the log holds the snapshot's last entry (same
// index, same term), and discard the whole log otherwise. hashicorp/raft
// (up to v1.7.3 at least: issue #697, pull request #704) keeps it either
// way, and keeps the last entry's index and term in memory. A node that
// led alone for a moment (a deposed leader, or a pair's node cut off with
// entries it could not commit) can hold, at the snapshot's index, an
// entry of its own term: every AppendEntries that follows the install
// then fails the term check against that entry, the leader (whose log no
// longer reaches back that far) sends the snapshot again, and the node
// never catches up. The fault suite saw it send one 4,410 times in 30 s.
// Entries kept below the snapshot's index that disagree with it are as
// wrong: this node, leading later, would send them to a peer that lacks
// them.
//
// So after every install relogLoop looks at the log, and if it disagrees
// with the snapshot installed it restarts raft; every start (start, so
// also Open) first discards such a log whole, as the paper says, and raft
// then starts from the snapshot. Only a snapshot this node was sent by a
// leader and restored is trusted so (its ID is kept in the raft
// directory, installedFile): it is committed history. A snapshot of this
// node's own may be of a history raft later replaced (a node that went
// on alone for a moment and rejoined without a resync), and dropping the
// log against it would make that abandoned history this node's latest
// entry. Nothing this node acknowledged is in a stale log: its entries
// there were never committed (the snapshot says otherwise), and the store
// holds the snapshot's history, which staleLog checks before it lets
// anything go.

// installedFile, in the raft directory, holds the ID of the last snapshot
// this node installed from a leader and restored.
const installedFile = "installed-snapshot"

// opened is the raft snapshot store as a running raft sees it: it notes
// the ID of the last snapshot opened, which is the one restored when the
// fsm's Restore runs (raft opens it just before).
type opened struct {
	raft.SnapshotStore
	last *atomic.Value
}

func (o opened) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	o.last.Store(id)
	return o.SnapshotStore.Open(id)
}

// noteInstall runs after every restore of the fsm: one made while raft
// runs is an install from the leader, whose ID is kept for staleLog
// before relogLoop is told to look.
func (n *Node) noteInstall() {
	if n.booting.Load() {
		return // a restore at start or in a reform: this node's own
	}
	id, _ := n.lastOpened.Load().(string)
	if id == "" {
		return
	}
	if err := writeFileSync(filepath.Join(n.cfg.Dir, installedFile), []byte(id)); err != nil {
		n.log.Warn("installed snapshot not noted", "id", id, "err", err)
		return
	}
	select {
	case n.relog <- struct{}{}:
	default:
	}
}

// installedSnapshot returns the snapshot noted in installedFile, if it is
// still kept.
func (n *Node) installedSnapshot() (*raft.SnapshotMeta, bool) {
	b, err := os.ReadFile(filepath.Join(n.cfg.Dir, installedFile))
	if err != nil {
		return nil, false
	}
	list, err := n.snaps.List()
	if err != nil {
		return nil, false
	}
	for _, m := range list {
		if m.ID == string(b) {
			return m, true
		}
	}
	return nil, false
}

// writeFileSync writes path through a temporary file, synced and renamed.
func writeFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// staleLog reports whether this node's raft log disagrees with the
// snapshot it last installed from a leader, as far as one entry can tell: the entry at the
// snapshot's index has another term than the snapshot; or, in a log
// compacted past that index, its first entry has an older term than the
// snapshot's (terms never go down along a log, so that entry came from a
// history the snapshot replaced); or, in a log that ends before the
// snapshot, its last entry has another term than the snapshot's history
// (the store's, once it holds the snapshot) gives it. It also returns
// the log's bounds and the snapshot.
func (n *Node) staleLog(ctx context.Context) (stale bool, first, last uint64, snap *raft.SnapshotMeta, err error) {
	snap, ok := n.installedSnapshot()
	if !ok {
		return false, 0, 0, nil, nil
	}
	if first, err = n.logs.FirstIndex(); err != nil {
		return false, 0, 0, nil, fmt.Errorf("raft log: %w", err)
	}
	if last, err = n.logs.LastIndex(); err != nil {
		return false, 0, 0, nil, fmt.Errorf("raft log: %w", err)
	}
	if last == 0 || last < first {
		return false, first, last, snap, nil
	}
	at := snap.Index
	switch {
	case last < snap.Index:
		at = last
	case first > snap.Index:
		at = first
	}
	var l raft.Log
	if err := n.logs.GetLog(at, &l); err != nil {
		if errors.Is(err, raft.ErrLogNotFound) {
			return false, first, last, snap, nil // a gap: raft's to handle
		}
		return false, 0, 0, nil, fmt.Errorf("raft log entry %d: %w", at, err)
	}
	if at > snap.Index {
		return l.Term < snap.Term, first, last, snap, nil
	}
	hist, err := n.st.History(ctx)
	if err != nil {
		return false, 0, 0, nil, fmt.Errorf("store history: %w", err)
	}
	want := snap.Term
	if at < snap.Index {
		// The snapshot's term is known only at its own index; below it,
		// the store's history is the snapshot's once the store holds it.
		if hist.Applied < snap.Index {
			return false, first, last, snap, nil
		}
		want = hist.TermAt(at)
	} else if had := hist.TermAt(at); had != 0 && had != want {
		// The store applied that index under another term than the
		// snapshot's: not a stale log but a store that forked from the
		// snapshot, which is not this function's to settle.
		return false, first, last, snap, nil
	}
	return want != 0 && l.Term != want, first, last, snap, nil
}

// dropStaleLog discards the raft log whole when it disagrees with the
// newest snapshot (see staleLog). Raft must not be running.
func (n *Node) dropStaleLog() error {
	stale, first, last, snap, err := n.staleLog(context.Background())
	if err != nil || !stale {
		return err
	}
	if err := n.logs.DeleteRange(first, last); err != nil {
		return fmt.Errorf("drop the raft log left stale by snapshot %s: %w", snap.ID, err)
	}
	n.log.Warn("raft log disagreed with the snapshot installed from the leader (uncommitted entries of an earlier term): dropped, raft starts from the snapshot",
		"snapshot", snap.ID, "snapshot_index", snap.Index, "snapshot_term", snap.Term, "log_first", first, "log_last", last)
	return nil
}

// relogLoop restarts raft after a snapshot install that left the log
// stale (see staleLog): raft keeps the stale entry's term in memory, so
// only a new instance, started from a log without it, catches up.
func (n *Node) relogLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case <-n.relog:
		}
		if n.relogOff.Load() {
			continue
		}
		if err := n.restartIfStale(); err != nil {
			n.log.Error("restarting raft over a stale log", "err", err)
		}
	}
}

func (n *Node) restartIfStale() error {
	n.life.Lock()
	defer n.life.Unlock()
	select {
	case <-n.stop:
		return nil
	default:
	}
	if n.fsm.err() != nil || n.Halted() {
		return nil
	}
	stale, _, _, _, err := n.staleLog(context.Background())
	if err != nil || !stale {
		return err
	}
	if err := n.stopCurrent(); err != nil {
		return err
	}
	if err := n.fsm.err(); err != nil {
		return nil // the fsm failed meanwhile: the node stops
	}
	if err := n.start(false); err != nil {
		return n.fsm.fail(fmt.Errorf("restart raft over a stale log: %w", err))
	}
	return nil
}
