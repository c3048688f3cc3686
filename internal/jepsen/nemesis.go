package jepsen

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/netns"
)

// Kind is a kind of fault.
type Kind string

// The faults the nemesis injects.
const (
	// Kill SIGKILLs a node; it stays down until a Restart or the heal.
	Kill Kind = "kill"
	// Stop SIGSTOPs a node (SIGCONT at the heal): its sockets stay open
	// and silent.
	Stop Kind = "stop"
	// LinkDown sets a node's link down (up at the heal): a loud cut.
	LinkDown Kind = "link-down"
	// CutPeers silently drops the traffic between a node and the other
	// nodes only (in a pair: the pair link); clients still reach all.
	CutPeers Kind = "cut-peers"
	// Split silently splits the cluster in two sides, each with its own
	// clients: the active node (leader) with the first client host, the
	// others with the second.
	Split Kind = "split-clients"
	// Isolate silently drops all of a node's traffic.
	Isolate Kind = "isolate"
	// Restart starts a node that is down again, on its own data.
	Restart Kind = "restart"
)

// step is one fault of a plan.
type step struct {
	kind   Kind
	target *node
}

// nemesis injects faults into a cluster and heals them, recording both.
// Its methods run on the test's goroutine (netns reports errors there).
type nemesis struct {
	t       testing.TB
	h       *History
	rng     *rand.Rand
	nodes   []*node
	clients []*netns.Host // one client host per side of a Split

	stopped map[*node]time.Time // SIGSTOPped since
	down    map[*node]bool      // link down
	cut     map[*node]bool      // partitioned with nftables
}

func newNemesis(t testing.TB, h *History, seed uint64, nodes []*node, clients []*netns.Host) *nemesis {
	return &nemesis{
		t: t, h: h, rng: rand.New(rand.NewPCG(seed, 0x6e656d)),
		nodes: nodes, clients: clients,
		stopped: map[*node]time.Time{}, down: map[*node]bool{}, cut: map[*node]bool{},
	}
}

// plan chooses the next faults: one kind from the menu (by weight), hurt
// mostly the active node (leader); after a network fault, with chance
// pKill, a SIGKILL of the active node too (what it acknowledged alone
// must survive), and then, half the time, its restart while the network
// fault holds.
func (nm *nemesis) plan(menu map[Kind]int, pKill float64, leader *node) []step {
	kinds := slices.Sorted(func(yield func(Kind) bool) {
		for k := range menu {
			if !yield(k) {
				return
			}
		}
	})
	total := 0
	for _, k := range kinds {
		total += menu[k]
	}
	x := nm.rng.IntN(total)
	var kind Kind
	for _, k := range kinds {
		if x -= menu[k]; x < 0 {
			kind = k
			break
		}
	}
	target := leader
	if kind != Split && nm.rng.Float64() >= 0.7 {
		others := slices.DeleteFunc(slices.Clone(nm.nodes), func(n *node) bool { return n == leader })
		target = others[nm.rng.IntN(len(others))]
	}
	steps := []step{{kind, target}}
	switch kind {
	case LinkDown, CutPeers, Split, Isolate:
		if nm.rng.Float64() < pKill {
			steps = append(steps, step{Kill, leader})
			if nm.rng.IntN(2) == 0 {
				steps = append(steps, step{Restart, leader})
			}
		}
	}
	return steps
}

// apply injects one fault.
func (nm *nemesis) apply(s step) {
	t := nm.t
	t.Helper()
	op := Op{Process: "nemesis", Type: OK, F: FFault, Value: string(s.kind), Node: s.target.name}
	switch s.kind {
	case Kill:
		s.target.kill()
	case Stop:
		if l := s.target.current(); l != nil && s.target.running() {
			if err := l.proc.Signal(syscall.SIGSTOP); err != nil {
				op.Err = err.Error()
			} else {
				nm.stopped[s.target] = time.Now()
			}
		}
	case LinkDown:
		s.target.host.LinkDown(t)
		nm.down[s.target] = true
	case CutPeers:
		var peers []*netns.Host
		for _, n := range nm.nodes {
			if n != s.target {
				peers = append(peers, n.host)
			}
		}
		nm.cut[s.target] = true
		s.target.host.Partition(t, peers...)
	case Split:
		// Side A: the target and the first client host; side B: the
		// other nodes and the second client host. The test process
		// (workers, probes) reaches both.
		var sideB []*netns.Host
		for _, n := range nm.nodes {
			if n != s.target {
				sideB = append(sideB, n.host)
			}
		}
		for _, n := range nm.nodes {
			nm.cut[n] = true
			if n == s.target {
				n.host.Partition(t, append(sideB, nm.clients[1])...)
			} else {
				n.host.Partition(t, s.target.host, nm.clients[0])
			}
		}
	case Isolate:
		nm.cut[s.target] = true
		s.target.host.Partition(t)
	case Restart:
		if s.target.running() {
			return
		}
		if err := s.target.start(t); err != nil {
			op.Err = firstLine(err.Error())
		}
	default:
		t.Fatalf("nemesis: unknown fault %q", s.kind)
	}
	nm.h.Add(op)
}

// heal undoes every fault: SIGCONT, links up, partitions healed, and
// every node that is down started again on its own data (a restart
// fault: it must come back with what it had).
func (nm *nemesis) heal() {
	t := nm.t
	t.Helper()
	for _, n := range nm.nodes {
		if since, ok := nm.stopped[n]; ok {
			delete(nm.stopped, n)
			if l := n.current(); l != nil {
				_ = l.proc.Signal(syscall.SIGCONT)
			}
			nm.h.Add(Op{Process: "nemesis", Type: OK, F: FPause, Node: n.name, Time: since, End: time.Now()})
			nm.h.Add(Op{Process: "nemesis", Type: OK, F: FHeal, Node: n.name, Value: "cont"})
		}
		if nm.down[n] {
			delete(nm.down, n)
			n.host.LinkUp(t)
			nm.h.Add(Op{Process: "nemesis", Type: OK, F: FHeal, Node: n.name, Value: "link-up"})
		}
		if nm.cut[n] {
			delete(nm.cut, n)
			n.host.Heal(t)
			nm.h.Add(Op{Process: "nemesis", Type: OK, F: FHeal, Node: n.name, Value: "partition"})
		}
	}
	nm.restartDown()
}

// restartDown starts every node that is down.
func (nm *nemesis) restartDown() {
	for _, n := range nm.nodes {
		if !n.running() {
			nm.apply(step{Restart, n})
		}
	}
}

// describe renders a plan for the log.
func describe(steps []step) string {
	s := ""
	for i, st := range steps {
		if i > 0 {
			s += " then "
		}
		s += fmt.Sprintf("%s %s", st.kind, st.target.name)
	}
	return s
}

func firstLine(s string) string {
	for i := range len(s) {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}
