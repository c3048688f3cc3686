package replica

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/store"
)

// fsm is the raft state machine: the store itself. A log entry is one
// batch of store ops (store.EncodeOps); applying it is store.ApplyLog with
// the entry's index and term, so an entry already in the durable store
// (the node restarted, and raft replays its log) is skipped, not applied
// twice.
//
// # Failure
//
// A replica must never move past an entry it did not apply: the others
// applied it, and raft would label later snapshots with indexes whose
// content this store lacks. So any failure other than the idempotent skip
// of an entry already applied (a store that cannot write, an entry this
// build cannot decode, a store that forked from the log) makes the fsm
// fail for good: it reports the error on fatal (the node must stop), it
// applies nothing more, and it refuses every snapshot. Raft's in-memory
// applied index may still move on until the node stops; nothing durable
// does, and on restart the store's own applied index is where replay
// starts.
type fsm struct {
	st  *store.BoltStore
	log *slog.Logger
	// self is this node's ID; conf is the last configuration entry
	// applied (committed), for Node.ConfigTerm.
	self raft.ServerID
	conf atomic.Pointer[confSeen]
	// fatal receives the first failure: the node must stop serving.
	fatal chan error
	// failed is that failure, once there is one.
	failed atomic.Pointer[error]
	// leader is the last announcement applied (announce.go).
	leader atomic.Pointer[LeaderInfo]
	// cluster caches the store's cluster version, so that the gate in
	// ApplyAsync (whose callers may be the broker's loop) reads no store:
	// set at Open and after a restore, raised as entries raise it.
	cluster atomic.Int64
	// applied is the last index the store is known to hold (for the log
	// guard and snapshots).
	applied atomic.Uint64
	// halt stops raft at the first failure, so that a leader steps down
	// at once and a follower takes no more entries; it runs on its own
	// goroutine (raft's shutdown waits for the fsm's).
	halt func()
	// persists ends the copies of snapshots being persisted (see
	// abortPersists).
	persists persistScope
	// installed is called after every snapshot restored (see
	// relogLoop); restores counts them.
	installed func()
	restores  atomic.Int64
}

// persistScope is the context of the snapshots being persisted: a
// snapshot takes the current one when raft asks for it, and
// abortPersists cancels it and starts a new one.
type persistScope struct {
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc
}

func (p *persistScope) current() context.Context {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx == nil {
		p.ctx, p.cancel = context.WithCancel(context.Background())
	}
	return p.ctx
}

// abortPersists makes the snapshots being persisted fail at their next
// write; Reform calls it before it stops raft, unless the latest
// snapshot is a placeholder. Raft's Shutdown waits for
// a snapshot in progress, and a snapshot is a copy of the whole store: a
// reform (a failover) that began just after a snapshot started waited
// for it, 13 s for the 4.7 GB copy of 10,000,000 pending tickets (make
// backlog-pair). An aborted snapshot costs nothing but its partial copy,
// which raft deletes; the reform then writes its placeholder and a real
// snapshot after it.
func (f *fsm) abortPersists() {
	p := &f.persists
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cancel != nil {
		p.cancel()
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
}

// fail records the first failure and reports it (once).
func (f *fsm) fail(err error) error {
	if f.failed.CompareAndSwap(nil, &err) {
		switch {
		case errors.Is(err, errNotFromSnapshot):
			f.log.Error("this node's store was started from its own content (a restored backup or a single broker's store), "+
				"and the group's leader began a raft log without it: its members never held these tickets; stopping. "+
				"Restore the same backup on every member and start them all again (README, Restore), "+
				"or, to keep the group's state instead, start this node with an empty data directory (its store moved aside)", "err", err)
		case errors.Is(err, store.ErrDiverged):
			f.log.Error("this node's store holds entries the replicated log does not: it forked from its peer; stopping", "err", err)
		case errors.Is(err, store.ErrUnsupported):
			f.log.Error("the replicated log holds an entry written by a newer titanic: upgrade this node; stopping", "err", err)
		default:
			f.log.Error("this node's store cannot apply the replicated log; stopping before raft moves past it", "err", err)
		}
		select {
		case f.fatal <- err:
		default:
		}
		if f.halt != nil {
			go f.halt()
		}
	}
	return *f.failed.Load()
}

// err is the failure, if any.
func (f *fsm) err() error {
	if p := f.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// soloMark is the raft log extension of an entry written by a leader that
// was the only voter (see store.Entry.Solo).
var soloMark = []byte("titanic/solo")

// confSeen is a committed configuration entry: its term, and whether
// this node is a voter in it.
type confSeen struct {
	term   uint64
	index  uint64
	voter  bool
	voters int
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
		if err := f.err(); err != nil {
			out[i] = response{err: err}
			continue
		}
		if l.Type == raft.LogConfiguration {
			// A BatchingFSM is handed committed configuration entries
			// too: note the last one, and tell the store when it is
			// shared by two voters or more (the solo journal before it
			// is then on both nodes of a pair).
			c := &confSeen{term: l.Term, index: l.Index}
			voters := 0
			for _, s := range raft.DecodeConfiguration(l.Data).Servers {
				c.voter = c.voter || s.ID == f.self && s.Suffrage == raft.Voter
				if s.Suffrage == raft.Voter {
					voters++
				}
			}
			c.voters = voters
			f.conf.Store(c)
			entries = append(entries, store.Entry{Index: l.Index, Term: l.Term})
			pos = append(pos, i)
			continue
		}
		if l.Type != raft.LogCommand {
			out[i] = response{}
			continue
		}
		ops, err := store.DecodeOps(l.Data)
		if err != nil {
			// Every replica must apply the same entries: one that
			// cannot read an entry stops rather than skip it.
			err = f.fail(fmt.Errorf("log entry %d: %w", l.Index, err))
			out[i] = response{err: err}
			continue
		}
		// A command written by a leader of two voters or more, applied
		// after a configuration of two voters or more, was committed by
		// both nodes of a pair: everything before it is on both, and
		// the store prunes its solo journal there. (Not the
		// configuration entry itself: raft commits the entry that adds
		// a voter under the configuration before it, the leader alone.)
		solo := bytes.Equal(l.Extensions, soloMark)
		m, announced := decodeMeta(l.Extensions)
		if announced {
			// An announcement holds no ops: it shares nothing that
			// could prune the solo journal.
			solo = m.solo
			f.leader.Store(&LeaderInfo{ID: m.leader, Endpoint: m.endpoint, Curve: m.curve, Term: l.Term})
		}
		shared := false
		if c := f.conf.Load(); c != nil && c.voters >= 2 && !solo && !announced {
			shared = true
		}
		entries = append(entries, store.Entry{Index: l.Index, Term: l.Term, Ops: ops, Solo: solo, Shared: shared, ClusterVersion: m.cluster})
		pos = append(pos, i)
	}
	if len(entries) == 0 {
		return out
	}
	res := f.st.ApplyLog(context.Background(), entries)
	for k, i := range pos {
		r := res[k]
		switch {
		case r.Err == nil || errors.Is(r.Err, store.ErrApplied):
			f.applied.Store(max(f.applied.Load(), entries[k].Index))
			if c := int64(entries[k].ClusterVersion); r.Err == nil && c > f.cluster.Load() {
				f.cluster.Store(c)
			}
		case f.err() == nil:
			r.Err = f.fail(fmt.Errorf("log entry %d: %w", entries[k].Index, r.Err))
		default:
			r.Err = f.err()
		}
		out[i] = response{results: r.Results, err: r.Err}
	}
	return out
}

// Snapshot refuses once the fsm failed: raft would label the copy with an
// index whose content the store lacks.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.err(); err != nil {
		return nil, fmt.Errorf("no snapshot of a failed replica: %w", err)
	}
	return &snapshot{st: f.st, ctx: f.persists.current()}, nil
}

