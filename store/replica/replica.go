// Package replica replicates the titanic store with raft
// (github.com/hashicorp/raft, log and stable store in raft-boltdb): the
// store's batched ops are the log entries, the store is the state machine,
// and the store's snapshots are raft's snapshots. A Node is a store.Store:
// Apply goes through the raft log (leader only), reads are served by the
// local store, and its store.Leadership tells the service whether it
// serves. A replica's content changes only through the log, so it has no
// Restore: restore every node from the same backup instead.
//
// # What it owns
//
// A Node owns the raft instance, its transport and its log and snapshot
// stores in Config.Dir. It does not own the BoltStore it replicates into;
// the caller opens and closes it.
//
// # Exactly once
//
// The store records the index of the last entry it applied in the same
// transaction as the entry's ops (store.ApplyAt), so a node that restarts
// skips the part of its log already in the store instead of restoring a
// snapshot and replaying everything; an entry is applied once.
package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/titanicmq/titanic/internal/lograte"
	"github.com/titanicmq/titanic/store"
)

// Sentinel errors.
var (
	// ErrNotLeader: this node cannot apply; the leader (if known) can.
	// It is store.ErrNotLeader, which the service answers as "not
	// active" so that clients ask the node that serves.
	ErrNotLeader = store.ErrNotLeader
	// ErrUncertain: leadership was lost while the entry was in flight; it
	// may or may not be committed. Resubmit with the same idempotency key.
	// It wraps store.ErrUncertain.
	ErrUncertain = fmt.Errorf("leadership lost, %w", store.ErrUncertain)
	// ErrConfig: the Config is invalid.
	ErrConfig = errors.New("invalid replica config")
	// ErrSnapshotPending: the snapshot a reform takes after its
	// placeholder is still being written; PrepareJoin can be asked again.
	ErrSnapshotPending = errors.New("the snapshot after the reform is still being written")
)

// Peer is a raft voter.
type Peer struct {
	ID   string // unique, stable node name
	Addr string // raft transport address, host:port
}

// Config configures a Node.
type Config struct {
	ID   string
	Dir  string // raft log, stable store and snapshots
	Bind string // raft transport listen address, host:port
	// Advertise is the address peers dial (default Bind).
	Advertise string
	// Peers are the initial voters, this node included. A node with no
	// raft state and Bootstrap set forms the cluster from them; nodes
	// with state ignore them.
	Peers     []Peer
	Bootstrap bool
	// Timing. Zero fields take DefaultConfig's values.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// SnapshotThreshold is how many entries since the last snapshot make
	// a new one; TrailingLogs how many stay after it.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// FenceStride and FenceSlot fence the terms in which Reform lets this
	// node go on alone: its first term as the only voter is the next one
	// with term % FenceStride == FenceSlot, written to the stable store
	// before it elects itself. Nodes that may each reform on their own
	// (the two of a Binary Star pair) take different slots, so their
	// solo histories never share a term and raft's log matching, and
	// the store's epoch history, always tell them apart. Zero stride:
	// no fencing (a group never reforms).
	FenceStride, FenceSlot uint64
	// ApplyTimeout bounds how long Apply waits to enqueue an entry.
	ApplyTimeout time.Duration
	Logger       *slog.Logger
	// Transport replaces the TCP transport (tests use raft's in-memory
	// one); Bind and Advertise are then ignored.
	Transport raft.Transport
}

// DefaultConfig returns timings for a LAN: failure noticed in about a
// second.
func DefaultConfig() Config {
	return Config{
		HeartbeatTimeout:   1000 * time.Millisecond,
		ElectionTimeout:    1000 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		SnapshotThreshold:  8192,
		SnapshotInterval:   2 * time.Minute,
		TrailingLogs:       10240,
		ApplyTimeout:       5 * time.Second,
		Logger:             slog.Default(),
	}
}

func (c *Config) fill() error {
	d := DefaultConfig()
	if c.ID == "" || c.Dir == "" {
		return fmt.Errorf("%w: ID and Dir are required", ErrConfig)
	}
	if c.Transport == nil && c.Bind == "" {
		return fmt.Errorf("%w: Bind is required", ErrConfig)
	}
	if c.Advertise == "" {
		c.Advertise = c.Bind
	}
	set := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	set(&c.HeartbeatTimeout, d.HeartbeatTimeout)
	set(&c.ElectionTimeout, d.ElectionTimeout)
	set(&c.LeaderLeaseTimeout, d.LeaderLeaseTimeout)
	set(&c.CommitTimeout, d.CommitTimeout)
	set(&c.SnapshotInterval, d.SnapshotInterval)
	set(&c.ApplyTimeout, d.ApplyTimeout)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = d.SnapshotThreshold
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = d.TrailingLogs
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.FenceStride > 0 && c.FenceSlot >= c.FenceStride {
		return fmt.Errorf("%w: FenceSlot %d must be below FenceStride %d", ErrConfig, c.FenceSlot, c.FenceStride)
	}
	if c.Bootstrap && len(c.Peers) > 0 {
		self := false
		for _, p := range c.Peers {
			if p.ID == "" || p.Addr == "" {
				return fmt.Errorf("%w: peer %+v needs an ID and an address", ErrConfig, p)
			}
			self = self || p.ID == c.ID
		}
		if !self {
			return fmt.Errorf("%w: Peers must include this node (%s) to bootstrap", ErrConfig, c.ID)
		}
	}
	return nil
}

// Node is one raft replica of the store.
type Node struct {
	cfg   Config
	st    *store.BoltStore
	log   *slog.Logger
	fsm   *fsm
	logs  *raftboltdb.BoltStore
	snaps raft.SnapshotStore
	stop  chan struct{}

	// raftLogLimit bounds the repeats of raft's warnings and errors
	// (raftlog.go).
	raftLogLimit *lograte.Limiter

	// notify receives raft's leadership changes across raft restarts
	// (Reform); leaderCh is what callers read.
	notify   chan bool
	leaderCh chan bool

	// life serializes what stops and starts raft: Reform, StepDown,
	// Resync, Halt, Close and relogLoop's restart.
	life sync.Mutex
	// relog is signalled after every snapshot raft installs (see
	// relogLoop); relogOff turns that off (tests that show the bug).
	relog    chan struct{}
	relogOff atomic.Bool
	// afterReform is closed when the snapshot snapshotSoon takes is done
	// (nil: none taken since the node opened); guarded by mu.
	afterReform chan struct{}
	// booting is set while raft restores at start or in a reform (see
	// noteInstall); lastOpened is the snapshot raft last opened.
	booting    atomic.Bool
	lastOpened atomic.Value

	mu    sync.RWMutex // guards r, trans and halted across Reform
	r     *raft.Raft
	trans raft.Transport
	// halted is the instance Halt stopped; it says the node is halted
	// only while it is still r (any restart replaces r).
	halted *raft.Raft

	// stopping holds the shutdown of each raft instance stopped (see
	// stopRaft).
	stopMu   sync.Mutex
	stopping map[*raft.Raft]raft.Future
	// aborts cuts the RPCs in flight of each raft instance started on a
	// progressLayer (see stopRaft).
	aborts map[*raft.Raft]func()

	// solo is set while this node's raft has it as the only voter of a
	// fenced (pair) configuration: the entries it writes then are marked
	// for the store's solo journal. Refreshed on every change of
	// leadership or membership.
	solo atomic.Bool

	// calls is the entry builder's queue (entries.go).
	calls calls

	// startTerm and startIndex are the term and index of the last entry
	// the node held (its log's last, or its latest snapshot's when
	// further) when it opened or last forgot its membership (0 after
	// Resync); see markStart.
	startTerm  atomic.Uint64
	startIndex atomic.Uint64
	// reformAbove is the term a reform in progress must lead past (see
	// ReformAbove; 0 outside one): fence raises the stored term to it
	// first.
	reformAbove atomic.Uint64
	// readTerm is the last term in which ConfirmLeader applied a barrier
	// (see read.go).
	readTerm atomic.Uint64

	closeOnce sync.Once
	wg        sync.WaitGroup
}

var (
	_ store.Store      = (*Node)(nil)
	_ store.Leadership = (*Node)(nil)
)

// snapshotRetain is how many raft snapshots a node keeps, each a copy of
// the whole store, so it multiplies the disk a node needs at depth. One
// would be safe against a crash while a snapshot is written: raft's file
// snapshot store (v1.7.3) writes it into a ".tmp" directory that List
// ignores, syncs its state and metadata, renames it into place and syncs
// the parent before it deletes older ones. But the latest snapshot may be
// a reform's placeholder (placeholderMark), which is never restored,
// until snapshotSoon or replacePlaceholder puts a real one after it; and
// raft.RecoverCluster (a reform) and a restore at start try the
// snapshots newest first and fail when none restores. A reform that must
// restore (the store's applied index is below the latest snapshot's,
// which a no-op or barrier at the end of the log allows: see
// recoveryFSM), while the latest is still a placeholder, succeeds only
// by falling back on the real snapshot before it: so two.
const snapshotRetain = 2

