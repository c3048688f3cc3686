// Package ha decides which node of a replicated deployment serves: in a
// raft group the leader (Group), in a Binary Star pair the active node,
// which is also the raft leader (Pair). It is the broker's Gate, switches
// the titanic dispatcher on and off, and (pair) keeps raft's leadership and
// membership in line with Binary Star's decisions.
//
// # What it owns
//
// The role loop: the goroutine that reacts to raft leadership changes and
// Binary Star state changes. It owns no socket and no store.
package ha

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// Dispatcher is what ha needs of the titanic service.
type Dispatcher interface {
	Activate(ctx context.Context) error
	Deactivate()
}

// Group is the role of a raft group member: it serves while it is the raft
// leader and has rebuilt its dispatch queues.
type Group struct {
	node    *replica.Node
	svc     Dispatcher
	log     *slog.Logger
	serving atomic.Bool
}

// NewGroup returns the role of node for svc.
func NewGroup(node *replica.Node, svc Dispatcher, log *slog.Logger) *Group {
	return &Group{node: node, svc: svc, log: log.With("component", "ha")}
}

// Admit implements broker.Gate.
func (g *Group) Admit(service string) bool {
	return g.serving.Load() || strings.HasPrefix(service, tsp.AdminPrefix)
}

// Active implements broker.Gate.
func (g *Group) Active() bool { return g.serving.Load() }

// Refusal implements broker.Gate.
func (g *Group) Refusal(service string) [][]byte { return titanic.Refusal(service) }

// Run follows raft leadership until ctx is done.
func (g *Group) Run(ctx context.Context) error {
	// Poll as well as listen: a leadership notice can be dropped when
	// changes come fast, and IsLeader is the truth.
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		g.sync(ctx)
		select {
		case <-ctx.Done():
			g.demote("shutting down")
			return nil
		case <-g.node.LeaderCh():
		case <-t.C:
		case err := <-g.node.Fatal():
			g.demote("store diverged")
			return fmt.Errorf("raft group: %w", err)
		}
	}
}

func (g *Group) sync(ctx context.Context) {
	leader := g.node.IsLeader()
	switch {
	case leader && !g.serving.Load():
		term := g.node.Status().Term
		if err := g.svc.Activate(ctx); err != nil {
			g.log.Warn("became raft leader but could not activate", "err", err)
			return
		}
		if !g.node.IsLeader() || g.node.Status().Term != term {
			g.svc.Deactivate()
			return
		}
		g.serving.Store(true)
		g.log.Info("serving: this node is the raft leader", "term", g.node.Status().Term)
	case !leader && g.serving.Load():
		g.demote("lost raft leadership")
	}
}

func (g *Group) demote(why string) {
	if g.serving.Swap(false) {
		g.svc.Deactivate()
		g.log.Info("not serving: "+why, "leader", leaderID(g.node))
	}
}

func leaderID(n *replica.Node) string {
	id, _ := n.Leader()
	return id
}
