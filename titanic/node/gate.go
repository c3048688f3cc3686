package node

import (
	"strings"
	"sync/atomic"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/ha"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// drainGate is the broker's gate: the role's (replicated modes) and, once
// draining, a refusal of every new client request.
type drainGate struct {
	inner    broker.Gate
	draining atomic.Bool
}

func (g *drainGate) Admit(service string) bool {
	if g.draining.Load() {
		return false
	}
	return g.inner == nil || g.inner.Admit(service)
}

func (g *drainGate) Active() bool { return g.inner == nil || g.inner.Active() }

// role answers titanic.cluster.role: whether the node serves and, in a
// pair, its Binary Star state.
func (g *drainGate) role() tsp.Role {
	a := tsp.Role{Serving: !g.draining.Load() && g.Active()}
	if p, ok := g.inner.(*ha.Pair); ok {
		a.Star = strings.ToLower(p.State().String())
		if !a.Serving {
			a.Why = p.Waiting()
		}
	}
	return a
}

func (g *drainGate) Refusal(service string) [][]byte {
	if g.draining.Load() || g.inner == nil {
		return titanic.Refusal(service)
	}
	return g.inner.Refusal(service)
}

// drain stops taking client requests, then waits (up to DrainTimeout)
// until every accepted one is committed and answered. Work held by workers
// stays dispatched in the store and is redelivered by the next active
// node (or this one, restarted).
func (n *Node) drain() {
	timeout := n.cfg.DrainTimeout
	n.gate.draining.Store(true)
	n.log.Info("draining: new requests refused", "timeout", timeout)
	deadline := time.Now().Add(timeout)
	for !n.svc.Idle() {
		if time.Now().After(deadline) {
			n.log.Warn("drain timeout: stopping with work still in progress (it is redelivered or retried)")
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Let the last answers leave the broker's socket.
	time.Sleep(100 * time.Millisecond)
	n.log.Info("drained")
}
