package replica

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/store"
)

// Usage reports the local data file's usage (see store.BoltStore.Usage).
func (n *Node) Usage() (store.Usage, error) { return n.st.Usage() }

// Expired lists expired finished tickets of the local store (see
// store.BoltStore.Expired); their deletion goes through the log.
func (n *Node) Expired(ctx context.Context, cutoff time.Time, limit int) ([]store.ID, error) {
	return n.st.Expired(ctx, cutoff, limit)
}

// propose appends ops as one log entry now and returns a function that
// waits for its outcome. Entries appended in turn commit in that order;
// the entry builder keeps several in flight so that raft replicates them
// together (one AppendEntries, one follower fsync). Entry builder only.
func (n *Node) propose(ops []store.Op) func(context.Context) ([]store.Result, error) {
	r := n.raft()
	if r.State() != raft.Leader {
		return func(context.Context) ([]store.Result, error) { return nil, ErrNotLeader }
	}
	l := raft.Log{Data: store.EncodeOps(ops)}
	if n.solo.Load() {
		l.Extensions = soloMark
	}
	f := r.ApplyLog(l, n.cfg.ApplyTimeout)
	return func(ctx context.Context) ([]store.Result, error) {
		if err := waitFuture(ctx, r, f); err != nil {
			switch {
			case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout):
				return nil, fmt.Errorf("%w: %w", ErrNotLeader, err)
			case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, raft.ErrLeadershipTransferInProgress):
				return nil, fmt.Errorf("%w: %w", ErrUncertain, err)
			}
			return nil, fmt.Errorf("raft apply: %w", err)
		}
		resp, ok := f.Response().(response)
		if !ok {
			return nil, fmt.Errorf("raft apply: unexpected response %T", f.Response())
		}
		if resp.err != nil {
			return nil, resp.err
		}
		return resp.results, nil
	}
}

func unknownKind(o store.Op) bool { return !o.Kind.Known() }

// gated reports whether o's kind is newer than the first release's, so
// that the cluster version decides whether it may be written. OpAdopt is
// not: only the two nodes of a pair exchange it, when both take part in a
// merge (a node of the first release has no merge to take part in).
func gated(o store.Op) bool { return o.Version() > 1 && o.Kind != store.OpAdopt }

// admit is ApplyAsync's check of a call holding ops that must stay out of
// the log: ops of kinds this build does not know (every node, this one
// included, would read the entry as a newer version's and stop:
// store.ErrUnsupported), and ops of kinds newer than the cluster version
// (the members that run an older titanic would stop). Such an op fails
// alone, with store.ErrInvalidOp or store.ErrClusterVersion, and the others
// are applied.
func (n *Node) admit(ops []store.Op, done func(store.Done)) ([]store.Op, func(store.Done)) {
	refused := make([]error, len(ops))
	cluster := 0
	stripped := false
	for i, o := range ops {
		switch {
		case unknownKind(o):
			refused[i] = fmt.Errorf("%s %s: %w: unknown kind", o.Kind, o.ID, store.ErrInvalidOp)
		case gated(o):
			if cluster == 0 {
				cluster, _ = n.ClusterVersion(context.Background())
			}
			bare := o.WithoutOptional()
			need := o.Version()
			// Only what enriches the record (the worker's name) is
			// newer: keep the op, drop that, while the cluster cannot
			// read it or while writing it would be the first newer op
			// this store applies (the first moves every member's data
			// file to format 2 and so ends a rollback to the first
			// release: a name is not worth that).
			if bare.Version() < need && (need > cluster || !n.st.NewerKinds()) {
				if !stripped {
					ops, stripped = slices.Clone(ops), true
				}
				ops[i] = bare
				continue
			}
			if need > cluster {
				refused[i] = &store.ClusterVersionError{Kind: o.Kind, Need: need, Have: cluster}
			}
		}
	}
	first := slices.IndexFunc(refused, func(e error) bool { return e != nil })
	if first < 0 {
		return ops, done // maybe stripped
	}
	for i, o := range ops {
		// A handover's mark counts the ops after it in its call (see
		// store.OpHandover): with one of them left out, it would count
		// the next caller's ops of the same entry, and record the
		// refused op as taken, so that the redo the refusal asks for
		// skipped it. The batch goes in unmarked (taken as an older
		// yielder's).
		if o.Kind == store.OpHandover && refused[i] == nil {
			refused[i] = fmt.Errorf("handover mark left out with a refused op of its batch: %w", refused[first])
		}
	}
	var kept []store.Op
	for i, o := range ops {
		if refused[i] == nil {
			kept = append(kept, o)
		}
	}
	return kept, func(d store.Done) {
		if d.Err != nil {
			done(d)
			return
		}
		out := make([]store.Result, len(ops))
		j := 0
		for i, o := range ops {
			if refused[i] != nil {
				out[i] = store.Result{ID: o.ID, Err: refused[i]}
				continue
			}
			out[i] = d.Results[j]
			j++
		}
		d.Results = out
		done(d)
	}
}