// Restore replaces the store's content with a snapshot (a store file,
// which carries its own applied index and history) unless the store holds
// entries the snapshot's history does not: replacing it would silently
// drop them, so that is a fork, and the node stops.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.err(); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	br := bufio.NewReader(rc)
	if head, _ := br.Peek(len(placeholderMark)); bytes.Equal(head, placeholderMark) {
		return errPlaceholder
	}
	ctx := context.Background()
	err := f.st.RestoreChecked(ctx, br, func(in store.History) error {
		local, err := f.st.History(ctx)
		if err != nil {
			return err
		}
		fork := local.ForkPoint(in)
		switch {
		case local.Applied > 0 && fork >= in.Applied:
			// Ahead of the snapshot, or level with it, on its history
			// (this node kept its store and dropped its raft log to
			// rejoin, or holds just what the snapshot does): keep the
			// store; raft's entries after the snapshot are skipped as
			// applied. Level, taking it only copied the same content
			// over the store, the sender's free pages included (a file
			// `titanic compact` had shrunk grew back).
			return store.ErrKeepCurrent
		case local.Applied == 0 || fork >= local.Applied:
			return nil // behind the snapshot, on its history: take it
		}
		err = fmt.Errorf("%w: a snapshot up to index %d shares only entries up to %d of the %d this store applied",
			store.ErrDiverged, in.Applied, fork, local.Applied)
		if startsRestored(local) && !startsRestored(in) {
			// The log guard's case, met by a leader that compacted
			// its log first.
			err = fmt.Errorf("%w: %w", errNotFromSnapshot, err)
		}
		return f.fail(err)
	})
	if err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	if h, err := f.st.History(ctx); err == nil {
		f.applied.Store(h.Applied)
	}
	if v, err := f.st.ClusterVersion(ctx); err == nil {
		f.cluster.Store(int64(v))
	}
	f.restores.Add(1)
	if f.installed != nil {
		f.installed()
	}
	return nil
}

// snapshot copies the store when raft persists it. The copy may include
// entries applied after the snapshot's index; that is harmless because the
// copy carries its applied index and replayed entries at or below it are
// skipped.
type snapshot struct {
	st  *store.BoltStore
	ctx context.Context // nil: not abortable
}

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	ctx := s.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if _, err := s.st.Snapshot(ctx, sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *snapshot) Release() {}

// placeholderMark starts the content of the snapshot raft.RecoverCluster
// makes when a node reforms raft alone (see Node.Reform). That snapshot
// only records raft's new configuration: a copy of the whole store there
// would make failover time grow with the backlog, and the store already
// holds everything. A real snapshot is taken right after the reform; a
// placeholder is never restored (raft then tries an older snapshot, or
// sends a peer the real one once it exists).
var placeholderMark = []byte("titanic placeholder snapshot: the store holds the data\n")

var errPlaceholder = errors.New("placeholder snapshot (made by a reform): not restorable; a real snapshot follows")

type placeholder struct{}

func (placeholder) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(placeholderMark); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist placeholder snapshot: %w", err)
	}
	return sink.Close()
}

func (placeholder) Release() {}
