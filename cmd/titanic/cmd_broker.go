package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/cmd/titanic/config"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/ha"
	"github.com/titanicmq/titanic/titanic/ha/probe"
	"github.com/titanicmq/titanic/titanic/notify"
	"github.com/titanicmq/titanic/titanic/ops"
)

func runBroker(e env) error {
	cfg, err := brokerConfig(e, "broker")
	if err != nil {
		return err
	}
	rf := raftFlagsOf(cfg)
	if err := rf.check(); err != nil {
		return err
	}
	log, err := newLogger(e, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	data := cfg.Store.Dir
	if err := os.MkdirAll(data, 0o750); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	path := filepath.Join(data, "titanic.db")
	hooks := &latencyHooks{}
	bolt, err := store.Open(path, store.Options{Logger: log, LockTimeout: cfg.Store.LockTimeout, MaxBatch: cfg.Store.MaxBatch, MaxBatchBytes: int(cfg.Store.MaxBatchBytes), NoSync: cfg.Store.NoSync, ObserveCommit: hooks.fsync})
	if err != nil {
		return fmt.Errorf("open store %s: %w", path, err)
	}
	defer bolt.Close()

	bd, td := broker.DefaultConfig(), titanic.DefaultConfig()
	bc := bd
	bc.Endpoints = cfg.Broker.Listen
	bc.HeartbeatInterval, bc.HeartbeatLiveness = cfg.Broker.Heartbeat, cfg.Broker.Liveness
	bc.LeaseTimeout, bc.RequestExpiry = cfg.Broker.LeaseTimeout, cfg.Broker.RequestExpiry
	bc.MaxQueue = cfg.Limits.MaxQueue
	bc.MaxMsgSize = limit(int64(cfg.Limits.MaxMessageSize))
	bc.Logger = log
	if cfg.Peering.Name != "" {
		pc := &broker.PeeringConfig{Name: cfg.Peering.Name, CloudListen: cfg.Peering.CloudListen, StateListen: cfg.Peering.StateListen}
		for _, p := range cfg.Peering.Peers {
			pc.Peers = append(pc.Peers, broker.Peer{Name: p.Name, Cloud: p.Cloud, State: p.State})
		}
		bc.Peering = pc
	}
	sec, err := loadSecurity(cfg, log)
	if err != nil {
		return err
	}
	if sec != nil {
		bc.Curve = &broker.CurveConfig{Server: sec.keys, Allow: sec.allow.Allowed}
		if sec.pairCurve != nil {
			// The pair peer is a client of this broker too: it hands its
			// work over here after a split brain.
			peer := sec.pairCurve.PeerPublic
			bc.Curve.Allow = func(k string) bool { return k == peer || sec.allow.Allowed(k) }
		}
	}
	b, err := broker.New(bc)
	if err != nil {
		return err
	}

	tc := td
	tc.Logger = log
	tc.ObserveCommit = hooks.commit
	tc.MaxAttempts, tc.NoWorkerTimeout = cfg.Queue.MaxAttempts, cfg.Queue.NoWorkerTimeout
	tc.Readers = cfg.Queue.Readers
	tc.MaxQueuedOps, tc.MaxQueuedReads = cfg.Limits.MaxQueuedOps, cfg.Limits.MaxQueuedReads
	tc.MaxWaiters, tc.BodyCache = cfg.Limits.MaxWaiters, int(cfg.Limits.BodyCache)
	tc.MaxBody, tc.PerClientInflight = limit(int(cfg.Limits.MaxBody)), limit(cfg.Limits.PerClientInflight)
	tc.SubmitRate, tc.SubmitBurst, tc.Quota = limit(cfg.Limits.SubmitRate), cfg.Limits.SubmitBurst, limit(int64(cfg.Limits.DiskQuota))
	tc.DoneTTL, tc.SweepInterval = limit(cfg.Retention.DoneTTL), cfg.Retention.SweepInterval
	tc.BackupDir = cfg.Store.BackupDir
	if tc.BackupDir == "" {
		tc.BackupDir = filepath.Join(data, "backups")
	}
	drain := cfg.Broker.DrainTimeout
	tc.PresenceTimeout = cfg.Broker.PresenceTimeout
	if cfg.Queue.MaxBatch != 0 {
		log.Warn("queue.max_batch is ignored: the store's commit pipeline is the only one; set store.max_batch (ops) and store.max_batch_bytes", "queue.max_batch", cfg.Queue.MaxBatch)
	}
	var pub *notify.Publisher
	if cfg.Notify.Listen != "" {
		pub = notify.New(cfg.Notify.Listen, log)
		tc.Notifier = pub
	}
	// The broker and the service outlive the signal by the drain: ctx ends
	// after it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gate := &drainGate{}
	tc.Unconfirmed = gate.Refusal
	var (
		st    store.Store = bolt
		roles []func(context.Context) error
		node  *replica.Node
	)
	if !rf.enabled() && stallAtReplyOn(e.environ()) {
		st = &stallAtReply{BoltStore: bolt, log: log}
	}
	if rf.enabled() {
		node, err = replica.Open(bolt, rf.replicaConfig(data, log))
		if err != nil {
			return err
		}
		defer node.Close()
		st = node
	}
	if rf.pair.role != "" {
		// A pair's tickets carry the node that minted them, so that a
		// node that may lack its peer's split answers "not ready" for
		// the peer's, not "unknown".
		tc.MintTag, _ = rf.pair.tags()
		tc.MaybeElsewhere = rf.pair.maybeElsewhere
	}
	svc := titanic.New(st, b, tc)
	if node == nil {
		if err := svc.Recover(e.ctx); err != nil {
			return err
		}
	} else {
		admin := ha.NewAdmin(node, b, log)
		admin.Endpoint = bc.Endpoints[0]
		b.Handle(ha.AdminPrefix, admin)
		if sec != nil {
			rf.pair.curve = sec.pairCurve
		}
		role, run, err := rf.role(node, svc, data, log)
		if err != nil {
			return err
		}
		gate.inner = role
		admin.Role = gate.role
		admin.Merge = svc.Merge
		if p := rf.pair.pair.Load(); p != nil {
			admin.Forget = p.ForgetPeerSplit
		}
		roles = append(roles, run)
	}
	b.Handle(titanic.Prefix, svc)
	b.SetSource(svc)
	b.SetGate(gate)
	if cfg.HTTP.Listen != "" {
		mode := ops.ModeSingle
		switch {
		case cfg.Raft.Enabled:
			mode = ops.ModeGroup
		case cfg.Pair.Role != "":
			mode = ops.ModePair
		}
		serve, err := startHTTP(ctx, cfg, httpDefault(e, cfg), &opsSources{bolt: bolt, st: st, svc: svc, b: b, node: node, gate: gate, mode: mode}, hooks, log)
		if err != nil {
			return err
		}
		roles = append(roles, func(context.Context) error { return serve() })
	}
	go func() {
		select {
		case <-e.ctx.Done():
		case <-ctx.Done():
			return
		}
		drainBroker(gate, svc, drain, log)
		cancel()
	}()
	if sec != nil {
		go sec.reloadOnHUP(ctx)
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = svc.Run(ctx) }()
	if pub != nil {
		roles = append(roles, pub.Run) // a failure stops the broker, with its error
	}
	roleErr := make(chan error, len(roles))
	for _, run := range roles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil {
				roleErr <- err
				cancel()
			}
		}()
	}
	go func() {
		select {
		case <-b.Ready():
			log.Info("broker ready", "endpoints", b.Endpoints(), "data", path, "mode", rf.mode())
		case <-ctx.Done():
		}
	}()
	err = b.Run(ctx)
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
	log.Info("broker stopped")
	return nil
}

