package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
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
	bc.Logger = log
	b, err := broker.New(bc)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	var (
		st    store.Store = bolt
		roles []func(context.Context) error
		node  *replica.Node
	)
	tc := td
	tc.MaxAttempts, tc.NoWorkerTimeout, tc.Logger = *attempts, *noWorker, log
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
		gate, run, err := rf.role(node, svc, log)
		if err != nil {
			return err
		}
		b.SetGate(gate)
		roles = append(roles, run)
	}
	b.Handle(titanic.Prefix, svc)
	b.SetSource(svc)

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
