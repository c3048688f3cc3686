// Package node owns the assembly of one titanic node: the one place that
// wires a store, its replica, the titanic service, the broker and its
// handlers, the replicated role (Binary Star pair or raft group), the
// admin services, the drain on shutdown, the HTTP operations server and
// the notification publisher together, and runs them as one unit.
//
// `titanic broker` turns its flags and configuration file into a Config;
// tests and benchmarks that need a whole node build one here too, so what
// they run is what the binary runs. A Node owns its data directory's store
// and replica from New until Run returns (or Close, when Run is never
// called).
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/ha"
	"github.com/titanicmq/titanic/titanic/notify"
	"github.com/titanicmq/titanic/titanic/ops"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// Config is a node's assembly: its parts' configurations, and which
// optional parts it runs.
type Config struct {
	// Dir is the data directory (made if missing): titanic.db, and raft/
	// and forks/ when replicated, backups/ unless Service.BackupDir says
	// otherwise.
	Dir    string
	Logger *slog.Logger // every part's, unless its own config sets one (nil: discard)

	// Store opens Dir/titanic.db. ObserveCommit, if set, is called
	// beside the HTTP server's fsync histogram.
	Store store.Options
	// Broker is the broker's configuration (endpoints, peering, CURVE).
	// Its Logger, when nil, is Logger (broker.DefaultConfig sets
	// slog.Default: set it).
	Broker broker.Config
	// Service is the titanic service's configuration. The node sets
	// Unconfirmed (its drain gate), Notifier (NotifyListen), and MintTag
	// and MaybeElsewhere in a pair; ObserveCommit, if set, is called
	// beside the HTTP server's commit histogram.
	Service titanic.Config

	// Raft, when set, replicates the store through raft (Dir defaults to
	// Dir/raft). Without Pair, the node is a member of a raft group.
	Raft *replica.Config
	// Pair, with Raft, makes the node one of a Binary Star pair. The node
	// sets PeerTag (from Star.Role), and ForkDir (default Dir/forks) and
	// Logger when empty.
	Pair *ha.PairConfig
	// AdminFrom are the networks, beside this host and the cluster's
	// members' hosts, from which cluster changes (titanic.cluster.join,
	// leave, adopt, forget, version reports) and titanic.backup are taken
	// (ha.AdminSources).
	AdminFrom []netip.Prefix
	// Release names the binary (`titanic version`); a replicated node
	// reports it with its protocol version (ha.Versions).
	Release string
	// VersionInterval is how often a replicated node reports its version
	// to the leader, and the leader checks whether it can raise the
	// cluster version (default 2s).
	VersionInterval time.Duration
	// VersionReport, when set, is the protocol version the node reports
	// instead of this build's (tests of mixed versions in one process).
	VersionReport int

	// HTTP, when set, serves metrics, health, the JSON API and the
	// dashboard.
	HTTP *HTTPConfig
	// NotifyListen, when set, is the endpoint of the notification
	// publisher (package notify); a failure of the publisher stops the
	// node.
	NotifyListen string

	// DrainTimeout is how long Run waits, once its ctx is done, for
	// accepted work to be committed and answered while it refuses new
	// requests.
	DrainTimeout time.Duration
	// NoDrain makes Run stop at once when its ctx is done, as a crash
	// would for the node's clients (tests that stop and restart a node).
	NoDrain bool

	// WrapStore, when set, wraps the store the service uses (the bbolt
	// store, or the replica): test hooks and benchmark probes.
	WrapStore func(store.Store) store.Store
}

// HTTPConfig is the operations HTTP server's.
type HTTPConfig struct {
	Listen  string // host:port
	Token   string // bearer token of the mutating API ("" none)
	Version string // reported by /healthz and the dashboard
	// Optional: Listen is the default address, not asked for. If its
	// port is taken the node goes on without the HTTP server, with a
	// warning (a port 8080 used by anything else must not stop a plain
	// `titanic broker`); a listener asked for fails loudly.
	Optional bool
}

// Node is one assembled titanic node.
type Node struct {
	// readies are what "broker ready" waits for beside the broker (the
	// notification publisher's bind).
	readies   []<-chan struct{}
	cfg       Config
	log       *slog.Logger
	path      string
	bolt      *store.BoltStore
	st        store.Store // the store the service uses
	rep       *replica.Node
	svc       *titanic.Service
	b         *broker.Broker
	gate      *drainGate
	pair      atomic.Pointer[ha.Pair] // once made (the service's MaybeElsewhere)
	roles     []func(context.Context) error
	serveHTTP func(context.Context) error
	closeOnce sync.Once
	closeErr  error
}