// removeSnapshotTemps deletes the snapshots a crash left half written in
// dir: raft's file snapshot store writes each into a ".tmp" directory and
// renames it once complete, ignores such directories when it lists, and
// never deletes them, so each crash during a snapshot would keep a copy
// of the whole store on disk for good. Open runs it before raft starts:
// the store's file lock, taken before, means no other process uses this
// directory, and no snapshot of this one is being written yet. A failure
// only costs the space: it is logged, not returned.
func removeSnapshotTemps(dir string, log *slog.Logger) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			log.Warn("unfinished raft snapshots not looked for", "dir", dir, "err", err)
		}
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if err := os.RemoveAll(path); err != nil {
			log.Warn("unfinished raft snapshot not removed", "path", path, "err", err)
			continue
		}
		log.Warn("removed an unfinished raft snapshot (a crash while it was written)", "path", path)
	}
}

// Open starts a replica over st.
func Open(st *store.BoltStore, cfg Config) (*Node, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("raft directory: %w", err)
	}
	n := &Node{
		cfg:      cfg,
		st:       st,
		log:      cfg.Logger.With("component", "raft", "node", cfg.ID),
		stop:     make(chan struct{}),
		notify:   make(chan bool, 64),
		leaderCh: make(chan bool, 64),
		stopping: map[*raft.Raft]raft.Future{},
		aborts:   map[*raft.Raft]func(){},
		relog:    make(chan struct{}, 1),
	}
	n.raftLogLimit = lograte.New(raftLogEvery)
	n.fsm = &fsm{st: st, log: n.log, self: raft.ServerID(cfg.ID), fatal: make(chan error, 1)}
	n.fsm.installed = n.noteInstall
	applied, err := st.AppliedIndex(context.Background())
	if err != nil {
		return nil, fmt.Errorf("store applied index: %w", err)
	}
	n.fsm.applied.Store(applied)
	cv, err := st.ClusterVersion(context.Background())
	if err != nil {
		return nil, fmt.Errorf("store cluster version: %w", err)
	}
	n.fsm.cluster.Store(int64(cv))
	n.solo.Store(cfg.FenceStride > 0) // until the configuration is known
	n.fsm.halt = func() {
		r := n.raft()
		if r == nil {
			return // failed while starting: start returns the error
		}
		if err := n.stopRaft(r); err != nil {
			n.log.Warn("stop raft after a store failure", "err", err)
		}
	}
	logs, err := openLogStore(cfg.Dir)
	if err != nil {
		return nil, err
	}
	n.logs = logs
	removeSnapshotTemps(filepath.Join(cfg.Dir, "snapshots"), n.log)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, snapshotRetain, n.hclog())
	if err != nil {
		_ = logs.Close()
		return nil, fmt.Errorf("raft snapshot store: %w", err)
	}
	n.snaps = snaps
	if err := n.start(true); err != nil {
		_ = logs.Close()
		return nil, err
	}
	// Read after raft started: an entry that arrived meanwhile only makes
	// the node wait for a later one before it counts as caught up.
	n.markStart()
	n.calls.wake = make(chan struct{}, 1)
	n.wg.Add(3)
	go n.forward()
	go n.buildEntries()
	go n.relogLoop()
	return n, nil
}

// hclog adapts raft's logger to slog (raftlog.go).
func (n *Node) hclog() hclog.Logger {
	limit := n.raftLogLimit
	if limit == nil {
		limit = lograte.New(raftLogEvery) // a Node made by a test
	}
	return &raftLogger{log: n.log, level: hclog.Info, limit: limit}
}

func (n *Node) raftConfig() *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.ID)
	rc.HeartbeatTimeout = n.cfg.HeartbeatTimeout
	rc.ElectionTimeout = n.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = n.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = n.cfg.CommitTimeout
	rc.SnapshotThreshold = n.cfg.SnapshotThreshold
	rc.SnapshotInterval = n.cfg.SnapshotInterval
	rc.TrailingLogs = n.cfg.TrailingLogs
	rc.NotifyCh = n.notify
	rc.Logger = n.hclog()
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	// A member removed (titanic cluster leave) keeps its raft running,
	// outside the configuration: shut down, it was a broker with a dead
	// raft port that, joined again, stayed a nonvoter for good (found by
	// a tester of the group under faults).
	rc.ShutdownOnRemove = false
	return rc
}

// transport returns raft's transport and what cuts its RPCs in flight
// (nil: the one Config gave).
func (n *Node) transport() (raft.Transport, func(), error) {
	if n.cfg.Transport != nil {
		return n.cfg.Transport, nil, nil
	}
	adv, err := net.ResolveTCPAddr("tcp", n.cfg.Advertise)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: advertise address %q: %w", ErrConfig, n.cfg.Advertise, err)
	}
	// The I/O deadline of one RPC (dial, AppendEntries, heartbeat; an
	// InstallSnapshot gets more in proportion to its size). Raft's
	// Shutdown waits for RPCs in flight, so a peer cut off silently holds
	// Reform back this long: keep it near the election timeout, not at
	// the customary 10s.
	// On this layer's connections it bounds the time without progress
	// (see progressLayer): long catch-ups over slow links go through.
	timeout := max(time.Second, 2*n.cfg.ElectionTimeout)
	// MaxRPCsInFlight 1: no pipelined replication. raft v1.7's pipeline
	// can deadlock: when a follower answers an AppendEntries false (a
	// log mismatch, a newer term), raft's decoder stops reading the
	// pipeline's answers while its send loop, choosing at random among
	// ready channels, may send twice more before it sees the decoder
	// gone; the transport's decoder then blocks handing an answer over,
	// the send blocks handing its request to the decoder, and neither
	// watches raft's shutdown. That follower gets heartbeats but never
	// another entry (a pair, whose commits need both voters, commits
	// nothing more) and the node's Close hangs (seen in a replica test
	// under load: stuck for 15 minutes in netPipeline.AppendEntries).
	// Raft's synchronous path still sends every entry since the
	// follower's next index in one RPC, so batching is kept; raft's own
	// measurements (hashicorp/raft#541) found pipelining of little use.
	t, layer, err := newProgressTransport(n.cfg.Bind, adv, timeout, &raft.NetworkTransportConfig{MaxPool: 4, MaxRPCsInFlight: 1, Logger: n.hclog()})
	if err != nil {
		return nil, nil, fmt.Errorf("raft transport on %s: %w", n.cfg.Bind, err)
	}
	return t, layer.abort, nil
}

