package ha

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// A 3-node group with one member down replaces it: `titanic cluster join
// n4 ADDR` while n4 is still starting (or catching up from a snapshot).
// A group's admin adds n4 without a vote (it asks for one once caught
// up), so the two live members keep their quorum. Added as a voter at
// once, n4 made 4 voters of whom 2 were up: no submit committed, no
// leader could be elected, and nothing could remove n4.
func TestGroupJoinWhileMemberDown(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nodes, trs, _ := memGroup(t, 3)
	leader := leaderOf(t, nodes)
	// One follower goes down.
	var down int
	for i, n := range nodes {
		if n != leader {
			down = i
			break
		}
	}
	trs[down].DisconnectAll()
	for i, tr := range trs {
		if i != down {
			tr.Disconnect(trs[down].LocalAddr())
		}
	}
	submit := func(what string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := leader.Apply(ctx, []store.Op{{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(), Service: "echo", Body: [][]byte{[]byte(what)}}})
		return err
	}
	if err := submit("before"); err != nil {
		t.Fatalf("submit with 2 of 3 up: %v", err)
	}
	// The replacement n4 joins; it is not reachable yet (starting, or
	// busy installing the snapshot).
	_, tr4 := raft.NewInmemTransport("")
	admin := NewAdmin(leader, nil, log)
	admin.NonvoterFirst = true // as titanic/node sets it in group mode
	go admin.serve(broker.Request{Service: tsp.SvcJoin, Body: [][]byte{[]byte("n4"), []byte(tr4.LocalAddr())}})
	waitFor(t, "n4 in the configuration", 10*time.Second, func() bool { _, ok := leader.MemberAt("n4", ""); return ok })
	if m, _ := leader.MemberAt("n4", ""); m.Voter {
		t.Fatal("n4 joined with a vote before it was up")
	}
	if err := submit("after"); err != nil {
		t.Fatalf("submit after the join, with 2 of the 3 old members up: %v", err)
	}
	// Asking for a vote takes a member: a stranger's "voter" join is
	// refused.
	if out := admin.serve(broker.Request{Service: tsp.SvcJoin, Body: [][]byte{[]byte("n5"), []byte("x:1"), []byte(tsp.JoinVoter)}}); string(out[0]) != "400" {
		t.Fatalf("a voter join of no member = %q, want 400", out)
	}
}