// New opens the store (and its replica) and assembles the node's parts;
// nothing runs until Run. On error, what New opened is closed.
func New(cfg Config) (_ *Node, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	n := &Node{cfg: cfg, log: log, path: filepath.Join(cfg.Dir, "titanic.db"), gate: &drainGate{}}
	hooks := &latencyHooks{fsyncNext: cfg.Store.ObserveCommit, commitNext: cfg.Service.ObserveCommit}

	so := cfg.Store
	if so.Logger == nil {
		so.Logger = log
	}
	so.ObserveCommit = hooks.fsync
	n.bolt, err = store.Open(n.path, so)
	if err != nil {
		return nil, err // store.Open's errors name the store and its path
	}
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()

	bc := cfg.Broker
	if bc.Logger == nil {
		bc.Logger = log
	}
	if bc.RefuseFrames == nil {
		bc.RefuseFrames = titanic.RefuseFrames
	}
	n.b, err = broker.New(bc)
	if err != nil {
		return nil, err
	}

	tc := cfg.Service
	if tc.Logger == nil {
		tc.Logger = log
	}
	tc.ObserveCommit = hooks.commit
	if tc.BackupDir == "" {
		tc.BackupDir = filepath.Join(cfg.Dir, "backups")
	}
	tc.Unconfirmed = n.gate.Refusal
	var pub *notify.Publisher
	if cfg.NotifyListen != "" {
		pub = notify.New(cfg.NotifyListen, log)
		tc.Notifier = pub
	}
	n.st = n.bolt
	var raftDir string
	if cfg.Raft != nil {
		rc := *cfg.Raft
		if rc.Dir == "" {
			rc.Dir = filepath.Join(cfg.Dir, "raft")
		}
		raftDir = rc.Dir
		if rc.Logger == nil {
			rc.Logger = log
		}
		n.rep, err = replica.Open(n.bolt, rc)
		if err != nil {
			return nil, err
		}
		n.st = n.rep
	}
	if cfg.WrapStore != nil {
		n.st = cfg.WrapStore(n.st)
	}
	if cfg.Raft != nil && cfg.Pair != nil {
		// A pair's tickets carry the node that minted them, so that a
		// node that may lack its peer's split answers "not ready" for
		// the peer's, not "unknown".
		tc.MintTag, _ = pairTags(cfg.Pair.Star.Role)
		tc.MaybeElsewhere = n.maybeElsewhere
	}
	if tc.Workers == nil {
		tc.Workers = n.workers
	}
	if len(tc.DiskPaths) == 0 {
		// The reserve keeps room for the store and, replicated, for the
		// raft log and snapshots, which may sit on another file system.
		tc.DiskPaths = []string{cfg.Dir}
		if raftDir != "" {
			tc.DiskPaths = append(tc.DiskPaths, raftDir)
		}
	}
	sources := &ha.AdminSources{Extra: cfg.AdminFrom, Hosts: n.memberHosts(cfg)}
	tc.AllowBackup = sources.Allow
	n.svc = titanic.New(n.st, n.b, tc)

	if n.rep != nil {
		admin := ha.NewAdmin(n.rep, n.b, log)
		if eps := bc.Endpoints; len(eps) > 0 {
			admin.Endpoint = eps[0]
		}
		admin.Sources = sources
		n.b.HandleFrom(tsp.AdminPrefix, admin)
		role, run, err := n.role()
		if err != nil {
			return nil, err
		}
		n.gate.inner = role
		admin.Role = n.gate.role
		admin.Merge = n.svc.Merge
		if p := n.pair.Load(); p != nil {
			admin.Forget = p.ForgetPeerSplit
			admin.Pair = p
		}
		vc := ha.VersionsConfig{Endpoint: n.clientEndpoint, Release: cfg.Release, Logger: log, Interval: cfg.VersionInterval, Protocol: cfg.VersionReport}
		if pc := cfg.Pair; pc != nil {
			vc.Pair, vc.PeerID, vc.PeerEndpoint, vc.PeerCurve = true, pc.PeerID, pc.PeerEndpoint, pc.PeerCurve
		} else {
			admin.NonvoterFirst = true // see ha.Admin
		}
		if cfg.Pair == nil && cfg.Broker.Curve != nil {
			kp := cfg.Broker.Curve.Server
			vc.Curve = &kp
		}
		admin.Versions = ha.NewVersions(n.rep, vc)
		n.roles = append(n.roles, run, admin.Versions.Run)
	}
	if n.rep == nil && n.bolt != nil {
		// A single broker whose store stopped writing (a commit's last
		// fdatasync failed: its outcome is in doubt) stops, with an
		// error: it refused every submit while /healthz said active, so
		// neither a load balancer nor a supervisor moved on. Started
		// again, it reads the file as the disk holds it. (A replica's
		// node stops on its failed apply.)
		st := n.bolt
		n.roles = append(n.roles, func(ctx context.Context) error {
			select {
			case <-ctx.Done():
				return nil
			case <-st.WritesStopped():
				return fmt.Errorf("%w: the store stopped writing after a commit whose last fdatasync failed (its outcome is in doubt); start the broker again to reopen it", store.ErrClosed)
			}
		})
	}
	n.b.Handle(tsp.Prefix, n.svc)
	n.b.HandleFrom(tsp.SvcBackup, n.svc) // AllowBackup reads Request.From
	n.b.SetSource(n.svc)
	n.b.SetGate(n.gate)
	if cfg.HTTP != nil {
		src := &opsSources{bolt: n.bolt, st: n.st, svc: n.svc, b: n.b, rep: n.rep, gate: n.gate, mode: n.opsMode()}
		n.serveHTTP, err = startHTTP(*cfg.HTTP, src, hooks, log)
		if err != nil {
			return nil, err
		}
		n.roles = append(n.roles, n.serveHTTP)
	}
	if pub != nil {
		n.roles = append(n.roles, pub.Run) // a failure stops the node, with its error
		// "broker ready" waits for its bind too: it was said, then the
		// node stopped for a taken port (found by an outside-in tester).
		n.readies = append(n.readies, pub.Ready())
	}
	return n, nil
}

