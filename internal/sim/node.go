package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/ha"
)

// node is one simulated node: its directories, its transport, and the
// incarnation running now (nil while it is down). Only the stepper
// starts and stops incarnations; anybody may read the current one.
type node struct {
	c   *cluster
	idx int
	id  string
	dir string
	tag byte // mint tag of its tickets (pair)
	log *slog.Logger

	mu     sync.Mutex
	cur    *incarnation
	starts int
}

// incarnation is a node between a start and a stop: store, replica,
// role loop.
type incarnation struct {
	n     *node
	st    *store.BoltStore
	rep   *replica.Node
	disp  *dispatcher
	pair  *ha.Pair
	group *ha.Group
	star  *star
	// versions keeps the cluster version, as a broker's node does: the
	// members report theirs to the raft leader (the pair's peer) through
	// the admin services, and the leader raises it to
	// store.OpsRecordVersion.
	versions *ha.Versions
	stop     context.CancelFunc
	done     chan struct{}
	err      error // the role loop's, once done is closed
	// closed is closed once the replica and the store are.
	closed chan struct{}
}

func (n *node) current() *incarnation {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cur
}

// serving reports whether the incarnation's gate lets clients in.
func (inc *incarnation) serving() bool {
	if inc.pair != nil {
		return inc.pair.Active()
	}
	return inc.group.Active()
}

// Raft's timings in the simulation: fast, as in the replica's tests.
func (c *cluster) replicaConfig(n *node) replica.Config {
	cfg := replica.Config{
		ID: n.id, Dir: filepath.Join(n.dir, "raft"), Transport: c.net.trans[n.idx],
		Peers: c.peers, Bootstrap: true,
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
		ApplyTimeout: 2 * time.Second,
		Logger:       n.log,
	}
	if d := c.opts.RaftTimeout; d > 0 {
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = d, d, d/2
	}
	if c.sched.SmallSnapshots {
		cfg.SnapshotThreshold, cfg.TrailingLogs, cfg.SnapshotInterval = 32, 16, 100*time.Millisecond
	}
	if c.sched.Mode == Pair && !c.opts.NoFence {
		cfg.FenceStride, cfg.FenceSlot = 2, uint64(1-n.idx) // as cmd/titanic: primary 1, backup 0
	}
	return cfg
}

// start opens the node from its directories and runs its role loop.
func (n *node) start() error {
	c := n.c
	if err := os.MkdirAll(n.dir, 0o750); err != nil {
		return fmt.Errorf("node directory: %w", err)
	}
	st, err := store.Open(filepath.Join(n.dir, "titanic.db"), store.Options{NoSync: true, Logger: n.log})
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	rep, err := replica.Open(st, c.replicaConfig(n))
	if err != nil {
		_ = st.Close()
		return fmt.Errorf("open replica: %w", err)
	}
	inc := &incarnation{n: n, st: st, rep: rep, done: make(chan struct{}), closed: make(chan struct{})}
	inc.disp = &dispatcher{inc: inc}
	var run func(context.Context) error
	if c.sched.Mode == Pair {
		role, peer := binarystar.Primary, 1
		if n.idx == 1 {
			role, peer = binarystar.Backup, 0
		}
		s, err := newStar(role, &c.clock, nil)
		if err != nil {
			_ = rep.Close()
			_ = st.Close()
			return err
		}
		inc.star = s
		pn := c.nodes[peer]
		pc := ha.PairConfig{
			PeerID: pn.id, PeerAddr: string(c.net.addrs[peer]),
			PeerEndpoint: endpoint(pn), PeerTag: pn.tag,
			ForkDir: filepath.Join(n.dir, "forks"),
			Logger:  n.log,
		}
		if c.opts.FailTransfers {
			pc.TransferLeadership = func(id, addr string) error {
				c.failedTransfers.Add(1)
				return fmt.Errorf("transfer leadership to %s: %w (injected)", id, raft.ErrLeadershipTransferInProgress)
			}
		}
		inc.pair = ha.NewPairWith(rep, inc.disp, pc, func(poke func()) ha.Star {
			s.poke = poke
			return s
		}, func() (ha.Requester, error) {
			return &peerLink{c: c, from: n.idx, to: peer}, nil
		})
		run = inc.pair.Run
	} else {
		inc.group = ha.NewGroup(rep, inc.disp, n.log)
		run = inc.group.Run
	}
	vc := ha.VersionsConfig{
		Endpoint: func() string { return endpoint(n) }, Release: "sim",
		Interval: versionInterval, Logger: n.log,
		Dial: func(ep string) (ha.Requester, error) {
			for _, to := range c.nodes {
				if endpoint(to) == ep && to != n {
					return &peerLink{c: c, from: n.idx, to: to.idx}, nil
				}
			}
			return nil, fmt.Errorf("%w: no node at %s", errUnreachable, ep)
		},
	}
	if c.sched.Mode == Pair {
		pn := c.nodes[1-n.idx]
		vc.Pair, vc.PeerID, vc.PeerEndpoint = true, pn.id, endpoint(pn)
	}
	inc.versions = ha.NewVersions(rep, vc)
	ctx, cancel := context.WithCancel(context.Background())
	inc.stop = cancel
	go func() {
		defer close(inc.done)
		var versions sync.WaitGroup
		vctx, stopVersions := context.WithCancel(ctx)
		versions.Go(func() { _ = inc.versions.Run(vctx) })
		inc.err = run(ctx)
		stopVersions()
		versions.Wait()
	}()
	n.mu.Lock()
	n.cur = inc
	n.starts++
	n.mu.Unlock()
	c.net.setUp(n.idx, true)
	return nil
}

