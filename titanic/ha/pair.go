package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic"
)

// Pair is the role of one node of a Binary Star pair. Binary Star decides
// which node is active; raft (two voters) replicates the store. The
// active node must also be the raft leader:
//
//   - While both nodes are up, a passive node that holds raft leadership
//     hands it to the active one, and every acknowledged ticket is
//     committed on both hosts (a two-voter quorum).
//   - When Binary Star makes a node active because its peer is gone
//     (silent past the peer timeout and a client asked: the client vote),
//     the node reforms raft with itself as the only voter (replica.Reform)
//     and goes on alone.
//   - When the peer is heard again, the active node adds it back as a
//     voter; it catches up from the log or a snapshot, and Binary Star
//     keeps it passive.
//   - A node may take over (be voted active by a client, or reform raft
//     alone) only once it holds everything the active may have
//     acknowledged: it is the raft leader, or it has applied the
//     configuration entry with which the current leader (re)added it as
//     a voter, written in a term later than the last entry it had when it
//     started (the active writes one in each of its terms while the peer
//     is alive). Until then it refuses client requests without voting, so
//     a node that restarts beside an active peer cannot take over with
//     stale data if that peer dies before it has caught up; the pair then
//     waits for the peer.
type Pair struct {
	node     *replica.Node
	star     *binarystar.Node
	svc      Dispatcher
	log      *slog.Logger
	peerID   string
	peerAddr string

	serving  atomic.Bool
	caughtUp atomic.Bool // may take over: holds every acknowledged entry
	kick     chan struct{}

	staleWarned bool // Run's goroutine only
}

// PairConfig configures a Pair.
type PairConfig struct {
	Star     binarystar.Config // Role, Local, Peer, Heartbeat...; OnChange and OnPeer are set by NewPair
	PeerID   string            // the peer's raft ID
	PeerAddr string            // the peer's raft address
	Logger   *slog.Logger
}

// NewPair returns the role of node in a pair.
func NewPair(node *replica.Node, svc Dispatcher, cfg PairConfig) (*Pair, error) {
	p := &Pair{
		node: node, svc: svc, log: cfg.Logger.With("component", "ha"),
		peerID: cfg.PeerID, peerAddr: cfg.PeerAddr,
		kick: make(chan struct{}, 1),
	}
	sc := cfg.Star
	sc.Logger = cfg.Logger
	sc.OnChange = func(old, new binarystar.State) { p.poke() }
	sc.OnPeer = func(bool) { p.poke() }
	star, err := binarystar.New(sc)
	if err != nil {
		return nil, fmt.Errorf("binary star: %w", err)
	}
	p.star = star
	return p, nil
}

func (p *Pair) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Admit implements broker.Gate: every client request is a Binary Star
// CLIENT_REQUEST (the vote that lets a passive node take over from a dead
// peer).
func (p *Pair) Admit(service string) bool {
	if strings.HasPrefix(service, AdminPrefix) {
		return true
	}
	if !p.caughtUp.Load() && p.star.State() != binarystar.StateActive {
		return false // no vote: this node may lack acknowledged tickets
	}
	if !p.star.ClientRequest() {
		return false
	}
	if !p.serving.Load() {
		p.poke() // active but not ready yet: get on with it
		return false
	}
	return true
}

// Active implements broker.Gate.
func (p *Pair) Active() bool { return p.serving.Load() }

// Refusal implements broker.Gate. A passive node tells titanic clients to
// move on. An active node that is not ready (taking over raft, or
// reforming it because the link to its peer is cut) answers titanic
// clients 500 "not ready" at once: the client reports a transient error
// and is retried on this node. Dropping the request instead would make
// the client time out and vote on the passive node, which, with the link
// cut, would make two actives.
func (p *Pair) Refusal(service string) [][]byte {
	if p.star.State() == binarystar.StateActive {
		if strings.HasPrefix(service, titanic.Prefix) {
			return [][]byte{[]byte("500"), []byte(NotReady)}
		}
		return nil
	}
	return titanic.Refusal(service)
}