// start creates the raft instance (bootstrapping a new cluster when asked
// and there is no state yet); tweaks adjust its configuration.
func (n *Node) start(bootstrap bool, tweaks ...func(*raft.Config)) error {
	began := time.Now()
	trans, abort, err := n.transport()
	if err != nil {
		return err
	}
	var gate *transferGate
	if n.cfg.FenceStride > 0 {
		trans, gate = gateTransfers(trans, n.cfg.ID)
	}
	rc := n.raftConfig()
	for _, t := range tweaks {
		t(rc)
	}
	has, err := n.hasRaftState(context.Background())
	if err != nil {
		return fmt.Errorf("raft state: %w", err)
	}
	if !has && bootstrap && n.cfg.Bootstrap && len(n.cfg.Peers) > 0 {
		var conf raft.Configuration
		for _, p := range n.cfg.Peers {
			conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
		}
		unlogged, err := n.holdsUnloggedContent(context.Background())
		if err != nil {
			closeTransport(trans)
			return fmt.Errorf("bootstrap raft: %w", err)
		}
		if unlogged {
			// A restored store: see restoredIndex.
			err = n.bootstrapFromStore(context.Background(), conf, trans)
		} else {
			err = raft.BootstrapCluster(rc, n.logs, n.logs, n.snaps, trans, conf)
		}
		if err != nil {
			closeTransport(trans)
			return fmt.Errorf("bootstrap raft: %w", err)
		}
		if !unlogged {
			n.log.Info("bootstrapped raft cluster", "voters", len(conf.Servers))
		}
	}
	// The store is durable and knows the last entry it applied: restoring
	// the latest snapshot at start would only move it backwards. Restore
	// only when the store is behind the snapshot (a lost or new data file).
	// A reform's placeholder snapshot (see placeholderMark) says nothing
	// about the store: its index is the reformed log's end, past the last
	// command when no-ops or barriers came after it.
	rc.NoSnapshotRestoreOnStart = true
	if snap, ok := n.latestRealSnapshot(); ok {
		applied, err := n.st.AppliedIndex(context.Background())
		if err != nil {
			closeTransport(trans)
			return fmt.Errorf("store applied index: %w", err)
		}
		// A snapshot's index counts entries the store never sees (no-ops,
		// barriers): past the store's, the snapshot may still hold no
		// more than the store, and then Restore keeps the store. The
		// store logs which it was ("store restored from snapshot" or
		// "snapshot not restored").
		if applied < snap.Index {
			n.log.Info("the latest raft snapshot is past the store's applied index; restoring it unless the store holds all of it", "applied", applied, "snapshot", snap.Index)
			rc.NoSnapshotRestoreOnStart = false
		}
	}
	if err := n.dropStaleLog(); err != nil {
		closeTransport(trans)
		return err
	}
	fenceAt := time.Now()
	if err := n.fenceIfSolo(trans); err != nil {
		closeTransport(trans)
		return err
	}
	fenced := time.Since(fenceAt)
	if bootstrap { // Open
		if err := n.replacePlaceholder(trans); err != nil {
			closeTransport(trans)
			return err
		}
	}
	n.booting.Store(true)
	newAt := time.Now()
	guard := &logGuard{LogStore: n.logs, fsm: n.fsm, snaps: n.snaps}
	r, err := raft.NewRaft(rc, n.fsm, guard, n.logs, opened{n.snaps, &n.lastOpened}, trans)
	n.booting.Store(false)
	if err != nil {
		closeTransport(trans)
		return fmt.Errorf("start raft: %w", err)
	}
	// Both raft.GetConfiguration (fenceIfSolo) and raft.NewRaft read every
	// log entry after the latest snapshot: at depth and on a busy disk,
	// what a slow start is made of.
	n.log.Info("raft started", "took", time.Since(began).Round(time.Millisecond),
		"configuration_read", fenced.Round(time.Millisecond), "new_raft", time.Since(newAt).Round(time.Millisecond))
	if gate != nil {
		gate.serve(r)
	}
	if abort != nil {
		n.stopMu.Lock()
		n.aborts[r] = abort
		n.stopMu.Unlock()
	}
	n.mu.Lock()
	n.r, n.trans, n.halted = r, trans, nil
	n.mu.Unlock()
	// Set once raft returns; until then (the log replayed at start) no
	// AppendEntries is handled.
	guard.setCommitted(r.CommitIndex)
	return nil
}

func closeTransport(t raft.Transport) {
	if c, ok := t.(io.Closer); ok {
		_ = c.Close()
	}
}

// forward passes leadership changes to LeaderCh, dropping the oldest when
// the reader is slow (the latest state is what matters; IsLeader is the
// truth).
func (n *Node) forward() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case v := <-n.notify:
			if v {
				n.refreshSolo()
			}
			for {
				select {
				case n.leaderCh <- v:
				default:
					select {
					case <-n.leaderCh:
					default:
					}
					continue
				}
				break
			}
		}
	}
}

func (n *Node) raft() *raft.Raft {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.r
}

// LeaderCh reports leadership changes of this node (true: became leader).
func (n *Node) LeaderCh() <-chan bool { return n.leaderCh }

// IsLeader reports whether this node is the leader now.
func (n *Node) IsLeader() bool { return n.raft().State() == raft.Leader }

// Leader returns the current leader's ID and raft address, if known.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft().LeaderWithID()
	return string(i), string(a)
}

// Apply implements store.Store: the ops become one raft log entry; Apply
// returns once the entry is committed by a quorum and applied to this
// node's store.
//
// If ctx ends first, Apply returns at once with ErrUncertain: the ops may
// still be committed.
func (n *Node) Apply(ctx context.Context, ops []store.Op) ([]store.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ch := make(chan store.Done, 1)
	n.ApplyAsync(ops, func(d store.Done) { ch <- d })
	select {
	case d := <-ch:
		return d.Results, d.Err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrUncertain, ctx.Err())
	}
}

// Get implements store.Store from the local store.
func (n *Node) Get(ctx context.Context, id store.ID) (store.Ticket, error) { return n.st.Get(ctx, id) }

// Reply implements store.Store from the local store.
func (n *Node) Reply(ctx context.Context, id store.ID) (store.Ticket, [][]byte, error) {
	return n.st.Reply(ctx, id)
}

// Unfinished implements store.Store from the local store.
func (n *Node) Unfinished(ctx context.Context, fn func(store.Ticket) error) error {
	return n.st.Unfinished(ctx, fn)
}

// List implements store.Store from the local store.
func (n *Node) List(ctx context.Context, f store.Filter) ([]store.Ticket, error) {
	return n.st.List(ctx, f)
}

// ListPage implements store.Store from the local store.
func (n *Node) ListPage(ctx context.Context, f store.Filter) (store.Page, error) {
	return n.st.ListPage(ctx, f)
}

// Counts implements store.Store from the local store.
func (n *Node) Counts(ctx context.Context) (map[string]store.Counts, error) {
	return n.st.Counts(ctx)
}

// Queued implements store.Store from the local store.
func (n *Node) Queued(ctx context.Context, r store.QueueRead) ([]store.QueuedTicket, error) {
	return n.st.Queued(ctx, r)
}

// Snapshot implements store.Store: a copy of the local store.
func (n *Node) Snapshot(ctx context.Context, w io.Writer) (int64, error) {
	return n.st.Snapshot(ctx, w)
}

// Leadership implements store.Store: a Node may not be the one that
// serves, and its store may be behind the log (Barrier, ConfirmLeader).
func (n *Node) Leadership() store.Leadership { return n }

// Barrier waits until every entry committed before it is applied to this
// node's store (leader only). A new leader calls it before it reads the
// store to rebuild its dispatch queues.
func (n *Node) Barrier(ctx context.Context) error {
	timeout := 30 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	// Through waitFuture: bounded by ctx, and by the stop of raft, which
	// never answers a barrier still queued in its apply channel.
	r := n.raft()
	if err := waitFuture(ctx, r, r.Barrier(timeout)); err != nil {
		return fmt.Errorf("raft barrier: %w", err)
	}
	return nil
}

// AddVoter adds (or re-adds) a voter; it catches up from the log or a
// snapshot. Leader only.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	defer n.refreshSolo()
	if err := n.raft().AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, n.timeout(ctx)).Error(); err != nil {
		return fmt.Errorf("add voter %s: %w", id, err)
	}
	return nil
}

// AddNonvoter adds a member that receives the log and counts for no
// quorum (a voter already there stays one). Leader only. A pair's peer
// that returns after a failover joins this way first: added as a voter at
// once, it would hold every commit of a raft of two until it caught up
// (half a minute at 10,000,000 pending); it is made a voter (AddVoter)
// once it is close behind.
func (n *Node) AddNonvoter(ctx context.Context, id, addr string) error {
	defer n.refreshSolo()
	if err := n.raft().AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, n.timeout(ctx)).Error(); err != nil {
		return fmt.Errorf("add nonvoter %s: %w", id, err)
	}
	return nil
}

// MemberAt returns member id of the latest configuration, voter or not,
// if it is there at raft address addr (at any address when addr is
// empty).
func (n *Node) MemberAt(id, addr string) (Member, bool) {
	ms, err := n.Members()
	if err != nil {
		return Member{}, false
	}
	for _, m := range ms {
		if m.ID == id && (addr == "" || m.Addr == addr) {
			return m, true
		}
	}
	return Member{}, false
}

// ForgetMembership makes this node count as a member again (see the pair's
// caught-up rule: ConfigTerm, StartTerm, StartIndex, SnapshotVoterTerm)
// only by a configuration it receives from now on: the last one it
// applied is forgotten and its start moves to the last entry it holds. A pair node
// calls it before it rejoins its peer without a vote: a configuration it
// applied earlier, in a later term than its start, still says voter
// until the peer's entries arrive, and would count it caught up while it
// lacks what the peer committed alone.
func (n *Node) ForgetMembership() {
	n.fsm.conf.Store(nil)
	n.markStart()
}

// markStart sets StartTerm and StartIndex to the term and index of the
// last entry this node holds: its raft log's last, or its latest
// snapshot's when that is further (an installed snapshot does not move
// raft's last log entry, and compaction may keep older entries), so that
// a configuration inside a snapshot it held before does not count as one
// received since.
func (n *Node) markStart() {
	var term, index, snapTerm, snapIndex uint64
	stats := n.raft().Stats()
	_, _ = fmt.Sscan(stats["last_log_term"], &term)
	_, _ = fmt.Sscan(stats["last_log_index"], &index)
	_, _ = fmt.Sscan(stats["last_snapshot_term"], &snapTerm)
	_, _ = fmt.Sscan(stats["last_snapshot_index"], &snapIndex)
	if snapIndex > index {
		term, index = snapTerm, snapIndex
	}
	n.startTerm.Store(term)
	n.startIndex.Store(index)
}

