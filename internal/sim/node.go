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
	stop  context.CancelFunc
	done  chan struct{}
	err   error // the role loop's, once done is closed
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
	inc := &incarnation{n: n, st: st, rep: rep, disp: &dispatcher{rep: rep}, done: make(chan struct{})}
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
		inc.pair = ha.NewPairWith(rep, inc.disp, ha.PairConfig{
			PeerID: pn.id, PeerAddr: string(c.net.addrs[peer]),
			PeerEndpoint: "sim://" + pn.id, PeerTag: pn.tag,
			ForkDir: filepath.Join(n.dir, "forks"),
			Logger:  n.log,
		}, func(poke func()) ha.Star {
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
	ctx, cancel := context.WithCancel(context.Background())
	inc.stop = cancel
	go func() {
		defer close(inc.done)
		inc.err = run(ctx)
	}()
	n.mu.Lock()
	n.cur = inc
	n.starts++
	n.mu.Unlock()
	c.net.setUp(n.idx, true)
	return nil
}

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
		return fmt.Errorf("%w: the role loop of %s did not stop within %s", errStuck, n.id, stopWait)
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
	return err
}

var (
	errStuck       = errors.New("stuck")
	errUnreachable = errors.New("peer unreachable")
)

// dispatcher stands for titanic.Service as the role loops drive it:
// Activate waits for the log to be applied, Merge takes in a peer's
// handover while active.
type dispatcher struct {
	rep    *replica.Node
	active atomic.Bool
}

func (d *dispatcher) Activate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := d.rep.Barrier(ctx); err != nil {
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
	if _, err := d.rep.Apply(ctx, ops); err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	return nil
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
	a := ha.NewAdmin(inc.rep, r, inc.n.log)
	a.Merge = inc.disp.merge
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
