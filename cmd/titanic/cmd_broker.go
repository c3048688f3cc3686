package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	berrors "go.etcd.io/bbolt/errors"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/broker/curve"
	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/cmd/titanic/config"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/node"
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
	if e.parseOnly {
		// Before nodeConfig, which reads key files.
		return errParseOnly
	}
	if e.env == nil {
		// The process's own environment, which the runtime read GOGC
		// and GOMEMLIMIT from; an environment a test gives (e.env) is
		// not the one that decides.
		tuneGC(log)
	}
	// Before anything is created: a taken port or a --data that is a
	// file said naming the flag, not as what the store or libzmq met.
	if err := checkDataDir(cfg.Store.Dir); err != nil {
		return err
	}
	nc, sec, err := nodeConfig(e, cfg, rf, log)
	if err != nil {
		return err
	}
	if stopped, err := waitForStore(e.ctx, &nc, log); stopped || err != nil {
		return err
	}
	// After the wait for a broker being stopped on this --data, which
	// holds the port too until it exits.
	if err := checkListen(e.ctx, cfg.Broker.Listen); err != nil {
		return err
	}
	n, err := node.New(nc)
	if err != nil {
		return startError(err)
	}
	if e.ctx.Err() != nil {
		// Stopped while the store opened: nothing served, nothing to
		// drain.
		if err := n.Close(); err != nil {
			return err
		}
		log.Info("broker stopped before it started")
		return nil
	}
	if sec != nil {
		ctx, cancel := context.WithCancel(context.WithoutCancel(e.ctx))
		defer cancel()
		go sec.reloadOnHUP(ctx)
	}
	return n.Run(e.ctx)
}

// waitForStore waits, up to the store's lock timeout, for another process
// (a broker being stopped, a titanic check) to let go of the data file,
// heeding ctx as the store's own wait does not: a SIGINT or SIGTERM
// meanwhile stops the broker at once, as a stop with nothing to drain
// (stopped true, a nil error: exit 0). The store's open then waits only
// for what is left of the timeout.
func waitForStore(ctx context.Context, nc *node.Config, log *slog.Logger) (stopped bool, err error) {
	path := filepath.Join(nc.Dir, "titanic.db")
	timeout := nc.Store.LockTimeout
	if timeout <= 0 {
		timeout = store.DefaultLockTimeout
	}
	start := time.Now()
	err = store.WaitUnlocked(ctx, path, timeout, func() {
		log.Info("waiting for the data file's lock: another process holds it (a broker, titanic check or compact)", "path", path, "lock_timeout", timeout)
	})
	if err != nil || ctx.Err() != nil {
		log.Info("broker stopped while waiting for the data file's lock: it did not start", "path", path)
		return true, nil
	}
	nc.Store.LockTimeout = max(timeout-time.Since(start), 100*time.Millisecond)
	return false, nil
}

// checkDataDir refuses a --data that names a file (the data file itself,
// as titanic check --file takes it): the store would fail to make the
// directory with "mkdir ...: not a directory".
func checkDataDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil || fi.IsDir() {
		return nil // made if missing; other errors are the store's to say
	}
	hint := ""
	if filepath.Base(dir) == "titanic.db" {
		hint = fmt.Sprintf(": --data %s", filepath.Dir(dir))
	}
	return fmt.Errorf("--data %s (store.dir) is a file: --data wants the directory that holds the data file titanic.db%s", dir, hint)
}

// checkListen binds each TCP endpoint of --listen for a moment, so that a
// port another process holds is said at once, naming --listen, before the
// store is opened (libzmq's "bind ...: address already in use" came
// after, and named no flag). A taken port is tried again for up to
// listenWait (a broker stopping lets go of the data file, then of its
// port). A port taken between this and the broker's bind still fails
// there.
func checkListen(ctx context.Context, eps []string) error {
	for _, ep := range eps {
		addr, ok := strings.CutPrefix(ep, "tcp://")
		if !ok {
			continue
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil || port == "*" || port == "0" {
			continue // validated already; any port cannot be taken
		}
		if host == "*" {
			host = ""
		}
		l, err := net.Listen("tcp", net.JoinHostPort(host, port))
		for deadline := time.Now().Add(listenWait); errors.Is(err, syscall.EADDRINUSE) && time.Now().Before(deadline) && ctx.Err() == nil; {
			time.Sleep(50 * time.Millisecond)
			l, err = net.Listen("tcp", net.JoinHostPort(host, port))
		}
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("--listen %s (broker.listen): address already in use: another process listens there (another broker?): stop it, or give this one another --listen", ep)
			}
			return fmt.Errorf("--listen %s (broker.listen): %w", ep, err)
		}
		_ = l.Close()
	}
	return nil
}

