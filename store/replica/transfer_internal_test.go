package replica

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestGateAnswersHeldRPCOnClose: an RPC the gate has taken from the
// transport but not yet handed to raft when it closes (raft stopping)
// is answered with an error and a response of the right type. A
// transport may read the response of a failed RPC: raft's in-memory
// pipeline does, and a nil one crashed the process (a fresh-clone
// `make test`, TestSplitBrainForkMerged).
func TestGateAnswersHeldRPCOnClose(t *testing.T) {
	_, a := raft.NewInmemTransport("a")
	_, b := raft.NewInmemTransport("b")
	a.Connect("b", b)
	b.Connect("a", a)
	defer a.Close()
	// No raft reads the gate's consumer: an RPC it takes stays held.
	_, g := gateTransfers(b, "b")

	pipe, err := a.AppendEntriesPipeline("b", "b")
	if err != nil {
		t.Fatal(err)
	}
	defer pipe.Close()
	var resp raft.AppendEntriesResponse
	fut, err := pipe.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("a"), Addr: []byte("a")}, Term: 1}, &resp)
	if err != nil {
		t.Fatal(err)
	}
	// The gate holds the RPC once the transport's queue is empty again:
	// it waits to hand it to a raft that does not read.
	deadline := time.Now().Add(5 * time.Second)
	for len(g.in) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the gate did not take the RPC from the transport within 5 s")
		}
		time.Sleep(time.Millisecond)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fut.Error() }()
	select {
	case err := <-done:
		if !errors.Is(err, raft.ErrRaftShutdown) {
			t.Fatalf("the held AppendEntries ended with %v, want %v", err, raft.ErrRaftShutdown)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the held AppendEntries was not answered within 5 s of the gate closing")
	}
}

// TestEmptyResponseTypes: every request raft sends has a typed empty
// response, so no RPC is ever answered with nil.
func TestEmptyResponseTypes(t *testing.T) {
	for _, cmd := range []any{
		&raft.AppendEntriesRequest{}, &raft.RequestVoteRequest{}, &raft.RequestPreVoteRequest{},
		&raft.InstallSnapshotRequest{}, &raft.TimeoutNowRequest{},
	} {
		if emptyResponse(cmd) == nil {
			t.Errorf("no response type for %T", cmd)
		}
	}
}