// RemoveServer removes a member. Leader only.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	// Mark entries solo from now: once the removal is in the log, this
	// node may be the only voter before the refresh below.
	if n.cfg.FenceStride > 0 {
		n.solo.Store(true)
	}
	defer n.refreshSolo()
	if err := n.raft().RemoveServer(raft.ServerID(id), 0, n.timeout(ctx)).Error(); err != nil {
		return fmt.Errorf("remove %s: %w", id, err)
	}
	return nil
}

// refreshSolo sets solo from the current configuration. When it cannot
// tell, it marks entries solo: a journal entry too many costs a little
// space, one too few could lose work in a split brain.
func (n *Node) refreshSolo() {
	if n.cfg.FenceStride == 0 {
		return
	}
	r := n.raft()
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		n.solo.Store(true)
		return
	}
	voters := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	n.solo.Store(voters < 2)
}

func (n *Node) timeout(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return 10 * time.Second
}

// Member is one server of the raft configuration.
type Member struct {
	ID, Addr string
	Voter    bool
	Leader   bool
}

// Members returns the current configuration.
func (n *Node) Members() ([]Member, error) {
	r := n.raft()
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", err)
	}
	_, leader := r.LeaderWithID()
	var out []Member
	for _, s := range f.Configuration().Servers {
		out = append(out, Member{ID: string(s.ID), Addr: string(s.Address), Voter: s.Suffrage == raft.Voter, Leader: s.ID == leader})
	}
	return out, nil
}

// Status is a node's raft progress.
type Status struct {
	ID           string
	State        string // Leader, Follower, Candidate, Shutdown
	Term         uint64
	LastIndex    uint64 // last log index
	CommitIndex  uint64
	AppliedIndex uint64
	LeaderID     string
}

// Status returns the node's raft progress.
func (n *Node) Status() Status {
	r := n.raft()
	st := r.Stats()
	num := func(k string) uint64 {
		var v uint64
		_, _ = fmt.Sscan(st[k], &v)
		return v
	}
	_, leader := r.LeaderWithID()
	return Status{
		ID:           n.cfg.ID,
		State:        r.State().String(),
		Term:         num("term"),
		LastIndex:    num("last_log_index"),
		CommitIndex:  num("commit_index"),
		AppliedIndex: r.AppliedIndex(),
		LeaderID:     string(leader),
	}
}

// Reform makes this node the only voter, keeping its log and store: the
// Binary Star survivor calls it when its peer is declared dead so that it
// can commit alone. Everything in its log becomes committed. The peer is
// added back with AddVoter when it returns; its log is then made to agree
// with the survivor's, and if it went on alone too (a split brain), the
// fenced terms (Config.FenceStride) make that fork visible to it: its log
// guard stops it with store.ErrDiverged instead of letting raft overwrite
// what it applied.
func (n *Node) Reform(ctx context.Context) error {
	return n.ReformAbove(ctx, 0)
}

// ReformAbove is Reform, leading a term later than above: a pair's node
// that goes on alone because raft's link to its passive peer is cut
// passes the term the peer stood down at, which may be ahead of this
// node's own (the peer's pre-vote granted, its vote request lost), so
// that the configuration this node writes in its new raft is of a later
// term than that (see the pair's stand-down).
func (n *Node) ReformAbove(ctx context.Context, above uint64) error {
	n.life.Lock()
	defer n.life.Unlock()
	n.reformAbove.Store(above)
	defer n.reformAbove.Store(0)
	n.mu.Lock()
	r, trans := n.r, n.trans
	n.mu.Unlock()
	// Not in stopRaft itself, and not while the latest snapshot is a
	// placeholder: the snapshot in progress may then be the real one
	// that replaces it (see snapshotSoon), which a step-down restarting
	// raft, or this reform falling back on the real snapshot before its
	// new placeholder (see snapshotRetain), needs.
	if list, err := n.snaps.List(); err == nil && len(list) > 0 {
		if real, ok := n.latestRealSnapshot(); ok && real.ID == list[0].ID {
			n.fsm.abortPersists()
		}
	}
	if err := n.stopRaft(r); err != nil {
		return fmt.Errorf("stop raft: %w", err)
	}
	if n.cfg.Transport == nil {
		closeTransport(trans)
	}
	if err := n.fsm.err(); err != nil {
		return fmt.Errorf("reform raft: %w", err)
	}
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(n.cfg.ID), Address: raft.ServerAddress(n.cfg.Advertise)}}}
	if n.cfg.Transport != nil {
		conf.Servers[0].Address = n.cfg.Transport.LocalAddr()
	}
	rc := n.raftConfig()
	rf, snaps, err := n.recoveryFSM()
	if err != nil {
		return err
	}
	last, err := n.logs.LastIndex()
	if err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	n.booting.Store(true)
	err = raft.RecoverCluster(rc, rf, reformLog(n.logs, n.fsm.applied.Load(), last, rf), n.logs, snaps, trans, conf)
	n.booting.Store(false)
	if err != nil {
		return fmt.Errorf("recover raft as a single voter: %w", err)
	}
	n.log.Warn("raft reformed with this node as the only voter")
	for try := 0; ; try++ {
		if err := n.start(false); err != nil {
			return err
		}
		if err := n.electAlone(ctx); err != nil {
			return err
		}
		n.refreshSolo()
		got := n.Status().Term
		if n.fenced(got) || try >= 3 {
			if !n.fenced(got) {
				return fmt.Errorf("reformed raft leads term %d, outside this node's fence (stride %d, slot %d)", got, n.cfg.FenceStride, n.cfg.FenceSlot)
			}
			n.snapshotSoon()
			return nil
		}
		// More than one election ran: the term left the fence. Raise
		// it again before anything is written in it.
		n.log.Warn("reformed raft elected outside the fence; again", "term", got)
		n.mu.Lock()
		r, trans = n.r, n.trans
		n.mu.Unlock()
		if err := n.stopRaft(r); err != nil {
			return fmt.Errorf("stop raft: %w", err)
		}
		if n.cfg.Transport == nil {
			closeTransport(trans)
		}
	}
}

// keptLog is the raft log as raft.RecoverCluster sees it in a reform:
// the recovery's last step, which deletes the whole log (its snapshot,
// at the log's last index, now stands for it), does nothing. Raft reads
// configurations only from entries after the latest snapshot, which that
// snapshot puts past every entry kept, and compacts the kept entries with
// its next snapshots, as any others. Kept, they save two things. The
// delete itself, a write transaction over the whole log on the takeover's
// path: 0.4-2.4 s of the failover at 10,000,000 pending (make
// backlog-pair), the log's pages read from a disk the store's file has
// pushed them out of. And the returning peer's catch-up: it holds the
// same entries up to where the pair parted, so raft brings it up to date
// from the log, with its uncommitted tail (if any) replaced, instead of
// sending it a snapshot, a copy of the whole store (4.7 GB at that
// depth, minutes).
//
// It also skips reading the entries the store has applied (below
// applied, except the last entry, whose index and term name the
// reform's snapshot): RecoverCluster reads every entry after the latest
// snapshot to replay it, and the store would only answer each one
// "applied" (see recovering.Apply). Up to a snapshot threshold and more
// of them, 13 KB each under pipelined load: 5.1 s of a failover at
// 10,000,000 pending on a busy disk (make backlog-pair). The log guard
// (guard.go) has made sure that no entry at an applied index holds
// another term than the store applied.
//
// And it hands the configuration entries it replays to config (the
// recovering FSM's Apply), in their place among the commands:
// RecoverCluster applies commands alone, yet its snapshot says every
// entry up to the log's last is applied. A configuration entry the node
// held but had not seen committed (its leader committed it, the commit
// index had not reached this node) was then missing from the store's
// history while the leader's store had applied it: the two histories
// parted there, and the pair took the leader, restarted and active
// again, for a split brain (it "held" that entry, which this node lacks).
// This node halted its raft to hand its work over to a peer that could
// neither lead (its raft of two needs this node's vote) nor go on alone
// (not caught up): nobody served (the pair simulation, seed 80084).
type keptLog struct {
	raft.LogStore
	applied, last uint64
	config        func(*raft.Log) any
}

// reformLog is the log a reform's RecoverCluster replays (see keptLog):
// logs, whose entries up to applied the store holds, up to last, with
// the configuration entries after applied handed to rf in their place.
func reformLog(logs raft.LogStore, applied, last uint64, rf raft.FSM) keptLog {
	return keptLog{LogStore: logs, applied: applied, last: last, config: rf.Apply}
}

func (keptLog) DeleteRange(uint64, uint64) error { return nil }

func (k keptLog) GetLog(index uint64, l *raft.Log) error {
	if index <= k.applied && index < k.last {
		*l = raft.Log{Index: index, Type: raft.LogNoop}
		return nil
	}
	if err := k.LogStore.GetLog(index, l); err != nil {
		return err
	}
	if l.Type == raft.LogConfiguration && index > k.applied && k.config != nil {
		k.config(l)
	}
	return nil
}