// workers reports the broker's workers per service (titanic.stats); the
// service calls it from a reader goroutine, never from the broker loop.
func (n *Node) workers(ctx context.Context) (map[string]titanic.WorkerCount, error) {
	st, err := n.b.Stats(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]titanic.WorkerCount, len(st.Services))
	for _, s := range st.Services {
		out[s.Name] = titanic.WorkerCount{Workers: s.Workers, Idle: s.Idle, Busy: s.Busy}
	}
	return out, nil
}

// role makes the replicated role: the broker's gate and its loop.
func (n *Node) role() (broker.Gate, func(context.Context) error, error) {
	if n.cfg.Pair == nil {
		g := ha.NewGroup(n.rep, n.svc, n.log)
		return g, g.Run, nil
	}
	pc := *n.cfg.Pair
	_, pc.PeerTag = pairTags(pc.Star.Role)
	if pc.ForkDir == "" {
		pc.ForkDir = filepath.Join(n.cfg.Dir, "forks")
	}
	if pc.Logger == nil {
		pc.Logger = n.log
	}
	if m := n.cfg.Broker.MaxMsgSize; m > 0 && pc.HandoverBytes == 0 {
		pc.HandoverBytes = int(m / 2)
	}
	p, err := ha.NewPair(n.rep, n.svc, pc)
	if err != nil {
		return nil, nil, err
	}
	n.pair.Store(p)
	return p, p.Run, nil
}

// pairTags returns the mint tag of a pair node of role, and its peer's
// (titanic.Config MintTag).
func pairTags(role binarystar.Role) (own, peer byte) {
	if role == binarystar.Primary {
		return ha.PrimaryTag, ha.BackupTag
	}
	return ha.BackupTag, ha.PrimaryTag
}

// maybeElsewhere is the service's MaybeElsewhere: the pair's, once made.
// memberHosts returns the hosts of the cluster's members as this node
// knows them now: the raft configuration's addresses, the initial peers,
// and a pair's peer (its raft address and its client endpoint).
func (n *Node) memberHosts(cfg Config) func() []string {
	var fixed []string
	if rc := cfg.Raft; rc != nil {
		for _, p := range rc.Peers {
			fixed = append(fixed, p.Addr)
		}
	}
	if pc := cfg.Pair; pc != nil {
		fixed = append(fixed, pc.PeerAddr, strings.TrimPrefix(pc.PeerEndpoint, "tcp://"))
	}
	return func() []string {
		hosts := slices.Clone(fixed)
		if n.rep != nil {
			if ms, err := n.rep.Members(); err == nil {
				for _, m := range ms {
					hosts = append(hosts, m.Addr)
				}
			}
		}
		return hosts
	}
}

