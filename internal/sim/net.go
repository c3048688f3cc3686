package sim

import (
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
)

// network is the simulated network between the nodes. Raft runs over
// raft's in-memory transport, one per node for the whole run, whose
// routes network opens and closes per direction; Binary Star's states and
// the pair's admin requests cross the same links.
//
// A route a->b exists while both nodes run and the schedule has not cut
// a->b. A cut a->b stops what a sends b on its own (raft RPCs, states,
// requests); b's requests to a and a's answers to them still pass, as
// with raft's in-memory transport. An admin request needs both ways.
//
// A raft cut a->b (CutRaft) stops only a's raft RPCs to b, as a firewall
// rule on the raft port would: Binary Star's states and the admin
// requests, which go to other ports (the client endpoint and Binary
// Star's), still pass.
type network struct {
	mu      sync.Mutex
	trans   []*transport
	addrs   []raft.ServerAddress
	cut     [][]bool // cut[a][b]: a does not reach b
	raftCut [][]bool // raftCut[a][b]: a's raft does not reach b's
	up      []bool
}

// transport is a node's in-memory transport. Raft's Shutdown closes a
// transport that can be closed, which drops its routes; a node's TCP
// transport would be made anew and redial, so here Close does nothing
// and the routes stay the network's to open and close.
type transport struct{ *raft.InmemTransport }

// Close implements raft.WithClose: the transport outlives raft instances.
func (transport) Close() error { return nil }

func newNetwork(n int) *network {
	nw := &network{cut: make([][]bool, n), raftCut: make([][]bool, n), up: make([]bool, n)}
	for i := range n {
		addr, t := raft.NewInmemTransport("")
		nw.trans = append(nw.trans, &transport{t})
		nw.addrs = append(nw.addrs, addr)
		nw.cut[i] = make([]bool, n)
		nw.raftCut[i] = make([]bool, n)
	}
	return nw
}

// set changes the link a->b and applies it.
func (nw *network) set(a, b int, cut bool) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.cut[a][b] = cut
	nw.route(a, b)
}

// setRaft changes the raft link a->b alone and applies it.
func (nw *network) setRaft(a, b int, cut bool) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.raftCut[a][b] = cut
	nw.route(a, b)
}

// setUp marks node a running or not and applies its routes both ways.
func (nw *network) setUp(a int, up bool) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.up[a] = up
	for b := range nw.up {
		if b != a {
			nw.route(a, b)
			nw.route(b, a)
		}
	}
}

// healAll opens every link.
func (nw *network) healAll() {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for a := range nw.cut {
		for b := range nw.cut[a] {
			if a != b {
				nw.cut[a][b], nw.raftCut[a][b] = false, false
				nw.route(a, b)
			}
		}
	}
}

func (nw *network) route(a, b int) {
	if nw.up[a] && nw.up[b] && !nw.cut[a][b] && !nw.raftCut[a][b] {
		nw.trans[a].Connect(nw.addrs[b], nw.trans[b].InmemTransport)
	} else {
		nw.trans[a].Disconnect(nw.addrs[b])
	}
}

// reaches reports whether a's messages other than raft's (Binary Star's
// states, admin requests and answers) reach b.
func (nw *network) reaches(a, b int) bool {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.up[a] && nw.up[b] && !nw.cut[a][b]
}

// cuts describes the links cut, for the log: "a->b" for a cut link,
// "a->b raft" for a raft link cut alone.
func (nw *network) cuts() []string {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	var out []string
	for a := range nw.cut {
		for b := range nw.cut[a] {
			switch {
			case nw.cut[a][b]:
				out = append(out, fmt.Sprintf("%d->%d", a, b))
			case nw.raftCut[a][b]:
				out = append(out, fmt.Sprintf("%d->%d raft", a, b))
			}
		}
	}
	return out
}