// fenceIfSolo fences the current term (see fence) when this node's raft
// configuration makes it the only voter: it would elect itself at once,
// alone, and everything it then commits is a solo history its peer may
// never have seen. That is so after Reform, and at every start of a node
// that reformed before.
func (n *Node) fenceIfSolo(trans raft.Transport) error {
	if n.cfg.FenceStride == 0 {
		return nil
	}
	has, err := raft.HasExistingState(n.logs, n.logs, n.snaps)
	if err != nil || !has {
		return err
	}
	rc := n.raftConfig()
	rc.NoSnapshotRestoreOnStart = true
	rc.NotifyCh = nil
	conf, err := raft.GetConfiguration(rc, nopFSM{}, n.logs, n.logs, n.snaps, trans)
	if err != nil {
		return fmt.Errorf("raft configuration: %w", err)
	}
	voters := 0
	self := false
	for _, s := range conf.Servers {
		if s.Suffrage == raft.Voter {
			voters++
			self = self || s.ID == raft.ServerID(n.cfg.ID)
		}
	}
	if voters != 1 || !self {
		return nil
	}
	term, err := n.fence()
	if err != nil {
		return err
	}
	n.log.Info("only voter of its raft: its next term is fenced", "term", term, "stride", n.cfg.FenceStride, "slot", n.cfg.FenceSlot)
	return nil
}

// latestRealSnapshot returns the newest snapshot that is not a reform's
// placeholder.
func (n *Node) latestRealSnapshot() (*raft.SnapshotMeta, bool) {
	list, err := n.snaps.List()
	if err != nil {
		return nil, false
	}
	for _, m := range list {
		if !n.isPlaceholder(m) {
			return m, true
		}
	}
	return nil, false
}

// isPlaceholder reports whether m is a reform's placeholder snapshot (or
// cannot be opened, which makes it as useless).
func (n *Node) isPlaceholder(m *raft.SnapshotMeta) bool {
	// Only a snapshot of the placeholder's size can be one. Opening a
	// real snapshot reads all of it (the file snapshot store checks its
	// CRC on open), and this runs on a reform's path: that read would
	// make failover time grow with the store.
	if m.Size != int64(len(placeholderMark)) {
		return false
	}
	_, rc, err := n.snaps.Open(m.ID)
	if err != nil {
		return true
	}
	head := make([]byte, len(placeholderMark))
	k, _ := io.ReadFull(rc, head)
	_ = rc.Close()
	return k == len(head) && bytes.Equal(head, placeholderMark)
}

// nopFSM serves raft.GetConfiguration, which builds a raft instance
// without starting it and must not touch the store.
type nopFSM struct{}

