package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/ha"
)

func runBroker(e env) error {
	bd, td := broker.DefaultConfig(), titanic.DefaultConfig()
	fs := newFlags(e, "broker", "[flags]")
	data := fs.String("data", "./titanic-data", "directory of the data file (created if missing)")
	listen := fs.String("listen", "tcp://127.0.0.1:5555", "endpoints to bind, comma-separated")
	hb := fs.Duration("heartbeat", bd.HeartbeatInterval, "MDP heartbeat interval")
	liveness := fs.Int("liveness", bd.HeartbeatLiveness, "missed heartbeats before a worker is gone")
	lease := fs.Duration("lease-timeout", bd.LeaseTimeout, "how long a busy worker that does not heartbeat may stay silent")
	expiry := fs.Duration("request-expiry", bd.RequestExpiry, "how long a plain MDP request waits for a worker")
	attempts := fs.Int("max-attempts", td.MaxAttempts, "dispatches per ticket before it fails")
	noWorker := fs.Duration("no-worker-timeout", td.NoWorkerTimeout, "how long a ticket waits for its service to have a worker")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	maxMsg := fs.Int64("max-msg-size", bd.MaxMsgSize, "largest message accepted; a peer sending more is disconnected (negative: no limit)")
	maxBody := fs.Int("max-body", td.MaxBody, "largest request body accepted, in bytes (400 beyond)")
	inflight := fs.Int("per-client-inflight", td.PerClientInflight, "requests one client may have waiting for an answer (500 busy beyond)")
	rate := fs.Float64("submit-rate", 0, "submits per second one client may make, in bursts of as many (0: no limit; 500 busy beyond)")
	quota := fs.Int64("disk-quota", 0, "refuse submits while the data file holds this many bytes (0: no quota)")
	doneTTL := fs.Duration("done-ttl", td.DoneTTL, "delete finished tickets nobody closed this long after they finished (negative: never)")
	backupDir := fs.String("backup-dir", "", "where titanic.backup writes snapshots (default DATA/backups)")
	drain := fs.Duration("drain-timeout", 5*time.Second, "on SIGTERM/SIGINT, how long to wait for accepted work to be committed and answered")
	var rf raftFlags
	rf.add(fs)
	rf.pair.listen, rf.pair.bindFlag, rf.pair.advFlag = listen, &rf.bind, &rf.advertise
	if err := parseFlags(fs, e.args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if err := rf.check(); err != nil {
		return err
	}
	log, err := newLogger(e, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*data, 0o750); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	path := filepath.Join(*data, "titanic.db")
	bolt, err := store.Open(path, store.Options{Logger: log})
	if err != nil {
		return fmt.Errorf("open store %s: %w", path, err)
	}
	defer bolt.Close()

	bc := bd
	bc.Endpoints = splitList(*listen)
	bc.HeartbeatInterval, bc.HeartbeatLiveness = *hb, *liveness
	bc.LeaseTimeout, bc.RequestExpiry = *lease, *expiry
	bc.MaxMsgSize = *maxMsg
	bc.Logger = log
	b, err := broker.New(bc)
	if err != nil {
		return err
	}

	// The broker and the service outlive the signal by the drain: ctx ends
	// after it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gate := &drainGate{}
	var (
		st    store.Store = bolt
		roles []func(context.Context) error
		node  *replica.Node
	)
	tc := td
	tc.MaxAttempts, tc.NoWorkerTimeout, tc.Logger = *attempts, *noWorker, log
	tc.MaxBody, tc.PerClientInflight, tc.SubmitRate, tc.Quota = *maxBody, *inflight, *rate, *quota
	tc.DoneTTL, tc.BackupDir = *doneTTL, *backupDir
	if tc.BackupDir == "" {
		tc.BackupDir = filepath.Join(*data, "backups")
	}
	if rf.enabled() {
		node, err = replica.Open(bolt, rf.replicaConfig(*data, log))
		if err != nil {
			return err
		}
		defer node.Close()
		st = node
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
		role, run, err := rf.role(node, svc, log)
		if err != nil {
			return err
		}
		gate.inner = role
		roles = append(roles, run)
	}
	b.Handle(titanic.Prefix, svc)
	b.SetSource(svc)
	b.SetGate(gate)
	go func() {
		select {
		case <-e.ctx.Done():
		case <-ctx.Done():
			return
		}
		drainBroker(gate, svc, *drain, log)
		cancel()
	}()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = svc.Run(ctx) }()
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

// defaultTimeout is the per-try timeout of client commands.
const defaultTimeout = 2500 * time.Millisecond

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
