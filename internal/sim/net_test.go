package sim

import (
	"testing"

	"github.com/hashicorp/raft"
)

// A raft cut stops raft's RPCs that way only; Binary Star's states and
// the admin requests (reaches) still pass, and a heal of every link heals
// it too.
func TestRaftCutStopsRaftOnly(t *testing.T) {
	nw := newNetwork(2)
	nw.setUp(0, true)
	nw.setUp(1, true)
	// raftReaches tries a's raft RPC to b.
	raftReaches := func(a, b int) bool {
		var resp raft.AppendEntriesResponse
		return nw.trans[a].AppendEntries("", nw.addrs[b], &raft.AppendEntriesRequest{}, &resp) == nil
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		// Answer every RPC the nodes receive.
		for {
			select {
			case <-done:
				return
			case rpc := <-nw.trans[0].Consumer():
				rpc.Respond(&raft.AppendEntriesResponse{}, nil)
			case rpc := <-nw.trans[1].Consumer():
				rpc.Respond(&raft.AppendEntriesResponse{}, nil)
			}
		}
	}()
	if !raftReaches(0, 1) || !raftReaches(1, 0) {
		t.Fatal("raft does not reach the peer before any cut")
	}
	nw.setRaft(0, 1, true)
	if raftReaches(0, 1) {
		t.Error("raft 0->1 reaches after a raft cut 0->1")
	}
	if !raftReaches(1, 0) {
		t.Error("raft 1->0 cut by a raft cut 0->1")
	}
	if !nw.reaches(0, 1) || !nw.reaches(1, 0) {
		t.Error("a raft cut stopped Binary Star's states or the admin requests")
	}
	if got := nw.cuts(); len(got) != 1 || got[0] != "0->1 raft" {
		t.Errorf("cuts %q, want [0->1 raft]", got)
	}
	nw.healAll()
	if !raftReaches(0, 1) {
		t.Error("raft 0->1 still cut after healAll")
	}
}