func (nopFSM) Apply(*raft.Log) any                 { return nil }
func (nopFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("no snapshot") }
func (nopFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

// electAlone waits until the reformed raft, whose only voter is this
// node, has elected it. A single voter elects itself once raft's heartbeat
// timeout passes, one to two of them after the start: a second of
// failover for nothing, as there is nobody to hear from. Lowering the
// timeout makes a follower look at once (raft ReloadConfig), and with no
// leader ever heard it starts the election; then the timeout is put back.
func (n *Node) electAlone(ctx context.Context) error {
	r := n.raft()
	normal := r.ReloadableConfig()
	if fast := normal; n.cfg.LeaderLeaseTimeout < normal.HeartbeatTimeout {
		fast.HeartbeatTimeout = n.cfg.LeaderLeaseTimeout // raft wants it >= the lease
		if err := r.ReloadConfig(fast); err != nil {
			n.log.Debug("shorter heartbeat timeout for the election", "err", err)
		}
		defer func() {
			if err := r.ReloadConfig(normal); err != nil {
				n.log.Warn("restore the heartbeat timeout", "err", err)
			}
		}()
	}
	deadline := time.Now().Add(n.timeout(ctx))
	for !n.IsLeader() {
		if time.Now().After(deadline) {
			return fmt.Errorf("reformed raft did not elect this node")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// replacePlaceholder writes a real snapshot in place of a reform's
// placeholder that is still the latest (the node stopped before
// snapshotSoon replaced it): with the same index, term and configuration,
// and the store's content, which holds everything up to that index and
// perhaps more (as any snapshot may: see snapshot). Raft never restores a
// placeholder, and a leader whose latest snapshot is one cannot bring a
// peer that needs a snapshot up to date: in a pair that peer, its log too
// short, can be neither caught up nor elected, and nobody serves (seen in
// the simulation under load: a node crashed 3 ms after it reformed). Once
// raft runs, a new snapshot needs entries the pair cannot commit then.
func (n *Node) replacePlaceholder(trans raft.Transport) error {
	list, err := n.snaps.List()
	if err != nil || len(list) == 0 {
		// Nothing to replace; a snapshot store that cannot be listed
		// is raft's to report when it starts.
		return nil
	}
	m := list[0]
	if real, ok := n.latestRealSnapshot(); ok && real.ID == m.ID {
		return nil
	}
	ctx := context.Background()
	applied, err := n.st.AppliedIndex(ctx)
	if err != nil {
		return fmt.Errorf("store applied index: %w", err)
	}
	if applied < m.Index {
		// The store lost what the reform had (a data file replaced):
		// a copy of it would not stand for the index.
		n.log.Warn("latest raft snapshot is a reform's placeholder and the store is behind it; not replaced", "snapshot", m.Index, "applied", applied)
		return nil
	}
	sink, err := n.snaps.Create(m.Version, m.Index, m.Term, m.Configuration, m.ConfigurationIndex, trans)
	if err != nil {
		return fmt.Errorf("replace the placeholder snapshot: %w", err)
	}
	if err := (&snapshot{st: n.st}).Persist(sink); err != nil {
		return fmt.Errorf("replace the placeholder snapshot: %w", err)
	}
	n.log.Info("reform's placeholder snapshot replaced by a real one", "index", m.Index, "term", m.Term, "applied", applied)
	return nil
}

// snapshotSoon replaces the reform's placeholder snapshot with a real one,
// off the failover's path: until it is there, a peer that needs a
// snapshot to catch up waits for it.
func (n *Node) snapshotSoon() {
	r := n.raft()
	done := make(chan struct{})
	n.mu.Lock()
	n.afterReform = done
	n.mu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer close(done)
		for try := 0; try < 50; try++ {
			err := r.Snapshot().Error()
			if err == nil || errors.Is(err, raft.ErrRaftShutdown) {
				return
			}
			n.log.Debug("snapshot after reform", "err", err)
			select {
			case <-n.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		n.log.Warn("no snapshot after the reform: a peer that needs one waits for the next")
	}()
}

// fenced reports whether term is one this node may lead alone.
func (n *Node) fenced(term uint64) bool {
	return n.cfg.FenceStride == 0 || term%n.cfg.FenceStride == n.cfg.FenceSlot
}

// fence raises the stored current term so that this node's next election
// (it is the only voter: one election) lands in its fence, and past the
// term a reform in progress must lead past (ReformAbove), and returns
// that term. The stable store is durable before raft starts.
func (n *Node) fence() (uint64, error) {
	cur, err := n.logs.GetUint64(keyCurrentTerm)
	if err != nil {
		return 0, fmt.Errorf("read current term: %w", err)
	}
	next := max(cur, n.reformAbove.Load()) + 1
	for !n.fenced(next) {
		next++
	}
	if err := n.logs.SetUint64(keyCurrentTerm, next-1); err != nil {
		return 0, fmt.Errorf("raise current term: %w", err)
	}
	return next, nil
}

// keyCurrentTerm is where raft keeps its current term in the stable store
// (raft's own key, part of its on-disk format).
var keyCurrentTerm = []byte("CurrentTerm")

// recoveryFSM is the fsm as raft.RecoverCluster sees it, and the
// snapshot store it reads. RecoverCluster restores the latest snapshot
// and replays the log after it, but the store already holds everything it
// applied, so a snapshot the store is not behind is not restored again (a
// reform must not cost a copy of the whole store in), nor even read (see
// unreadSnapshots). And it applies every entry of the log, committed or
// not: an entry this node appended as the leader of two that its peer
// never got becomes part of this node's solo history now, so it is
// marked solo (the store's journal must hand it over after a split).
func (n *Node) recoveryFSM() (raft.FSM, raft.SnapshotStore, error) {
	list, err := n.snaps.List()
	if err != nil {
		return nil, nil, fmt.Errorf("raft snapshots: %w", err)
	}
	hist, err := n.fsm.st.History(context.Background())
	if err != nil {
		return nil, nil, fmt.Errorf("store history: %w", err)
	}
	// No restore when the store holds what the newest snapshot does. A
	// placeholder (an earlier reform's) stands for no content: the store
	// applied that reform's whole log, and its index may be past the last
	// command (no-ops, configurations), so compare with the newest real
	// snapshot instead. Restoring the placeholder fails, and with no real
	// snapshot to fall back on the reform failed ("failed to restore any
	// of the available snapshots"): an idle pair's active could not go on
	// alone again.
	applied := n.fsm.applied.Load()
	skip := len(list) > 0 && applied >= list[0].Index
	if len(list) > 0 && !skip && n.isPlaceholder(list[0]) {
		skip = true
		if real, ok := n.latestRealSnapshot(); ok {
			skip = applied >= real.Index
		}
	}
	var snaps raft.SnapshotStore = n.snaps
	if skip {
		snaps = unreadSnapshots{SnapshotStore: n.snaps, list: list}
	}
	keep, err := raft.NewFileSnapshotStoreWithLogger(n.cfg.Dir, keepAll, n.hclog())
	if err != nil {
		return nil, nil, fmt.Errorf("raft snapshots: %w", err)
	}
	return &recovering{fsm: n.fsm, skipRestore: skip, hist: hist}, unreaped{SnapshotStore: snaps, create: keep}, nil
}

// unreaped is the snapshot store a reform writes its placeholder through:
// one over the same directory that keeps every snapshot. Raft's file
// snapshot store deletes the snapshots beyond those it retains when a new
// one is complete, on the writer's path: for the placeholder, the oldest
// real snapshot, a copy of the whole store, deleted on the failover's
// path (1.2 s for a 4.7 GB snapshot at 10,000,000 pending, make
// backlog-pair). The real snapshot the reform takes next (snapshotSoon)
// deletes it instead, off that path; until then a node holds one copy
// more, as it does while any snapshot is written.
type unreaped struct {
	raft.SnapshotStore
	create raft.SnapshotStore
}

func (u unreaped) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration, configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	return u.create.Create(version, index, term, configuration, configurationIndex, trans)
}

// keepAll is a retain count no node reaches.
const keepAll = 1 << 20

type recovering struct {
	*fsm
	skipRestore bool
	hist        store.History // the store's, when raft stopped
	// pending holds the entries to apply, applied together (see Apply).
	pending []*raft.Log
}

// recoverBatch bounds the entries a reform applies in one store commit.
const recoverBatch = 256

func (r *recovering) Restore(rc io.ReadCloser) error {
	if r.skipRestore {
		return rc.Close()
	}
	return r.fsm.Restore(rc)
}

// unreadSnapshots is the snapshot store of a reform that restores no
// snapshot: Open gives a snapshot's metadata and no content. The file
// snapshot store's Open reads the whole snapshot to check its CRC, a copy
// of the store: on the takeover's path that read grew with the backlog
// (about 0.5 s per open of the 0.8 GB snapshot of 1,000,000 pending
// tickets), for content recovering.Restore then drops unread.
type unreadSnapshots struct {
	raft.SnapshotStore
	list []*raft.SnapshotMeta
}

func (u unreadSnapshots) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	for _, m := range u.list {
		if m.ID == id {
			return m, io.NopCloser(bytes.NewReader(nil)), nil
		}
	}
	return u.SnapshotStore.Open(id)
}

// Snapshot is a placeholder: see placeholderMark. RecoverCluster takes it
// right after its replay, so the entries still pending are applied first.
func (r *recovering) Snapshot() (raft.FSMSnapshot, error) {
	if err := r.flush(); err != nil {
		return nil, fmt.Errorf("no snapshot of a failed replica: %w", err)
	}
	if err := r.err(); err != nil {
		return nil, fmt.Errorf("no snapshot of a failed replica: %w", err)
	}
	return placeholder{}, nil
}

// Apply takes the entries RecoverCluster replays one at a time and hands
// them to the store recoverBatch at a time: one at a time, each was a
// store commit, two fsyncs, on the failover's path (0.87 s for the
// entries a passive had not applied yet at a kill at 10,000,000 pending,
// make backlog-pair). RecoverCluster ignores what Apply returns; a
// failure stops the fsm, which Snapshot then reports.
func (r *recovering) Apply(l *raft.Log) any {
	if l.Type == raft.LogCommand && r.hist.Replayed(l.Index, l.Term) {
		// Applied before, by the store's own rule: the store would
		// answer ErrApplied, but only after a write transaction of its
		// own, fsync included, per entry: up to a snapshot threshold of
		// them on the takeover's path (3.4 s for 6,500 entries). An
		// entry under another term goes to the store, which stops the
		// node.
		return response{err: fmt.Errorf("%w: log index %d", store.ErrApplied, l.Index)}
	}
	c := *l
	c.Data = bytes.Clone(l.Data) // kept past this call
	if l.Type == raft.LogCommand {
		if m, ok := decodeMeta(l.Extensions); ok {
			// An announcement keeps what it announces (the cluster
			// version, above all: the active's store raised it with
			// this entry), marked solo like the rest.
			c.Extensions = encodeMeta(m.leader, Announcement{Endpoint: m.endpoint, Curve: m.curve, ClusterVersion: m.cluster}, true)
		} else {
			c.Extensions = soloMark
		}
	}
	r.pending = append(r.pending, &c)
	if len(r.pending) >= recoverBatch {
		if err := r.flush(); err != nil {
			return response{err: err}
		}
	}
	return response{}
}

// flush applies the pending entries as one batch.
func (r *recovering) flush() error {
	if len(r.pending) == 0 {
		return nil
	}
	out := r.fsm.ApplyBatch(r.pending)
	r.pending = r.pending[:0]
	for _, o := range out {
		if res, ok := o.(response); ok && res.err != nil && !errors.Is(res.err, store.ErrApplied) {
			return res.err
		}
	}
	return nil
}

// stopCurrent stops the raft instance running (see stopRaft) and closes
// its transport unless Config gave it.
func (n *Node) stopCurrent() error {
	n.mu.Lock()
	r, trans := n.r, n.trans
	n.mu.Unlock()
	if err := n.stopRaft(r); err != nil && !errors.Is(err, raft.ErrRaftShutdown) {
		return fmt.Errorf("stop raft: %w", err)
	}
	if n.cfg.Transport == nil {
		closeTransport(trans)
	}
	return nil
}

// stopRaft shuts r down and waits until it has stopped. Raft waits only
// in the first Shutdown of an instance; a later call returns at once,
// while the instance may still be running. So when the fsm's halt (on its
// own goroutine, after a store failure) has begun to stop r, a Close,
// Reform or Resync that called Shutdown itself would go on to close or
// replace the log store under a running raft, which then panics on its
// next write. Every shutdown goes through here and waits for the first.
func (n *Node) stopRaft(r *raft.Raft) error {
	n.stopMu.Lock()
	f, ok := n.stopping[r]
	if !ok {
		if abort := n.aborts[r]; abort != nil {
			abort()
		}
		f = r.Shutdown()
		n.stopping[r] = f
	}
	n.stopMu.Unlock()
	return f.Error()
}

// Close stops raft and closes its stores. It does not close the store.
func (n *Node) Close() error {
	var err error
	n.closeOnce.Do(func() {
		close(n.stop)
		// Not held across wg.Wait: relogLoop may be waiting for it.
		n.life.Lock()
		n.mu.Lock()
		r, trans := n.r, n.trans
		n.mu.Unlock()
		err = n.stopRaft(r)
		if n.cfg.Transport == nil {
			closeTransport(trans)
		}
		n.life.Unlock()
		n.wg.Wait()
		if cerr := n.logs.Close(); err == nil {
			err = cerr
		}
	})
	return err
}

// TransferLeadership hands leadership to the voter id (leader only): a
// Binary Star passive node that holds it gives it to the active one.
func (n *Node) TransferLeadership(id, addr string) error {
	r := n.raft()
	// Through waitFuture: raft queues a transfer in a channel of one,
	// and a raft stopped with it there never answers it.
	if err := waitFuture(context.Background(), r, r.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr))); err != nil {
		return fmt.Errorf("transfer leadership to %s: %w", id, err)
	}
	return nil
}

// Term is raft's current term (read without a round through raft's loop,
// unlike Status).
func (n *Node) Term() uint64 { return n.raft().CurrentTerm() }

// HeartbeatTimeout is raft's heartbeat timeout (Config.HeartbeatTimeout):
// a follower that hears no leader that long stands for election.
func (n *Node) HeartbeatTimeout() time.Duration { return n.cfg.HeartbeatTimeout }

// HasVoter reports whether id is a voter of the current configuration.
func (n *Node) HasVoter(id string) bool { return n.HasVoterAt(id, "") }

// HasVoterAt reports whether id is a voter at raft address addr in the
// latest configuration (any address when addr is empty).
func (n *Node) HasVoterAt(id, addr string) bool {
	m, ok := n.MemberAt(id, addr)
	return ok && m.Voter
}

// StartTerm is the term of the last entry this node held when it opened
// (or last forgot its membership): entries of a later term came from a
// leader elected since.
func (n *Node) StartTerm() uint64 { return n.startTerm.Load() }

// StartIndex is the index of the last entry this node held (in its log or
// its latest snapshot) when it opened (or last forgot its membership): an
// entry at a later index came from a leader since.
func (n *Node) StartIndex() uint64 { return n.startIndex.Load() }

// ConfigIndex returns the index of the configuration entry ConfigTerm
// describes (0 if none).
func (n *Node) ConfigIndex() uint64 {
	if c := n.fsm.conf.Load(); c != nil {
		return c.index
	}
	return 0
}

// ConfigTerm returns the term of the last configuration entry this node
// has applied since it opened (0 if none), and whether this node is a
// voter in that configuration. A configuration entry of the current
// leader's term was written by that leader: a node that has applied it
// has the leader's log up to it.
func (n *Node) ConfigTerm() (term uint64, voter bool) {
	if c := n.fsm.conf.Load(); c != nil {
		return c.term, c.voter
	}
	return 0, false
}

// SnapshotVoterTerm returns the term of this node's latest snapshot when
// the configuration held in that snapshot has this node as a voter and
// came after its start (an entry past StartIndex); 0 otherwise. A
// configuration entry can reach a follower inside a snapshot (a leader
// that compacted its log before it added the node, see PrepareJoin): the
// fsm never sees that entry, but the snapshot's configuration tells the
// same as ConfigTerm would.
//
// Not raft's latest configuration, nor one from before the start: a node
// that rejoins without a vote still holds its configuration from before
// a cut (both voters) until the peer's entries replace it, and a
// snapshot it takes meanwhile carries the term of the peer's entries it
// applied. Taken for a vote, that counted it caught up while it lacked
// what the peer committed alone (a review found it; the pair test
// TestSnapshotVoterTermNeedsConfigSinceStart shows it).
func (n *Node) SnapshotVoterTerm() uint64 {
	m, ok := n.latestRealSnapshot()
	if !ok || m.ConfigurationIndex <= n.StartIndex() {
		return 0
	}
	for _, s := range m.Configuration.Servers {
		if s.ID == raft.ServerID(n.cfg.ID) && s.Suffrage == raft.Voter {
			return m.Term
		}
	}
	return 0
}

// VoterSinceStart reports whether this node is a voter by a configuration
// that came after its start (an entry past StartIndex): the last one it
// applied, or the one in its latest snapshot. One from before says
// nothing of the leader's: a node that rejoins after a cut still holds
// its own (both voters) until the leader's entries replace it. (Raft's
// latest configuration has no index to tell: hashicorp/raft 1.7's
// GetConfiguration leaves it 0.)
func (n *Node) VoterSinceStart() bool {
	if c := n.fsm.conf.Load(); c != nil && c.voter && c.index > n.StartIndex() {
		return true
	}
	return n.SnapshotVoterTerm() > 0
}

// Fatal reports an error after which this node must stop: its store
// diverged from the replicated log (see store.ErrDiverged). The role loops
// return it, and the broker exits with it.
func (n *Node) Fatal() <-chan error { return n.fsm.fatal }

// Solo reports whether this node's raft has it as the only voter of a
// fenced (pair) configuration, or may have (not known yet): its peer may
// then hold a history of its own (a split brain not merged yet).
func (n *Node) Solo() bool { return n.solo.Load() }

// Failed returns the failure that stopped this node's replica (see
// Fatal), or nil.
func (n *Node) Failed() error { return n.fsm.err() }

// History returns the applied history of this node's store.
func (n *Node) History(ctx context.Context) (store.History, error) { return n.st.History(ctx) }

// ForkOps returns the work this node's store did after fork (see
// store.BoltStore.ForkOps).
func (n *Node) ForkOps(ctx context.Context, fork uint64, maxBytes int, fn func([]store.Op) error) error {
	return n.st.ForkOps(ctx, fork, maxBytes, fn)
}

// HandoverOps is ForkOps with each op's key (see
// store.BoltStore.HandoverOps).
func (n *Node) HandoverOps(ctx context.Context, fork uint64, maxBytes int, fn func([]store.Op, []store.HandoverKey) error) error {
	return n.st.HandoverOps(ctx, fork, maxBytes, fn)
}

// HandoverID names the handover by position of this node's fork past
// fork, by node (see store.BoltStore.HandoverID).
func (n *Node) HandoverID(ctx context.Context, node string, fork uint64) (store.ID, error) {
	return n.st.HandoverID(ctx, node, fork)
}

// HandoverForm returns the cluster version by which node's handover of
// this node's fork past fork is marked: its first try's, recorded (see
// store.BoltStore.HandoverForm).
func (n *Node) HandoverForm(ctx context.Context, node string, fork uint64, now int) (int, error) {
	return n.st.HandoverForm(ctx, node, fork, now)
}

// Resync makes this node a new, empty raft member that catches up from
// the leader: it stops raft and moves its raft state (log, terms,
// snapshots) into aside; unless keepStore, it also copies the store there
// and empties it. The node of a pair that yields after a split brain
// calls it once it has handed its own work over (keepStore false), and so
// does a node that left a solo raft whose history the leader's contains
// (keepStore true: the leader's entries up to its applied index are
// skipped, not applied again). Nothing is deleted: aside keeps what was
// dropped for the operator. The leader must then add this node as a
// voter (AddVoter).
func (n *Node) Resync(ctx context.Context, keepStore bool, aside string) error {
	if err := os.MkdirAll(aside, 0o750); err != nil {
		return fmt.Errorf("resync: %w", err)
	}
	if !keepStore {
		// The copy first, while raft runs, and without the caller's
		// deadline (only its cancellation): a store of gigabytes takes
		// longer than a round of the pair, and a copy cut short after
		// the raft state had moved aside left the node stopped, with
		// every later round failing to move it again (found by a
		// reviewer of the pair).
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		defer cancel()
		stop := context.AfterFunc(ctx, func() {
			if errors.Is(ctx.Err(), context.Canceled) {
				cancel()
			}
		})
		defer stop()
		if err := n.copyStore(cctx, filepath.Join(aside, "titanic.db")); err != nil {
			// Nothing moved: no copy kept either (a round that fails
			// again and again must not fill the disk with them).
			_ = os.RemoveAll(aside)
			return fmt.Errorf("resync: %w", err)
		}
	}
	n.life.Lock()
	defer n.life.Unlock()
	if err := n.stopCurrent(); err != nil {
		_ = os.RemoveAll(aside)
		return err
	}
	if err := n.logs.Close(); err != nil {
		n.log.Warn("close raft log store", "err", err)
	}
	if err := os.Rename(n.cfg.Dir, filepath.Join(aside, "raft")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		// Nothing moved: raft goes on as it was, and a later round
		// tries again.
		_ = os.RemoveAll(aside)
		if rerr := n.reopen(); rerr != nil {
			return fmt.Errorf("resync: move raft state aside: %w (and raft did not start again: %w)", err, rerr)
		}
		return fmt.Errorf("resync: move raft state aside: %w", err)
	}
	if !keepStore {
		if err := n.st.Reset(context.WithoutCancel(ctx)); err != nil {
			return fmt.Errorf("resync: %w", err)
		}
	}
	if err := os.MkdirAll(n.cfg.Dir, 0o750); err != nil {
		return fmt.Errorf("raft directory: %w", err)
	}
	if err := n.openRaftStores(); err != nil {
		return err
	}
	applied, err := n.st.AppliedIndex(ctx)
	if err != nil {
		return fmt.Errorf("store applied index: %w", err)
	}
	n.fsm.failed.Store(nil)
	n.fsm.conf.Store(nil)
	n.fsm.applied.Store(applied)
	n.startTerm.Store(0)
	n.startIndex.Store(0)
	n.solo.Store(false)
	n.log.Warn("raft state moved aside; rejoining as a new member", "aside", aside, "store_kept", keepStore, "applied", applied)
	return n.start(false)
}

// reopen starts raft again on the state in its directory, after a
// Resync that moved nothing.
func (n *Node) reopen() error {
	if err := n.openRaftStores(); err != nil {
		return err
	}
	return n.start(false)
}

// openLogStore opens the raft log store, dir/raft.db, once its pages are
// checked (store.CheckBoltFile): bbolt maps the file and trusts its pages,
// and a truncated or damaged log crashed the node with a bus error or a
// Go panic instead of an error naming the file.
func openLogStore(dir string) (*raftboltdb.BoltStore, error) {
	path := filepath.Join(dir, "raft.db")
	if err := store.CheckBoltFile(path); err != nil {
		return nil, fmt.Errorf("raft log store: %w", err)
	}
	logs, err := raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		return nil, fmt.Errorf("raft log store %s: %w", path, err)
	}
	return logs, nil
}

