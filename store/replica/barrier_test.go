package replica_test

import (
	"context"
	"testing"
	"time"
)

// TestBarrierHonoursContext: a barrier the leader cannot commit (its
// replication to the peer held, its heartbeats through, so it keeps
// leading) returns once the caller's context is done. It waited for raft's
// answer alone, and raft never answers a barrier still queued when the
// instance stops (hashicorp/raft#498): a pair's role loop activating the
// dispatcher (whose barrier this is) then waited for ever.
func TestBarrierHonoursContext(t *testing.T) {
	ns := openGatedPair(t)
	l, _ := ns.leader(t)
	l.tr.hold.Store(l.n.Status().Term)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.n.Barrier(ctx) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a barrier the peer never got was committed")
		}
	case <-time.After(5 * time.Second):
		// Released by the cleanup: the barrier then commits.
		t.Fatal("Barrier did not return within 5s of a context of 300ms")
	}
}
