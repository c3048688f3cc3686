package node_test

import (
	"context"
	"testing"

	"github.com/titanicmq/titanic/internal/nodetest"
	"github.com/titanicmq/titanic/titanic/node"
)

// A single broker rebuilds its queues from the store in Run
// (Service.Recover) before it serves; a SIGINT or SIGTERM that comes
// meanwhile (a large store takes a while) ended Run with "recover: ...:
// context canceled", exit 1: the very error commit 26ad70f set out to
// end ("a signal during the open stops it as cleanly") (found by a
// review). runBroker looks
// at its context only between node.New and Run; a stop that comes during
// Recover is a stop with nothing served and nothing to drain.
func TestStopDuringRecoverIsClean(t *testing.T) {
	n, err := node.New(nodetest.Config(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the signal, as Recover starts
	if err := n.Run(ctx); err != nil {
		t.Fatalf("a single node stopped as it recovered its queues: %v, want a clean stop", err)
	}
}