func newLogger(e env, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(e.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(e.stderr, opts)), nil
	}
	return nil, usagef("--log-format %q: want text or json", format)
}

// defaultTimeout is the per-try timeout of client commands: the client
// library's (see client.DefaultTimeout for the margins).
const defaultTimeout = client.DefaultTimeout

// drainGate is the broker's gate: the role's (replicated modes) and, once
// draining, a refusal of every new client request.
type drainGate struct {
	inner    broker.Gate
	draining atomic.Bool
}

func (g *drainGate) Admit(service string) bool {
	if g.draining.Load() {
		return false
	}
	return g.inner == nil || g.inner.Admit(service)
}

func (g *drainGate) Active() bool { return g.inner == nil || g.inner.Active() }

// role answers titanic.cluster.role: whether the node serves and, in a
// pair, its Binary Star state.
func (g *drainGate) role() probe.Answer {
	a := probe.Answer{Serving: !g.draining.Load() && g.Active()}
	if p, ok := g.inner.(*ha.Pair); ok {
		a.Star = strings.ToLower(p.State().String())
	}
	return a
}

func (g *drainGate) Refusal(service string) [][]byte {
	if g.draining.Load() || g.inner == nil {
		return titanic.Refusal(service)
	}
	return g.inner.Refusal(service)
}

// drainBroker stops taking client requests, then waits (up to timeout)
// until every accepted one is committed and answered. Work held by workers
// stays dispatched in the store and is redelivered by the next active
// broker (or this one, restarted).
func drainBroker(g *drainGate, svc *titanic.Service, timeout time.Duration, log *slog.Logger) {
	g.draining.Store(true)
	log.Info("draining: new requests refused", "timeout", timeout)
	deadline := time.Now().Add(timeout)
	for !svc.Idle() {
		if time.Now().After(deadline) {
			log.Warn("drain timeout: stopping with work still in progress (it is redelivered or retried)")
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Let the last answers leave the broker's socket.
	time.Sleep(100 * time.Millisecond)
	log.Info("drained")
}

// brokerConfig reads the broker's settings: defaults, then the --config
// file, then TITANIC_* variables, then the flags given.
func brokerConfig(e env, name string) (config.Config, error) {
	fs := newFlags(e, name, "[flags]   (settings: defaults < --config FILE < TITANIC_* environment < flags)")
	def := config.Default()
	def.RegisterFlags(fs)
	if err := parseFlags(fs, e.args); err != nil {
		return config.Config{}, err
	}
	if fs.NArg() > 0 {
		return config.Config{}, usagef("unexpected argument %q", fs.Arg(0))
	}
	cfg, err := config.Resolve(fs, e.environ())
	if err != nil {
		if errors.Is(err, config.ErrInvalid) {
			return cfg, usageError{err.Error()}
		}
		return cfg, err
	}
	return cfg, nil
}

// runConfig prints the effective configuration, as the broker with the
// same flags, file and environment would use it.
func runConfig(e env) error {
	cfg, err := brokerConfig(e, "config")
	if err != nil {
		return err
	}
	return cfg.Write(e.stdout)
}

// limit carries a limit from the configuration to a package's Config,
// which all encode "no limit" alike: -1 (config.Unlimited; 0 there would
// mean the package's default).
func limit[T int | int64 | float64 | time.Duration](v T) T {
	if config.NoLimit(v) {
		return config.Unlimited
	}
	return v
}