// NotReady is the text of an active node's refusal while it is not ready.
const NotReady = "not ready: taking over, retry"

// State is the node's Binary Star state.
func (p *Pair) State() binarystar.State { return p.star.State() }

// Run runs Binary Star and the role loop until ctx is done or Binary Star
// fails (dual actives, dual passives), which is returned: the caller must
// exit.
func (p *Pair) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	starErr := make(chan error, 1)
	go func() { starErr <- p.star.Run(ctx) }()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.demote("shutting down")
			<-starErr
			return nil
		case err := <-starErr:
			p.demote("binary star stopped")
			if err != nil {
				return fmt.Errorf("binary star: %w", err)
			}
			return nil
		case <-p.kick:
		case <-p.node.LeaderCh():
		case <-t.C:
		case err := <-p.node.Fatal():
			p.demote("store diverged")
			cancel()
			<-starErr
			return fmt.Errorf("pair: %w", err)
		}
		p.sync(ctx)
	}
}

func (p *Pair) sync(ctx context.Context) {
	active := p.star.State() == binarystar.StateActive
	leader := p.node.IsLeader()
	peerAlive := p.star.PeerAlive()
	if cterm, voter := p.node.ConfigTerm(); !p.caughtUp.Load() && (leader || voter && cterm > p.node.StartTerm()) {
		p.caughtUp.Store(true)
		p.log.Info("caught up with the active peer: may take over if it fails")
	}
	if !active {
		p.demote("binary star: " + p.star.State().String())
		if leader && peerAlive {
			// A passive node that leads a raft of its own (it reformed
			// it as a survivor, then died; its peer came back first and
			// is active now) adds the peer first: leadership can only
			// go to a voter, and the transfer brings the peer's log up
			// to date before it hands over.
			if !p.node.HasVoter(p.peerID) {
				actx, cancel := context.WithTimeout(ctx, 5*time.Second)
				if err := p.node.AddVoter(actx, p.peerID, p.peerAddr); err != nil {
					p.log.Warn("adding the active peer as a voter", "err", err)
				}
				cancel()
			}
			if err := p.node.TransferLeadership(p.peerID, p.peerAddr); err != nil {
				p.log.Debug("leadership transfer to the active peer", "err", err)
			}
		}
		return
	}
	if !leader {
		p.demote("not the raft leader")
		if peerAlive {
			return // the passive peer hands leadership over
		}
		if !p.caughtUp.Load() {
			// Active without a vote (the peer restarted beside it) but
			// not caught up, and the peer is gone again: alone, this
			// node may lack acknowledged tickets. Wait for the peer.
			if !p.staleWarned {
				p.staleWarned = true
				p.log.Warn("peer lost before this node caught up: not serving alone; waiting for the peer")
			}
			return
		}
		p.log.Warn("peer lost: reforming raft with this node as the only voter")
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := p.node.Reform(rctx)
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			p.log.Error("reform raft", "err", err)
		}
		return
	}
	// (Re)add the peer as a voter when it is not one, and once in each
	// term: the configuration entry of this term is what tells the peer
	// it has caught up (see caughtUp).
	if cterm, _ := p.node.ConfigTerm(); peerAlive && (!p.node.HasVoter(p.peerID) || cterm < p.node.Status().Term) {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := p.node.AddVoter(actx, p.peerID, p.peerAddr); err != nil {
			p.log.Warn("adding the peer as a voter", "err", err)
		} else {
			p.log.Info("peer added as a voter in this term; it catches up before it may take over")
		}
		cancel()
	}
	if !p.serving.Load() {
		if err := p.svc.Activate(ctx); err != nil {
			p.log.Warn("active but could not activate the dispatcher", "err", err)
			return
		}
		if !p.node.IsLeader() {
			p.svc.Deactivate()
			return
		}
		p.serving.Store(true)
		p.log.Info("serving: binary star active and raft leader", "term", p.node.Status().Term)
	}
}

func (p *Pair) demote(why string) {
	if p.serving.Swap(false) {
		p.svc.Deactivate()
		p.log.Info("not serving: " + why)
	}
}
