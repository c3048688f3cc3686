package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/ha"
	"github.com/titanicmq/titanic/titanic/ops"
)

// opsSources adapts the broker's parts to the HTTP layer's interfaces.
type opsSources struct {
	bolt *store.BoltStore
	st   store.Store // the store the service uses (replicated or not)
	svc  *titanic.Service
	b    *broker.Broker
	rep  *replica.Node
	gate *drainGate
	mode string
}

func (o *opsSources) Ticket(ctx context.Context, id store.ID) (store.Ticket, [][]byte, error) {
	return o.st.Reply(ctx, id)
}

func (o *opsSources) List(ctx context.Context, f ops.Filter) ([]store.Ticket, error) {
	return o.st.List(ctx, store.Filter{Service: f.Service, State: f.State, After: f.After, Limit: f.Limit, Reverse: f.Newest})
}

func (o *opsSources) Close(ctx context.Context, id store.ID) error {
	err := o.svc.Close(ctx, id)
	switch {
	case errors.Is(err, titanic.ErrNotActive), errors.Is(err, replica.ErrNotLeader):
		return fmt.Errorf("%w: %w", ops.ErrNotActive, err)
	case errors.Is(err, titanic.ErrBusy), errors.Is(err, titanic.ErrNotMerged):
		return fmt.Errorf("%w: %w", ops.ErrBusy, err)
	}
	return err
}

func (o *opsSources) Submit(ctx context.Context, service string, body [][]byte, key string, lc store.Lifecycle) (string, bool, error) {
	if o.gate.draining.Load() {
		return "", false, fmt.Errorf("%w: draining", ops.ErrNotActive)
	}
	id, dup, err := o.svc.Submit(ctx, service, body, key, lc)
	if err != nil {
		return "", false, opsError(err)
	}
	return id.String(), dup, nil
}

// opsError maps the titanic service's errors to the ones the HTTP layer
// answers by (the store's sentinels pass through: ops knows them).
func opsError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, titanic.ErrBadRequest):
		// err says "bad request: ..." already: ops.ErrBadRequest is
		// wrapped without its text (%.0w), or the answer said it twice.
		return fmt.Errorf("%.0w%w", ops.ErrBadRequest, err)
	case errors.Is(err, store.ErrKeyConflict):
		return fmt.Errorf("%w: %w", ops.ErrConflict, err)
	case errors.Is(err, titanic.ErrUnsupported):
		return fmt.Errorf("%w: %w", ops.ErrUnsupported, err)
	case errors.Is(err, titanic.ErrNotActive), errors.Is(err, replica.ErrNotLeader):
		return fmt.Errorf("%w: %w", ops.ErrNotActive, err)
	case errors.Is(err, titanic.ErrBusy), errors.Is(err, titanic.ErrNotMerged):
		// Not merged yet: retry later, as for busy (503, Retry-After).
		return fmt.Errorf("%w: %w", ops.ErrBusy, err)
	}
	return err
}

// The ops.Jobs methods: the titanic service's lifecycle methods, which
// commit (and replicate) like their 9/TSP services.

func (o *opsSources) Retry(ctx context.Context, id store.ID) error {
	return opsError(o.svc.Retry(ctx, id))
}

func (o *opsSources) Purge(ctx context.Context, id store.ID) error {
	return opsError(o.svc.Purge(ctx, id))
}

func (o *opsSources) Cancel(ctx context.Context, id store.ID, reason string) error {
	return opsError(o.svc.Cancel(ctx, id, reason))
}

func (o *opsSources) Pause(ctx context.Context, service string) error {
	return opsError(o.svc.Pause(ctx, service))
}

func (o *opsSources) Resume(ctx context.Context, service string) error {
	return opsError(o.svc.Resume(ctx, service))
}

func (o *opsSources) Attempts(ctx context.Context, id store.ID) ([]titanic.AttemptJSON, error) {
	as, err := o.svc.Attempts(ctx, id)
	return as, opsError(err)
}

// Paused reads the store, so that a follower shows the pauses too.
func (o *opsSources) Paused(ctx context.Context) (map[string]time.Time, error) {
	return o.st.Paused(ctx)
}

// Body implements ops.Bodies.
func (o *opsSources) Body(ctx context.Context, id store.ID) ([][]byte, error) {
	t, err := o.st.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return t.Body, nil
}