// openRaftStores opens the raft log and snapshot stores in the raft
// directory.
func (n *Node) openRaftStores() error {
	logs, err := openLogStore(n.cfg.Dir)
	if err != nil {
		return err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(n.cfg.Dir, snapshotRetain, n.hclog())
	if err != nil {
		_ = logs.Close()
		return fmt.Errorf("raft snapshot store: %w", err)
	}
	n.logs, n.snaps = logs, snaps
	return nil
}

func (n *Node) copyStore(ctx context.Context, path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("copy store: %w", err)
	}
	_, err = n.st.Snapshot(ctx, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy store: %w", err)
	}
	return nil
}

// Self returns this node's raft ID and the address its peers dial.
func (n *Node) Self() (id, addr string) {
	if n.cfg.Transport != nil {
		return n.cfg.ID, string(n.cfg.Transport.LocalAddr())
	}
	return n.cfg.ID, n.cfg.Advertise
}

// PrepareJoin makes sure a member about to be added catches up from a
// snapshot, not from the start of the log: a store restored from a backup
// (titanic restore) holds tickets no log entry made, and a node that
// joins with an empty store would replay the log from index 1 and lack
// them. (A restored store now bootstraps raft from a snapshot of itself,
// see restoredIndex, which also covers a member that is a voter already
// and never comes here; a log restored by an earlier release still starts
// at 1.) A log that still starts at index 1 is compacted whole into a new
// snapshot (raft's TrailingLogs set to 0 for that one snapshot). A log
// compacted before sends any member that lacks its start a snapshot
// already; then only a reform's placeholder as the latest snapshot (the
// real one after it not yet written), which no member can restore, needs
// a real snapshot, taken with the usual trailing entries: a pair's peer
// that returns after a failover holds the log up to where the two parted
// and catches up from it (see keptLog), where a log compacted whole
// would send it the whole store (a 4.7 GB snapshot at 10,000,000
// pending, minutes, seen in make backlog-pair). Leader only.
func (n *Node) PrepareJoin(ctx context.Context) error {
	r := n.raft()
	if r.State() != raft.Leader {
		return ErrNotLeader
	}
	first, err := n.logs.FirstIndex()
	if err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	whole := true
	if latest, err := n.snaps.List(); err == nil && len(latest) > 0 && first > 1 {
		if real, ok := n.latestRealSnapshot(); ok && real.ID == latest[0].ID {
			return nil // compacted once already: a new member gets this snapshot
		}
		whole = false
		// The reform's own real snapshot may be on its way
		// (snapshotSoon): wait for it rather than queue another copy of
		// the whole store behind it (raft takes one snapshot at a time,
		// and a snapshot asked for cannot be called off). A join asked
		// right after a failover at 10,000,000 pending queued two more,
		// 6.5 GB each, one per try of the joining node.
		n.mu.RLock()
		pending := n.afterReform
		n.mu.RUnlock()
		if pending != nil {
			select {
			case <-pending:
			case <-ctx.Done():
				return fmt.Errorf("%w: %w", ErrSnapshotPending, ctx.Err())
			}
			if real, ok := n.latestRealSnapshot(); ok {
				if latest, err := n.snaps.List(); err == nil && len(latest) > 0 && real.ID == latest[0].ID {
					return nil
				}
			}
		}
	}
	restore := func() {}
	if whole {
		// Raft reads TrailingLogs when it compacts, after the copy: it
		// is put back once the snapshot is done, not when this returns
		// at ctx's end (then the log stayed whole, and every try of the
		// joining node cost another copy of the whole store). The
		// configured count, not the current one: another join may have
		// set it to 0 meanwhile.
		normal := r.ReloadableConfig()
		normal.TrailingLogs = n.cfg.TrailingLogs
		all := normal
		all.TrailingLogs = 0
		if err := r.ReloadConfig(all); err != nil {
			return fmt.Errorf("raft config: %w", err)
		}
		restore = func() {
			if err := r.ReloadConfig(normal); err != nil && !errors.Is(err, raft.ErrRaftShutdown) {
				n.log.Warn("restore raft's trailing logs", "err", err)
			}
		}
	}
	// A barrier is one more entry, so that there is something new to
	// snapshot even right after a snapshot that left the log whole.
	// Not bounded by ctx (the snapshot that follows is started past it,
	// as documented below); waitFuture ends the wait if raft stops.
	if err := waitFuture(context.WithoutCancel(ctx), r, r.Barrier(n.timeout(ctx))); err != nil {
		restore()
		return fmt.Errorf("barrier before a join: %w", err)
	}
	// Bounded by ctx, though raft goes on with the snapshot: the joining
	// node asks again, and then finds it done.
	took := make(chan error, 1)
	go func() {
		err := r.Snapshot().Error()
		restore()
		took <- err
	}()
	select {
	case err := <-took:
		if err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
			return fmt.Errorf("snapshot before a join: %w", err)
		}
	case <-ctx.Done():
		return fmt.Errorf("snapshot before a join, still being written: %w", ctx.Err())
	}
	return ctx.Err()
}

