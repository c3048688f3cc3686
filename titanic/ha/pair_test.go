package ha

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
)

// activeStar is a Binary Star that is active with its peer gone.
type activeStar struct{}

func (activeStar) State() binarystar.State       { return binarystar.StateActive }
func (activeStar) PeerAlive() bool               { return false }
func (activeStar) ClientRequest() bool           { return true }
func (activeStar) AllowBackupVote(bool)          {}
func (activeStar) Run(ctx context.Context) error { <-ctx.Done(); return nil }

// stuckDispatcher refuses to activate, as a raft instance stuck by
// hashicorp/raft#696 refuses the barrier, for as long as its node leads
// the term it was stuck in.
type stuckDispatcher struct {
	node    *replica.Node
	term    uint64
	refused atomic.Int64
}

func (d *stuckDispatcher) Activate(context.Context) error {
	if d.node.Status().Term == d.term {
		d.refused.Add(1)
		return fmt.Errorf("activate: raft barrier: %w", raft.ErrLeadershipTransferInProgress)
	}
	return nil
}

func (d *stuckDispatcher) Deactivate() {}

// TestPairActiveStepsDownWhenRaftStuck: an active raft leader whose raft
// instance refuses every write as a transfer in progress (the flag a
// transfer tried while it was passive left set) never activates; it
// steps down, its raft restarts, and it serves.
func TestPairActiveStepsDownWhenRaftStuck(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "titanic.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	addr, tr := raft.NewInmemTransport("")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	node, err := replica.Open(st, replica.Config{
		ID: "primary", Dir: filepath.Join(dir, "raft"), Transport: tr,
		Peers: []replica.Peer{{ID: "primary", Addr: string(addr)}}, Bootstrap: true,
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
		Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !node.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("the single voter was not elected within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	svc := &stuckDispatcher{node: node, term: node.Status().Term}
	p := NewPairWith(node, svc, PairConfig{PeerID: "backup", PeerAddr: "nowhere", Logger: log},
		func(func()) Star { return activeStar{} }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	for !p.Active() {
		if time.Now().After(deadline) {
			t.Fatalf("not serving within 10s: %d activations refused in term %d, term now %d", svc.refused.Load(), svc.term, node.Status().Term)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := svc.refused.Load(); n < stepDownAfter {
		t.Errorf("serving after %d refused activations, want at least %d before stepping down", n, stepDownAfter)
	}
}

// refusingPeer stands for the peer client while the peer answers "not
// active": the client asks again until its tries are spent, so the
// request returns only when its context ends.
type refusingPeer struct{ calls atomic.Int32 }

func (r *refusingPeer) Request(ctx context.Context, _ string, _ [][]byte) ([][]byte, error) {
	r.calls.Add(1)
	<-ctx.Done()
	return nil, ctx.Err()
}

func (*refusingPeer) Close() error { return nil }

// TestAskJoinEndsWhenThisNodeLeads: a node asking its active peer to add
// it may win the raft election meanwhile (its log is the longer one);
// the peer then refuses the join as long as the peer client keeps asking
// (15 s), and only this node's loop, blocked in the request, could hand
// leadership over. The request must end once this node leads. The
// fault suite found it: 24 s without service after "link-down pa then
// kill pb".
func TestAskJoinEndsWhenThisNodeLeads(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	addr, tr := raft.NewInmemTransport("")
	n := openPairNode(t, dir, "backup", 1, addr, tr, []replica.Peer{{ID: "backup", Addr: string(addr)}}, log)
	waitFor(t, "the single voter elected", 10*time.Second, n.rep.IsLeader)
	peer := &refusingPeer{}
	p := NewPairWith(n.rep, n.disp, PairConfig{PeerID: "primary", PeerAddr: "nowhere", PeerEndpoint: "in process", Logger: log},
		func(func()) Star { return fixedStar{state: binarystar.StatePassive} }, func() (Requester, error) { return peer, nil })
	p.peer = peer
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	begin := time.Now()
	err := p.askJoin(ctx, true)
	if !errors.Is(err, errLeadsRaft) {
		t.Fatalf("askJoin returned %v after %s, want errLeadsRaft", err, time.Since(begin))
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Fatalf("askJoin took %s to give up while this node leads raft", took)
	}
	if peer.calls.Load() != 1 {
		t.Fatalf("the peer was asked %d times, want once", peer.calls.Load())
	}
}