// listenWait is how long checkListen waits for a taken port.
const listenWait = time.Second

// startError is the error of a node that did not start: a store locked by
// another process gets titanic check's hint.
func startError(err error) error {
	if errors.Is(err, berrors.ErrTimeout) {
		// bbolt's only timeout: the file lock, which another process holds.
		return fmt.Errorf("%w (is a broker running on it? stop it, or give this one another --data)", err)
	}
	return err
}

// nodeConfig turns the broker's settings into the node's assembly, and
// returns the CURVE material (nil when security is off) whose allowlist
// SIGHUP reloads.
func nodeConfig(e env, cfg config.Config, rf *raftFlags, log *slog.Logger) (node.Config, *security, error) {
	nc := node.Config{Dir: cfg.Store.Dir, Logger: log, DrainTimeout: cfg.Broker.DrainTimeout, NotifyListen: cfg.Notify.Listen, Release: Version}
	for _, a := range cfg.Security.AdminFrom {
		p, err := config.ParseAdminFrom(a) // validated: cannot fail
		if err != nil {
			return nc, nil, err
		}
		nc.AdminFrom = append(nc.AdminFrom, p)
	}
	nc.Store = store.Options{LockTimeout: cfg.Store.LockTimeout, MaxBatch: cfg.Store.MaxBatch, MaxBatchBytes: int(cfg.Store.MaxBatchBytes), NoSync: cfg.Store.NoSync, Linger: cfg.Store.Linger}

	bc := broker.DefaultConfig()
	bc.Endpoints = cfg.Broker.Listen
	bc.HeartbeatInterval, bc.HeartbeatLiveness = cfg.Broker.Heartbeat, cfg.Broker.Liveness
	bc.LeaseTimeout, bc.RequestExpiry = cfg.Broker.LeaseTimeout, cfg.Broker.RequestExpiry
	bc.MaxQueue = cfg.Limits.MaxQueue
	bc.MaxMsgSize = limit(int64(cfg.Limits.MaxMessageSize))
	bc.Logger = log
	if cfg.Peering.Name != "" {
		pc := &broker.PeeringConfig{Name: cfg.Peering.Name, CloudListen: cfg.Peering.CloudListen, StateListen: cfg.Peering.StateListen}
		for _, p := range cfg.Peering.Peers {
			bp := broker.Peer{Name: p.Name, Cloud: p.Cloud, State: p.State}
			if p.Key != "" {
				k, err := curve.LoadPublic(p.Key)
				if err != nil {
					return nc, nil, fmt.Errorf("peering.peers: peer %s: key: %w", p.Name, err)
				}
				bp.Public = k
			}
			pc.Peers = append(pc.Peers, bp)
		}
		bc.Peering = pc
	}
	sec, err := loadSecurity(cfg, log)
	if err != nil {
		return nc, nil, err
	}
	if sec != nil {
		// Said at every start: an operator who asked for CURVE must not
		// believe these links covered.
		if bc.Peering != nil && len(bc.Peering.Peers) > 0 && bc.Peering.Peers[0].Public == "" {
			log.Warn("security.curve does not cover the peering links: no peer has a key (peering.peers' key), so their cloud and state endpoints take plain connections, and a job sent to the cloud endpoint under a peer's name is served; give every peer its key, or keep them on a private network", "cloud", bc.Peering.CloudListen, "state", bc.Peering.StateListen)
		}
		if nc.NotifyListen != "" {
			log.Warn("security.curve does not cover the notification endpoint: ticket events go out in plain text to any subscriber", "notify", nc.NotifyListen)
		}
		bc.Curve = &broker.CurveConfig{Server: sec.keys, Allow: sec.allow.Allowed}
		if sec.pairCurve != nil {
			// The pair peer is a client of this broker too: it hands its
			// work over here after a split brain.
			peer := sec.pairCurve.PeerPublic
			bc.Curve.Allow = func(k string) bool { return k == peer || sec.allow.Allowed(k) }
		}
	}
	nc.Broker = bc

	tc := titanic.DefaultConfig()
	tc.Logger = log // DefaultConfig's is slog.Default(): the configured format and level are ours
	tc.MaxAttempts, tc.NoWorkerTimeout = cfg.Queue.MaxAttempts, limit(cfg.Queue.NoWorkerTimeout)
	tc.BackoffBase, tc.BackoffMax = cfg.Queue.BackoffBase, cfg.Queue.BackoffMax
	if len(cfg.Queue.Services) > 0 {
		tc.ServiceRetry = make(map[string]store.RetryPolicy, len(cfg.Queue.Services))
		for _, r := range cfg.Queue.Services {
			tc.ServiceRetry[r.Name] = store.RetryPolicy{MaxAttempts: r.MaxAttempts, Base: r.BackoffBase, Max: r.BackoffMax}
		}
	}
	tc.Readers = cfg.Queue.Readers
	tc.MaxQueuedOps, tc.MaxQueuedReads = cfg.Limits.MaxQueuedOps, cfg.Limits.MaxQueuedReads
	tc.MaxWaiters, tc.BodyCache = cfg.Limits.MaxWaiters, int(cfg.Limits.BodyCache)
	tc.MaxBody, tc.PerClientInflight = limit(int(cfg.Limits.MaxBody)), limit(cfg.Limits.PerClientInflight)
	tc.SubmitRate, tc.SubmitBurst, tc.Quota = limit(cfg.Limits.SubmitRate), cfg.Limits.SubmitBurst, limit(int64(cfg.Limits.DiskQuota))
	tc.DiskReserve = limit(int64(cfg.Limits.DiskReserve))
	tc.DoneTTL, tc.SweepInterval = limit(cfg.Retention.DoneTTL), cfg.Retention.SweepInterval
	tc.BackupDir = cfg.Store.BackupDir // "": the node's data directory's backups/
	tc.PresenceTimeout = cfg.Broker.PresenceTimeout
	if cfg.Queue.MaxBatch != 0 {
		log.Warn("queue.max_batch is ignored: the store's commit pipeline is the only one; set store.max_batch (ops) and store.max_batch_bytes", "queue.max_batch", cfg.Queue.MaxBatch)
	}
	nc.Service = tc

	if rf.enabled() {
		rc := rf.replicaConfig(nc.Dir, log)
		nc.Raft = &rc
		if rf.pair.role != "" {
			if err := rf.pair.checkPeerListen(cfg.Broker.Listen); err != nil {
				return nc, nil, err
			}
			if sec != nil {
				rf.pair.curve = sec.pairCurve
			}
			pc := rf.pair.pairConfig()
			nc.Pair = &pc
		}
	} else if stallAtReplyOn(e.environ()) {
		// Not replicated: the store to wrap is the bbolt store.
		nc.WrapStore = func(st store.Store) store.Store { return &stallAtReply{BoltStore: st.(*store.BoltStore), log: log} }
	}
	if cfg.HTTP.Listen != "" {
		hc := &node.HTTPConfig{Listen: cfg.HTTP.Listen, Token: cfg.HTTP.Token, Version: Version, Optional: httpDefault(e, cfg)}
		if cfg.HTTP.TokenFile != "" {
			b, err := os.ReadFile(cfg.HTTP.TokenFile)
			if err != nil {
				return nc, nil, fmt.Errorf("http.token_file: %w", err)
			}
			hc.Token = strings.TrimSpace(string(b))
			// An empty file would leave the API without a token: open
			// to all, on any listener.
			if hc.Token == "" || strings.ContainsAny(hc.Token, " \t\r\n") {
				return nc, nil, fmt.Errorf("http.token_file %s: want one bearer token (no white space inside), found %q", cfg.HTTP.TokenFile, hc.Token)
			}
		}
		nc.HTTP = hc
	}
	return nc, sec, nil
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

// brokerConfig reads the broker's settings: defaults, then the --config
// file, then TITANIC_* variables, then the flags given.
func brokerConfig(e env, name string) (config.Config, error) {
	fs := newFlags(e, name, "[flags]   (settings: defaults < --config FILE < TITANIC_* environment < flags)")
	def := config.Default()
	def.RegisterFlags(fs)
	// The plain parse: under parseOnlyEnv the command line is checked up
	// to the resolved configuration (bad values included), by the callers.
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
	if e.parseOnly {
		return errParseOnly
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

// httpDefault reports whether the HTTP listener is the default one, not
// asked for by a flag, the environment or the config file (a file that
// sets the default address counts as the default).
func httpDefault(e env, cfg config.Config) bool {
	if cfg.HTTP.Listen != config.Default().HTTP.Listen {
		return false
	}
	for _, a := range e.args {
		if a == "--" {
			break
		}
		if n := strings.TrimLeft(a, "-"); n != a && (n == "http-listen" || strings.HasPrefix(n, "http-listen=")) {
			return false
		}
	}
	for _, kv := range e.environ() {
		if strings.HasPrefix(kv, "TITANIC_HTTP_LISTEN=") {
			return false
		}
	}
	return true
}
