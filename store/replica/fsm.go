package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/store"
)

// fsm is the raft state machine: the store itself. A log entry is one
// batch of store ops (store.EncodeOps); applying it is store.ApplyAt with
// the entry's index, so an entry already in the durable store (the node
// restarted, and raft replays its log) is skipped, not applied twice.
type fsm struct {
	st  *store.BoltStore
	log *slog.Logger
	// stop ends the retry loop of a failing apply when the node closes.
	stop <-chan struct{}
	// self is this node's ID; conf is the last configuration entry
	// applied (committed), for Node.ConfigTerm.
	self raft.ServerID
	conf atomic.Pointer[confSeen]
	// fatal receives the first ErrDiverged: the node must stop serving.
	fatal chan error
}

// diverged reports that the store no longer matches the log (once).
func (f *fsm) diverged(err error) {
	f.log.Error("this node's store diverged from the replicated log: it must be restored from the other nodes", "err", err)
	select {
	case f.fatal <- err:
	default:
	}
}

// confSeen is a committed configuration entry: its term, and whether
// this node is a voter in it.
type confSeen struct {
	term  uint64
	voter bool
}

// response is what Apply hands back to the leader's ApplyFuture.
type response struct {
	results []store.Result
	err     error
}

var _ raft.BatchingFSM = (*fsm)(nil)

func (f *fsm) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch hands every command entry to the store at once, in order,
// so that the store commits them together (one fsync).
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	var (
		entries []store.Entry
		pos     []int
	)
	for i, l := range logs {
		if l.Type == raft.LogConfiguration {
			// A BatchingFSM is handed committed configuration entries
			// too: note the last one.
			c := &confSeen{term: l.Term}
			for _, s := range raft.DecodeConfiguration(l.Data).Servers {
				c.voter = c.voter || s.ID == f.self && s.Suffrage == raft.Voter
			}
			f.conf.Store(c)
		}
		if l.Type != raft.LogCommand {
			out[i] = response{}
			continue
		}
		ops, err := store.DecodeOps(l.Data)
		if err != nil {
			// A leader only appends what EncodeOps made: an entry that
			// does not decode is a bug or a damaged log. Every replica
			// skips it alike, so they stay equal.
			f.log.Error("undecodable log entry skipped", "index", l.Index, "err", err)
			out[i] = response{err: fmt.Errorf("%w: %w", store.ErrCorrupt, err)}
			continue
		}
		entries = append(entries, store.Entry{Index: l.Index, Term: l.Term, Ops: ops})
		pos = append(pos, i)
	}
	if len(entries) == 0 {
		return out
	}
	res := f.apply(entries)
	for k, i := range pos {
		out[i] = response{results: res[k].Results, err: res[k].Err}
	}
	return out
}

// apply applies entries, retrying a failure of the store itself (disk
// full, I/O error) until it succeeds or the node closes: a replica must
// not skip an entry that the others applied, so it stalls instead.
func (f *fsm) apply(entries []store.Entry) []store.EntryResult {
	final := make([]store.EntryResult, len(entries))
	todo := make([]int, len(entries))
	for i := range todo {
		todo[i] = i
	}
	wait := 10 * time.Millisecond
	for {
		batch := make([]store.Entry, len(todo))
		for k, i := range todo {
			batch[k] = entries[i]
		}
		res := f.st.ApplyLog(context.Background(), batch)
		var again []int
		var failed error
		for k, i := range todo {
			r := res[k]
			if errors.Is(r.Err, store.ErrDiverged) {
				f.diverged(r.Err)
			}
			if r.Err != nil && !errors.Is(r.Err, store.ErrApplied) && !errors.Is(r.Err, store.ErrClosed) && !errors.Is(r.Err, store.ErrDiverged) {
				again = append(again, i)
				failed = r.Err
				continue
			}
			final[i] = r
		}
		if len(again) == 0 {
			return final
		}
		f.log.Error("applying committed log entries failed; retrying", "first", entries[again[0]].Index, "err", failed, "retry_in", wait)
		select {
		case <-f.stop:
			for _, i := range again {
				final[i] = store.EntryResult{Err: failed}
			}
			return final
		case <-time.After(wait):
		}
		todo = again
		wait = min(2*wait, 5*time.Second)
	}
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) { return &snapshot{st: f.st}, nil }

// Restore replaces the store's content with a snapshot (a store file,
// which carries its own applied index).
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.st.Restore(context.Background(), rc); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	return nil
}

// snapshot copies the store when raft persists it. The copy may include
// entries applied after the snapshot's index; that is harmless because the
// copy carries its applied index and replayed entries at or below it are
// skipped.
type snapshot struct{ st *store.BoltStore }

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.st.Snapshot(context.Background(), sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *snapshot) Release() {}