// Attempts implements store.Store from the local store.
func (n *Node) Attempts(ctx context.Context, id store.ID) ([]store.Attempt, error) {
	return n.st.Attempts(ctx, id)
}

// Paused implements store.Store from the local store.
func (n *Node) Paused(ctx context.Context) (map[string]time.Time, error) { return n.st.Paused(ctx) }

// Heads returns the heads of the local store's queues (see
// store.BoltStore.Heads).
func (n *Node) Heads(ctx context.Context) (map[string]store.Ticket, error) { return n.st.Heads(ctx) }

// errNeverAnswered: raft stopped with the entry still queued in its apply
// channel; it will never answer the future.
var errNeverAnswered = errors.New("raft stopped before it answered")

// waitFuture waits for f, or for ctx, or until r has shut down without
// answering it: raft answers the futures it took in, but one still queued
// in its buffered apply channel when the instance stops (a reform, a
// resync, a halt) is never answered, and a caller waiting on it would
// wait for ever (hashicorp/raft#498). Outcome then unknown, as for a lost
// leadership.
//
// The goroutine that waits for f's answer ends when waitFuture returns
// (see abandonable): left waiting, it held its entry for good, one per
// entry queued at each stop of a loaded leader.
func waitFuture(ctx context.Context, r *raft.Raft, f raft.Future) error {
	gone := make(chan struct{})
	defer close(gone)
	abandonable(f, gone)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	stoppedAt := time.Time{}
	for {
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", raft.ErrLeadershipLost, ctx.Err())
		case <-tick.C:
			if r.State() != raft.Shutdown {
				continue
			}
			// Shutdown has begun; raft may still answer what it holds
			// while it winds down. Give it a moment.
			if stoppedAt.IsZero() {
				stoppedAt = time.Now()
			} else if time.Since(stoppedAt) > time.Second {
				return fmt.Errorf("%w: %w", raft.ErrRaftShutdown, errNeverAnswered)
			}
		}
	}
}

// abandonable makes f's Error return raft.ErrRaftShutdown once gone is
// closed, if f is one of raft's own futures that wait for an answer (a
// log entry's or a barrier's): raft gives them the exported ShutdownCh
// field of the error they embed but, unlike its other futures', leaves it
// nil, so their Error waits for an answer that a raft stopped with them
// queued never gives. Set here before anyone waits on f; raft itself
// never reads it for these futures. A future without the field (another
// type, or a release of raft without it) is left as it is.
func abandonable(f raft.Future, gone chan struct{}) {
	v := reflect.ValueOf(f)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return
	}
	ch := v.Elem().FieldByName("ShutdownCh")
	if !ch.IsValid() || !ch.CanSet() || ch.Type() != reflect.TypeOf(gone) || !ch.IsNil() {
		return
	}
	ch.Set(reflect.ValueOf(gone))
}