func (o *opsSources) Queues(ctx context.Context) ([]ops.Queue, error) {
	st, err := o.bolt.Stats(ctx)
	if err != nil {
		return nil, err
	}
	heads, err := o.bolt.Heads(ctx)
	if err != nil {
		return nil, err
	}
	// Delayed tickets not due yet wait for their time, not for a worker:
	// they are left out of the queue's depth and oldest age (titanic
	// stats shows them as DELAYED). The store counts every ticket with
	// a due time; those due already are told apart here.
	now := time.Now()
	var delayed []string
	for name, c := range st.Services {
		if c.Delayed > 0 {
			delayed = append(delayed, name)
		}
	}
	var due map[string]store.DueCount
	if len(delayed) > 0 {
		if due, err = o.bolt.DueDelayed(ctx, delayed, now); err != nil {
			return nil, err
		}
	}
	out := make([]ops.Queue, 0, len(st.Services))
	for name, c := range st.Services {
		q := ops.Queue{Service: name, Pending: c.Pending, Dispatched: c.Dispatched, Done: c.Done, Failed: c.Failed, Cancelled: c.Cancelled,
			Delayed: max(c.Delayed-due[name].Due, 0), Oldest: heads[name].Created}
		if h := heads[name]; h.Lifecycle.Due.After(now) {
			// The head of the FIFO is not due: the oldest waiting is
			// the head of a ready index or the first due delayed one.
			if q.Oldest, err = o.oldestWaiting(ctx, name, due[name]); err != nil {
				return nil, err
			}
		}
		out = append(out, q)
	}
	return out, nil
}

// oldestWaiting returns when the oldest ticket of service waiting for a
// worker or held by one began waiting, its FIFO's head being delayed:
// the submit of the oldest in the ready index (tickets without a due
// time, pending or dispatched), or the due time of the first due one
// among the delayed. Zero when none is. (A dispatched ticket that had a
// due time is in neither index: behind a delayed head it is not seen.)
func (o *opsSources) oldestWaiting(ctx context.Context, service string, due store.DueCount) (time.Time, error) {
	oldest := due.First
	for p := store.PriorityLow; p <= store.PriorityHigh; p++ {
		ts, err := o.bolt.Queued(ctx, store.QueueRead{Queue: store.QueueReady, Service: service, Level: p, Limit: 1})
		if err != nil {
			return time.Time{}, err
		}
		if len(ts) > 0 && (oldest.IsZero() || ts[0].Created.Before(oldest)) {
			oldest = ts[0].Created
		}
	}
	return oldest, nil
}

func (o *opsSources) QueueStats(ctx context.Context) (titanic.QueueStats, error) {
	return o.svc.QueueStats(ctx, "")
}

func (o *opsSources) Workers(ctx context.Context) ([]ops.ServiceWorkers, error) {
	st, err := o.b.Stats(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]ops.ServiceWorkers, 0, len(st.Services))
	for _, s := range st.Services {
		out = append(out, ops.ServiceWorkers{Service: s.Name, Workers: s.Workers, Idle: s.Idle, Busy: s.Busy, Requests: s.Queued})
	}
	return out, nil
}

func (o *opsSources) Counters() ops.Counts {
	s := o.svc.Stats()
	return ops.Counts{
		Submits: s.Submits, Duplicates: s.Duplicates, Closes: s.Closes, Lookups: s.Lookups,
		Dispatches: s.Dispatches, Redeliveries: s.Redeliveries, Replies: s.Replies, LateReplies: s.LateReplies,
		Failures: s.Failed, Busy: s.Busy, BadRequests: s.BadRequests,
		Commits: s.Commits, CommittedOps: s.CommittedOps, CommitErrors: s.CommitErrors, VerdictRetries: s.VerdictRetries, Unsent: s.Unsent, Leased: s.Leased,
		DiskFull: s.Disk.Full, DiskFree: s.Disk.Free, DiskReserve: s.Disk.Reserve,
	}
}

func (o *opsSources) Clients(_ context.Context, limit int) ([]ops.Client, int, error) {
	cs := o.svc.Clients()
	out := make([]ops.Client, 0, min(limit, len(cs)))
	for _, c := range cs[:min(limit, len(cs))] {
		out = append(out, ops.Client{ID: c.ID, Since: c.Since, Seen: c.Seen})
	}
	return out, len(cs), nil
}