func (n *Node) maybeElsewhere(id store.ID) bool {
	p := n.pair.Load()
	return p != nil && p.MaybeElsewhere(id)
}

// Mode names the node's mode for logs: single, group, pair-primary or
// pair-backup.
func (n *Node) Mode() string {
	switch {
	case n.cfg.Raft == nil:
		return "single"
	case n.cfg.Pair == nil:
		return "group"
	case n.cfg.Pair.Star.Role == binarystar.Primary:
		return "pair-primary"
	}
	return "pair-backup"
}

func (n *Node) opsMode() string {
	switch {
	case n.cfg.Raft == nil:
		return ops.ModeSingle
	case n.cfg.Pair == nil:
		return ops.ModeGroup
	}
	return ops.ModePair
}

// Run runs the node until ctx is done (then drains, unless NoDrain, and
// stops) or one of its parts fails; it returns the first error. A single
// node first rebuilds its queues from the store (titanic.Service.Recover).
// The store and the replica are closed when Run returns.
func (n *Node) Run(ctx context.Context) error {
	defer n.Close()
	if n.rep == nil {
		if err := n.svc.Recover(ctx); err != nil {
			if ctx.Err() != nil {
				// Stopped (SIGINT, SIGTERM) while it rebuilt its queues,
				// which takes a while on a large store: nothing served,
				// nothing to drain, a clean stop.
				n.log.Info("broker stopped while it recovered its queues: it did not start")
				return nil
			}
			return err
		}
	}
	// The broker and the service outlive ctx by the drain: run ends
	// after it.
	run, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	go func() {
		select {
		case <-ctx.Done():
		case <-run.Done():
			return
		}
		if !n.cfg.NoDrain {
			n.drain()
		}
		cancel()
	}()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = n.svc.Run(run) }()
	roleErr := make(chan error, len(n.roles))
	for _, r := range n.roles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r(run); err != nil {
				roleErr <- err
				cancel()
			}
		}()
	}
	go func() {
		for _, r := range n.readies {
			select {
			case <-r:
			case <-run.Done():
				return
			}
		}
		select {
		case <-n.b.Ready():
			// The one start-up "ready" line (the broker's own is Debug).
			attrs := []any{"endpoints", n.b.Endpoints(), "data", n.path, "mode", n.Mode()}
			if c := n.cfg.Broker.Curve; c != nil {
				attrs = append(attrs, "curve", true, "server_key", c.Server.Public)
			}
			n.log.Info("broker ready", attrs...)
		case <-run.Done():
		}
	}()
	err := n.b.Run(run)
	// The broker is gone: stop the service, which commits what it holds.
	cancel()
	wg.Wait()
	select {
	case rerr := <-roleErr:
		return rerr
	default:
	}
	if err != nil {
		return err
	}
	if cerr := n.Close(); cerr != nil {
		return cerr
	}
	n.log.Info("broker stopped")
	return nil
}

// Close closes the replica and the store; Run does it when it returns.
// Call it only for a node that never ran.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		if n.rep != nil {
			n.closeErr = n.rep.Close()
		}
		if n.bolt != nil {
			n.closeErr = errors.Join(n.closeErr, n.bolt.Close())
		}
	})
	return n.closeErr
}

// Ready is closed once the broker is bound and serving.
func (n *Node) Ready() <-chan struct{} { return n.b.Ready() }

// clientEndpoint is the first endpoint the broker bound ("" before).
func (n *Node) clientEndpoint() string {
	if eps := n.b.Endpoints(); len(eps) > 0 {
		return eps[0]
	}
	return ""
}

// Endpoints returns the broker's bound endpoints (after Ready).
func (n *Node) Endpoints() []string { return n.b.Endpoints() }

// Active reports whether the node serves clients now: always for a
// single node not draining; in a pair or group, while its role is active.
func (n *Node) Active() bool { return !n.gate.draining.Load() && n.gate.Active() }

// Service returns the node's titanic service.
func (n *Node) Service() *titanic.Service { return n.svc }

// Broker returns the node's broker.
func (n *Node) Broker() *broker.Broker { return n.b }

// Bolt returns the node's local bbolt store.
func (n *Node) Bolt() *store.BoltStore { return n.bolt }

// Store returns the store the service uses: the replica, the wrapped
// store (Config.WrapStore) or the bbolt store.
func (n *Node) Store() store.Store { return n.st }

// Replica returns the node's raft replica (nil on a single node).
func (n *Node) Replica() *replica.Node { return n.rep }
