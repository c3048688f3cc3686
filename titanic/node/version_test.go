package node_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/internal/nodetest"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic/node"
	"github.com/titanicmq/titanic/titanic/tsp"
	"github.com/titanicmq/titanic/worker"
)

// freeAddr returns an address whose port stays this test's until it ends:
// a port picked by listening and closing may be handed out again, to this
// test or another, before its node binds it.
func freeAddr(t *testing.T) string {
	t.Helper()
	return strings.TrimPrefix(harness.ReservedEndpoint(t), "tcp://")
}

// groupConfigs makes the configs of a 3-node group in one process.
func groupConfigs(t *testing.T) []node.Config {
	var peers []replica.Peer
	for i := range 3 {
		peers = append(peers, replica.Peer{ID: fmt.Sprintf("n%d", i+1), Addr: freeAddr(t)})
	}
	var cfgs []node.Config
	for _, p := range peers {
		cfg := nodetest.Config(t.TempDir())
		cfg.Raft = &replica.Config{
			ID: p.ID, Bind: p.Addr, Peers: peers, Bootstrap: true,
			HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
			LeaderLeaseTimeout: 150 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
			Logger: nodetest.Quiet,
		}
		cfg.Service.NoWorkerTimeout = 200 * time.Millisecond
		cfg.VersionInterval = 50 * time.Millisecond
		cfgs = append(cfgs, cfg)
	}
	return cfgs
}

// until retries f until it returns nil or within has passed.
func until(t *testing.T, within time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A feature that writes a new kind of op (retry) is refused while one
// member reports an older version (or none), and works once that member
// runs this build: the leader raises the cluster version from the
// members' reports, and `titanic.cluster` shows each member's version and
// the cluster's.
func TestClusterVersionFollowsUpgrade(t *testing.T) {
	cfgs := groupConfigs(t)
	cfgs[2].VersionReport = 1 // n3 runs an older release
	nodes := make([]*nodetest.Node, 3)
	var eps []string
	for i, cfg := range cfgs {
		nodes[i] = nodetest.Start(t, cfg)
		eps = append(eps, nodes[i].Endpoint())
	}
	c, err := client.New(client.Config{Brokers: eps, Timeout: time.Second, Retries: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	ticket, err := c.Submit(ctx, "nobody", [][]byte{[]byte("job")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	until(t, 10*time.Second, "ticket failed for want of a worker", func() error {
		st, err := c.Status(ctx, ticket)
		if err == nil && st.State != "failed" {
			err = fmt.Errorf("state %s", st.State)
		}
		return err
	})

	// Give the leader many report rounds: n3's report keeps it at 1.
	until(t, 10*time.Second, "the leader heard every member", func() error {
		kv, err := versionOf(ctx, c)
		if err == nil && strings.Count(kv, "reported") != 2 {
			err = fmt.Errorf("leader's view: %s", kv)
		}
		return err
	})
	if err := c.Retry(ctx, ticket); !errors.Is(err, client.ErrUnsupported) {
		t.Fatalf("retry with n3 on an older version: %v, want ErrUnsupported", err)
	}
	if kv, _ := versionOf(ctx, c); !strings.Contains(kv, "cluster=1") ||
		!strings.Contains(kv, "n3,1,reported") && !strings.Contains(kv, "id=n3 protocol=1 ") {
		t.Fatalf("leader's version view: %s, want cluster=1 and n3 at 1", kv)
	}

	// A worker for the service now: the failed ticket stays failed.
	m, err := worker.NewMulti([][]string{{eps[0]}, {eps[1]}, {eps[2]}},
		worker.Config{Service: "nobody", HeartbeatInterval: 100 * time.Millisecond, ReconnectDelay: 50 * time.Millisecond, Logger: nodetest.Quiet},
		func(_ context.Context, req [][]byte) ([][]byte, error) {
			return [][]byte{append([]byte("done:"), req[0]...)}, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	wdone := make(chan error, 1)
	go func() { wdone <- m.Run(wctx) }()
	defer func() { wcancel(); <-wdone }()

	// Upgrade n3: same data, this build's version.
	nodes[2].Stop()
	cfgs[2].VersionReport = 0
	cfgs[2].Broker.Endpoints = []string{eps[2]} // where the client looks for it
	nodes[2] = nodetest.Start(t, cfgs[2])
	// The retried ticket fails again unless the serving node has a worker
	// for it within the no-worker timeout: wait for the worker first.
	waitWorker := func() {
		until(t, 20*time.Second, "the serving node has the worker", func() error {
			rep, err := c.Request(ctx, "mmi.service", [][]byte{[]byte("nobody")})
			if err == nil && string(rep[0]) != "200" {
				err = fmt.Errorf("mmi.service: %q", rep)
			}
			return err
		})
	}
	waitWorker()
	until(t, 20*time.Second, "retry accepted after the last member's upgrade", func() error {
		waitWorker() // a new leader may have been elected meanwhile
		return c.Retry(ctx, ticket)
	})
	rep, err := c.Reply(ctx, ticket, client.ReplyOptions{Wait: true})
	if err != nil || len(rep) != 1 || string(rep[0]) != "done:job" {
		t.Fatalf("reply of the retried ticket: %q %v", rep, err)
	}
	kv, err := versionOf(ctx, c)
	cur := store.OpsRecordVersion
	if err != nil || !strings.Contains(kv, fmt.Sprintf("cluster=%d", cur)) {
		t.Fatalf("leader's view after the upgrade: %s %v", kv, err)
	}
	rep, err = c.Request(ctx, tsp.SvcCluster, [][]byte{{}})
	if err != nil || !strings.Contains(fmt.Sprintf("%q", rep), fmt.Sprintf("cluster_version=%d", cur)) || !strings.Contains(fmt.Sprintf("%q", rep), fmt.Sprintf("protocol=%d", cur)) {
		t.Fatalf("titanic.cluster answer %q %v lacks the versions", rep, err)
	}
}

// versionOf asks the serving node's titanic.cluster.version.
func versionOf(ctx context.Context, c *client.Client) (string, error) {
	rep, err := c.Request(ctx, tsp.SvcVersion, [][]byte{{}})
	if err != nil {
		return "", err
	}
	if len(rep) == 0 || string(rep[0]) != "200" {
		return "", fmt.Errorf("answer %q", rep)
	}
	var b strings.Builder
	for _, f := range rep[1:] {
		b.WriteString(string(f) + " ")
	}
	return b.String(), nil
}