// StepDown gives up raft leadership by stopping raft and starting it
// again from its durable state (log, term, vote, snapshots; the store is
// kept as it is): a crash of raft alone, which raft is built to survive.
// Raft has no step-down of its own, and a leader cannot always transfer
// leadership: in hashicorp/raft (up to v1.7.3 at least, issue #696) a
// transfer cut short when the leader steps down can leave its goroutine
// blocked for ever, and the instance then refuses every later transfer
// and every write with ErrLeadershipTransferInProgress, in any term it
// leads again; only a new instance is free of it. For standAside
// heartbeat timeouts after the restart this node stands for no election
// (its timeouts are raised), so that a peer that has heard no leader
// since is elected first; it still votes. A node that leads no raft
// (not the leader) is left alone.
func (n *Node) StepDown() error {
	n.life.Lock()
	defer n.life.Unlock()
	n.mu.Lock()
	r, trans := n.r, n.trans
	n.mu.Unlock()
	if r.State() != raft.Leader {
		return ErrNotLeader
	}
	if err := n.stopRaft(r); err != nil && !errors.Is(err, raft.ErrRaftShutdown) {
		return fmt.Errorf("stop raft: %w", err)
	}
	if n.cfg.Transport == nil {
		closeTransport(trans)
	}
	if err := n.fsm.err(); err != nil {
		return fmt.Errorf("step down: %w", err)
	}
	normal := raft.ReloadableConfig{}
	aside := func(rc *raft.Config) {
		normal = raft.ReloadableConfig{
			TrailingLogs: rc.TrailingLogs, SnapshotInterval: rc.SnapshotInterval, SnapshotThreshold: rc.SnapshotThreshold,
			HeartbeatTimeout: rc.HeartbeatTimeout, ElectionTimeout: rc.ElectionTimeout,
		}
		rc.HeartbeatTimeout *= standAside
		rc.ElectionTimeout *= standAside
	}
	if err := n.start(false, aside); err != nil {
		return fmt.Errorf("step down: restart raft: %w", err)
	}
	n.log.Warn("stepped down: raft restarted, standing for no election for a while", "for", standAside*normal.HeartbeatTimeout)
	r = n.raft()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		select {
		case <-n.stop:
			return
		case <-time.After(standAside * normal.HeartbeatTimeout):
		}
		// A Reform or Resync since made a new instance with the normal
		// timeouts; only this one is put back.
		if n.raft() != r {
			return
		}
		if err := r.ReloadConfig(normal); err != nil {
			n.log.Warn("restore raft's timeouts after stepping down", "err", err)
		}
	}()
	return nil
}

// standAside is how many heartbeat timeouts a node that stepped down
// stands for no election (its timeouts are that many times longer
// meanwhile): a follower that heard no leader stands after one to two.
const standAside = 5

// Halt stops raft and waits until the store takes no more entries: what
// was acknowledged is in the store, what was in flight failed. The node
// of a pair that yields after a split brain halts before it reads the
// work it hands over, so that nothing lands in its store after the read.
// Resync, Reform and Close start or stop it again.
func (n *Node) Halt() error {
	n.life.Lock()
	defer n.life.Unlock()
	r := n.raft()
	if err := n.stopRaft(r); err != nil && !errors.Is(err, raft.ErrRaftShutdown) {
		return fmt.Errorf("stop raft: %w", err)
	}
	n.mu.Lock()
	if n.r == r {
		n.halted = r
	}
	n.mu.Unlock()
	return nil
}

// Halted reports whether Halt stopped this node's raft and nothing has
// started it again: the node takes no entries until it has handed its
// work over (a pair's peer reads it in titanic.cluster.history, as it
// reads Failed, to know that only a raft it leads can take that work).
func (n *Node) Halted() bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.halted != nil && n.halted == n.r
}
