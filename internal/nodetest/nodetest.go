// Package nodetest runs whole titanic nodes (package titanic/node, the
// assembly `titanic broker` runs) in a test's process: started, waited
// for, and stopped when the test ends, so that tests never wire a broker,
// a service and a store by hand.
package nodetest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/titanic/node"
)

// ReadyTimeout bounds the wait for a node's broker to bind.
const ReadyTimeout = 5 * time.Second

// Quiet is a logger that discards: tests print their failures, not logs.
var Quiet = slog.New(slog.DiscardHandler)

// Config is a test node's: a single node in dir on a free local port
// (tcp://127.0.0.1:*), with a fast broker heartbeat, quiet logs and no
// drain on stop (a stop is a crash for the node's clients). Adjust it
// before Start.
func Config(dir string) node.Config {
	bc := broker.DefaultConfig()
	bc.Endpoints = []string{"tcp://127.0.0.1:*"}
	bc.HeartbeatInterval = 100 * time.Millisecond
	bc.Logger = Quiet
	return node.Config{Dir: dir, Logger: Quiet, Broker: bc, NoDrain: true}
}

// Node is a running node.
type Node struct {
	*node.Node
	tb     testing.TB
	cancel context.CancelFunc
	done   chan error
}

// Start assembles a node from cfg, runs it and waits until its broker is
// bound. The node is stopped when the test ends, if not before.
func Start(tb testing.TB, cfg node.Config) *Node {
	tb.Helper()
	nd, err := node.New(cfg)
	if err != nil {
		tb.Fatalf("assemble node: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{Node: nd, tb: tb, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- nd.Run(ctx) }()
	select {
	case <-nd.Ready():
	case err := <-n.done:
		cancel()
		n.cancel = nil
		tb.Fatalf("node stopped before its broker was ready: %v", err)
	case <-time.After(ReadyTimeout):
		n.Stop()
		tb.Fatalf("node's broker not ready within %s", ReadyTimeout)
	}
	tb.Cleanup(n.Stop)
	return n
}

// Endpoint is the broker's first bound endpoint.
func (n *Node) Endpoint() string { return n.Endpoints()[0] }

// Stop stops the node and waits until Run has returned (its store
// closed); a Run error fails the test. Stop again does nothing.
func (n *Node) Stop() {
	if n.cancel == nil {
		return
	}
	n.cancel()
	n.cancel = nil
	if err := <-n.done; err != nil {
		n.tb.Errorf("node: %v", err)
	}
}