// Role implements ops.Cluster.
func (o *opsSources) Role() (string, bool) {
	active := o.gate.Active()
	switch {
	case o.rep == nil:
		return ops.RoleSingle, true
	case o.mode == ops.ModePair:
		if p, ok := o.gate.inner.(*ha.Pair); ok {
			switch p.State() {
			case binarystar.StateActive:
				return ops.RoleActive, active
			case binarystar.StatePassive:
				return ops.RolePassive, active
			case binarystar.StatePrimary:
				return ops.RolePrimary, active
			case binarystar.StateBackup:
				return ops.RoleBackup, active
			}
			return strings.ToLower(p.State().String()), active
		}
	}
	switch o.rep.Status().State {
	case "Leader":
		return ops.RoleLeader, active
	case "Candidate":
		return ops.RoleCandidate, active
	}
	return ops.RoleFollower, active
}

// Status implements ops.Cluster.
func (o *opsSources) Status(ctx context.Context) (ops.ClusterStatus, error) {
	role, active := o.Role()
	cs := ops.ClusterStatus{Mode: o.mode, Role: role, Active: active}
	if bs, err := o.b.Stats(ctx); err == nil {
		for _, p := range bs.Peers {
			n := 0
			if p.Alive {
				// A dead peer's last state offers nothing.
				for _, v := range p.Spare {
					n += v
				}
			}
			cs.Peers = append(cs.Peers, ops.Peer{Name: p.Name, Addr: p.Cloud, State: p.State, Alive: p.Alive, Capacity: n})
		}
	}
	if o.rep == nil {
		return cs, nil
	}
	st := o.rep.Status()
	cs.NodeID, cs.Leader = st.ID, st.LeaderID
	cs.Term, cs.LastIndex, cs.CommitIndex, cs.AppliedIndex = st.Term, st.LastIndex, st.CommitIndex, st.AppliedIndex
	ms, err := o.rep.Members()
	if err != nil {
		return cs, err
	}
	for _, m := range ms {
		cs.Members = append(cs.Members, ops.Member{ID: m.ID, Addr: m.Addr, Voter: m.Voter, Leader: m.Leader})
	}
	return cs, nil
}

// startHTTP listens on c.Listen and returns the server's loop: metrics,
// health, the JSON API and the dashboard, until its ctx is done.
func startHTTP(c HTTPConfig, src *opsSources, hooks *latencyHooks, log *slog.Logger) (func(context.Context) error, error) {
	oc := ops.DefaultConfig()
	oc.Tickets, oc.Queues, oc.Workers, oc.Counters, oc.Clients, oc.QueueStats = src, src, src, src, src, src
	oc.Cluster = src // single mode too: it reports the peers
	oc.Submitter, oc.Jobs, oc.Bodies = src, src, src
	oc.Version, oc.Logger = c.Version, log
	oc.Token = c.Token
	srv, err := ops.New(oc)
	if err != nil {
		return nil, err
	}
	hooks.srv.Store(srv)
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil && c.Optional && errors.Is(err, syscall.EADDRINUSE) {
		log.Warn("http: the default listener's port is taken: no metrics, health, API or dashboard; set --http-listen HOST:PORT for another, or --http-listen '' for none",
			"addr", c.Listen, "err", err)
		return func(ctx context.Context) error { <-ctx.Done(); return nil }, nil
	}
	if err != nil {
		return nil, fmt.Errorf("http listen %s (http.listen): %w", c.Listen, err)
	}
	// ops.Server.Serve logs "ops http listening" with the address.
	return func(ctx context.Context) error { return srv.Serve(ctx, ln) }, nil
}

// latencyHooks feed the commit and fsync histograms of the HTTP layer,
// which starts after the store and the service that report them, and
// pass the observations on to the hooks of the node's Config.
type latencyHooks struct {
	srv                   atomic.Pointer[ops.Server]
	fsyncNext, commitNext func(time.Duration)
}

func (h *latencyHooks) commit(d time.Duration) {
	if s := h.srv.Load(); s != nil {
		s.ObserveCommit(d)
	}
	if h.commitNext != nil {
		h.commitNext(d)
	}
}

func (h *latencyHooks) fsync(d time.Duration) {
	if s := h.srv.Load(); s != nil {
		s.ObserveFsync(d)
	}
	if h.fsyncNext != nil {
		h.fsyncNext(d)
	}
}
