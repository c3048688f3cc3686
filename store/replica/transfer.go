package replica

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// errTransferRefused answers a TimeoutNow that a pair node will not act on.
var errTransferRefused = errors.New("leadership transfer refused")

// transferGate is the transport a pair node's raft sees (Config.FenceStride
// set): the node's own, with a check on one RPC. A TimeoutNow makes raft
// start an election at once, whatever its state and configuration, and
// the request carries no term. Sent to a node that still leads a raft of
// its own (a pair member that went on alone, added back by its peer), it
// makes that node elect itself, alone, in its term plus one: a term
// outside its fence, and possibly the very term its peer leads. Two
// leaders of one term write different entries that raft then takes for
// the same (log matching compares terms), and the tickets one of them
// acknowledged are lost without a trace (the pair simulation, seed
// 831874142). Raft sends the transfer's TimeoutNow as soon as it thinks
// the target is up to date, and it starts a new member's replication as
// if it were, before a single entry reached it.
//
// So the gate lets a TimeoutNow through only from the leader this node
// follows, when both are voters of this node's configuration: a node
// that leads alone follows nobody, and is the only voter of its own.
// Any other is answered with an error, which fails the sender's
// transfer; the sender goes on leading, and may try again once this node
// follows it.
type transferGate struct {
	raft.Transport
	id   raft.ServerID // this node's
	in   <-chan raft.RPC
	out  chan raft.RPC
	stop chan struct{}
	once sync.Once
	// r is the raft this transport serves (nil until NewRaft returns:
	// until then every TimeoutNow is refused).
	r atomic.Pointer[raft.Raft]
}

// transferGatePreVote is a transferGate over a transport that sends
// pre-votes (raft checks for the interface, so the wrapper must not hide
// it).
type transferGatePreVote struct {
	*transferGate
	pv raft.WithPreVote
}

func (g transferGatePreVote) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return g.pv.RequestPreVote(id, target, args, resp)
}

// gateTransfers wraps t; serve must be called with the raft once it is
// made.
func gateTransfers(t raft.Transport, id string) (raft.Transport, *transferGate) {
	g := &transferGate{Transport: t, id: raft.ServerID(id), in: t.Consumer(), out: make(chan raft.RPC), stop: make(chan struct{})}
	go g.pump()
	if pv, ok := t.(raft.WithPreVote); ok {
		return transferGatePreVote{g, pv}, g
	}
	return g, g
}

func (g *transferGate) serve(r *raft.Raft) { g.r.Store(r) }

func (g *transferGate) Consumer() <-chan raft.RPC { return g.out }

// Close stops the gate and closes the transport under it (raft's Shutdown
// closes its transport).
func (g *transferGate) Close() error {
	g.once.Do(func() { close(g.stop) })
	if c, ok := g.Transport.(raft.WithClose); ok {
		return c.Close()
	}
	return nil
}

func (g *transferGate) pump() {
	for {
		select {
		case <-g.stop:
			return
		case rpc := <-g.in:
			if req, ok := rpc.Command.(*raft.TimeoutNowRequest); ok {
				if err := g.admit(req); err != nil {
					rpc.Respond(&raft.TimeoutNowResponse{}, err)
					continue
				}
			}
			select {
			case g.out <- rpc:
			case <-g.stop:
				rpc.Respond(emptyResponse(rpc.Command), raft.ErrRaftShutdown)
				return
			}
		}
	}
}

// admit returns nil when req comes from the leader this node follows and
// this node is a voter of its configuration.
func (g *transferGate) admit(req *raft.TimeoutNowRequest) error {
	r := g.r.Load()
	if r == nil {
		return fmt.Errorf("%w: raft is starting", errTransferRefused)
	}
	_, leader := r.LeaderWithID()
	if leader == "" || leader != raft.ServerID(req.ID) {
		return fmt.Errorf("%w: %q is not the leader this node follows (%q)", errTransferRefused, req.ID, leader)
	}
	// Both voters of this node's configuration: a heartbeat alone sets
	// the leader (raft does before it checks the log), and a node that
	// leads alone is the only voter of its own.
	var self, sender bool
	for _, s := range r.GetConfiguration().Configuration().Servers {
		if s.Suffrage == raft.Voter {
			self = self || s.ID == g.id
			sender = sender || s.ID == raft.ServerID(req.ID)
		}
	}
	if !self || !sender {
		return fmt.Errorf("%w: this node (voter: %v) and %q (voter: %v) are not both voters of its configuration", errTransferRefused, self, req.ID, sender)
	}
	return nil
}

// emptyResponse is a response of the type that answers cmd: a transport
// may read the response of a failed RPC too (raft's in-memory pipeline
// does, and panics on nil).
func emptyResponse(cmd any) any {
	switch cmd.(type) {
	case *raft.AppendEntriesRequest:
		return &raft.AppendEntriesResponse{}
	case *raft.RequestVoteRequest:
		return &raft.RequestVoteResponse{}
	case *raft.RequestPreVoteRequest:
		return &raft.RequestPreVoteResponse{}
	case *raft.InstallSnapshotRequest:
		return &raft.InstallSnapshotResponse{}
	case *raft.TimeoutNowRequest:
		return &raft.TimeoutNowResponse{}
	}
	return nil
}