// endpoint is a node's client endpoint, where its admin services answer.
func endpoint(n *node) string { return "sim://" + n.id }

// versionInterval is how often a member reports its version (ha.Versions;
// a broker's 2 s): the first rounds come ten times as often, so a pair or
// a group that just started raises its cluster version within the
// schedule's first second or so.
const versionInterval = 500 * time.Millisecond

// stopWait bounds how long a role loop may take to stop.
const stopWait = 60 * time.Second

// stop stops the node: it drops off the network, its role loop stops,
// then its replica and store close. It returns the role loop's error.
func (n *node) stop() error {
	inc := n.current()
	if inc == nil {
		return nil
	}
	n.c.net.setUp(n.idx, false)
	inc.stop()
	select {
	case <-inc.done:
	case <-time.After(stopWait):
		err := fmt.Errorf("%w: the role loop of %s did not stop within %s", errStuck, n.id, stopWait)
		n.c.hist.hang(err.Error())
		return err
	}
	n.mu.Lock()
	n.cur = nil
	n.mu.Unlock()
	err := inc.err
	if cerr := inc.rep.Close(); cerr != nil && !errors.Is(cerr, raft.ErrRaftShutdown) {
		n.log.Debug("close replica", "err", cerr)
	}
	if cerr := inc.st.Close(); cerr != nil {
		n.log.Debug("close store", "err", cerr)
	}
	close(inc.closed)
	return err
}

var (
	errStuck       = errors.New("stuck")
	errUnreachable = errors.New("peer unreachable")
	errCrashed     = errors.New("node crashed")
)

// dispatcher stands for titanic.Service as the role loops drive it:
// Activate waits for the log to be applied, Merge takes in a peer's
// handover while active.
type dispatcher struct {
	inc    *incarnation
	active atomic.Bool
}

func (d *dispatcher) Activate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := d.inc.call("Barrier", func() error { return d.inc.rep.Barrier(ctx) }); err != nil {
		return fmt.Errorf("activate: %w", err)
	}
	d.active.Store(true)
	return nil
}

func (d *dispatcher) Deactivate() { d.active.Store(false) }

// merge is titanic.Service.Merge: the ops go through the log while this
// node dispatches.
func (d *dispatcher) merge(ctx context.Context, ops []store.Op) error {
	if !d.active.Load() {
		return titanic.ErrNotActive
	}
	if _, err := d.inc.apply(ctx, ops); err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	return nil
}

// hangAfter is how long a replica call may wait on raft before the
// simulation calls it hung.
const hangAfter = 20 * time.Second

// apply is the replica's Apply, bounded (see bounded).
func (inc *incarnation) apply(ctx context.Context, ops []store.Op) ([]store.Result, error) {
	return bounded(inc, "Apply", func() ([]store.Result, error) { return inc.rep.Apply(ctx, ops) })
}

// call is bounded for a call without a result.
func (inc *incarnation) call(what string, f func() error) error {
	_, err := bounded(inc, what, func() (struct{}, error) { return struct{}{}, f() })
	return err
}

// bounded runs a replica call that waits on a raft future. The replica
// waits for raft's futures without looking at ctx, and raft leaves a
// future unanswered when it shuts down with the entry still queued (its
// apply channel is buffered and not drained at shutdown), so such a call
// may never return. It is given up when the incarnation stops (a crash:
// its clients see the connection drop) or after hangAfter, which is
// recorded in the history: the replica's caller would wait forever.
func bounded[T any](inc *incarnation, what string, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	out := make(chan result, 1)
	go func() {
		v, err := f()
		out <- result{v, err}
	}()
	t := time.NewTimer(hangAfter)
	defer t.Stop()
	var zero T
	select {
	case r := <-out:
		return r.v, r.err
	case <-inc.closed:
		return zero, fmt.Errorf("%s: %w", what, errCrashed)
	case <-t.C:
		inc.n.c.hist.hang(fmt.Sprintf("%s: %s did not return within %s", inc.n.id, what, hangAfter))
		return zero, fmt.Errorf("%s: %w", what, errStuck)
	}
}

// peerLink is a pair node's client of its peer's admin services: the
// peer's ha.Admin, called in process across the simulated network.
type peerLink struct {
	c        *cluster
	from, to int
}

func (l *peerLink) Request(ctx context.Context, service string, body [][]byte) ([][]byte, error) {
	if !l.c.net.reaches(l.from, l.to) {
		return nil, errUnreachable
	}
	inc := l.c.nodes[l.to].current()
	if inc == nil {
		return nil, errUnreachable
	}
	r := &replier{out: make(chan [][]byte, 1)}
	// As a broker's node sets up its admin services (titanic/node).
	a := ha.NewAdmin(inc.rep, r, inc.n.log)
	a.Merge = inc.disp.merge
	a.Versions = inc.versions
	if inc.pair != nil {
		a.Pair, a.Forget = inc.pair, inc.pair.ForgetPeerSplit
	} else {
		a.NonvoterFirst = true
	}
	out := a.ServeMDP(broker.Request{Service: service, Body: body})
	if out == nil {
		select {
		case out = <-r.out:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	// The answer travels back: it is lost if that way is cut now (the
	// request may have been carried out all the same).
	if !l.c.net.reaches(l.to, l.from) {
		return nil, errUnreachable
	}
	return out, nil
}

func (l *peerLink) Close() error { return nil }

// replier takes the admin's deferred answer.
type replier struct{ out chan [][]byte }

func (r *replier) Reply(_ broker.Client, _ string, body [][]byte) {
	select {
	case r.out <- body:
	default:
	}
}
