package node_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/nodetest"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/node"
)

// reopen fails the test unless the node's store file is free again: bbolt
// holds an exclusive lock on it while open.
func reopen(t *testing.T, dir string) {
	t.Helper()
	st, err := store.Open(filepath.Join(dir, "titanic.db"), store.Options{LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("store still held by the node: %v", err)
	}
	_ = st.Close()
}

func TestRunClosesStore(t *testing.T) {
	dir := t.TempDir()
	cfg := nodetest.Config(dir)
	cfg.NoDrain = false
	cfg.DrainTimeout = time.Second
	n := nodetest.Start(t, cfg)
	if !n.Active() {
		t.Fatal("a single node that is not draining is not active")
	}
	n.Stop()
	reopen(t, dir)
}

func TestNewFailureClosesStore(t *testing.T) {
	dir := t.TempDir()
	cfg := nodetest.Config(dir)
	cfg.HTTP = &node.HTTPConfig{Listen: "256.0.0.1:0"} // no such address
	if _, err := node.New(cfg); err == nil {
		t.Fatal("New with an HTTP address it cannot listen on: no error")
	}
	reopen(t, dir)
}

func TestRunStopsWhenCtxDone(t *testing.T) {
	n, err := node.New(nodetest.Config(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	select {
	case <-n.Ready():
	case <-time.After(nodetest.ReadyTimeout):
		t.Fatal("not ready")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of its ctx ending")
	}
}
