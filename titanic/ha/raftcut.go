package ha

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// A cut of the raft link alone: the two nodes' raft ports do not reach
// each other while Binary Star's state link stays up. Binary Star hears
// the peer, so the passive stays passive (no risk of two actives), but
// a raft of two commits nothing and elects nobody, and the pair would
// acknowledge no submit until the link heals. The active goes on alone
// instead, as when its peer is lost, once the peer has said it will not
// take over:
//
//  1. The active (caught up, not the raft leader, raft knowing no leader,
//     Binary Star hearing the peer) waits raftCutWait, then asks the peer
//     to stand down
//     (titanic.cluster.standdown, over the peer's client endpoint, which
//     the admin services use). It withholds the peer's vote in joins
//     from then on (Admin: withholdsVote).
//  2. The peer, passive and not the raft leader, forgets the membership
//     that counted it caught up (replica ForgetMembership), records the
//     raft term it has reached, and stops counting as caught up: it
//     refuses client requests without voting (Admit), so Binary Star
//     cannot make it active, and an active that has not caught up does
//     not go on alone (sync). It answers 200 and the term it recorded.
//  3. Only then the active reforms raft alone (replica ReformAbove: a
//     fenced term, later than any of its old raft and than the term the
//     peer recorded) and serves. The peer's term may be ahead of the
//     active's (its pre-vote granted, its vote request lost as the link
//     failed): the active's own next fenced term could then be the very
//     term the peer recorded, and the configuration that gives the peer
//     its vote back, written in it, would never count. A build that
//     answers 200 alone (before this) leaves the active's term as it was.
//
// The peer counts as caught up again only by a configuration that gives
// it a vote, in a term later than the one it recorded: such a
// configuration is written only by the active's new raft (the old raft of
// two can elect nobody once the active has reformed, and, before that,
// the active writes no configuration that gives the peer a vote while it
// withholds it), and the peer holds the active's log up to it; every
// commit after it needs the peer. Raft leadership does not count for a
// node that stood down: the link may heal between 2 and 3, and the old
// raft elect the peer, which would then count itself caught up while the
// active goes on alone all the same.
//
// Meanwhile the peer's attempts to rejoin are taken without a vote (it
// asks so, and the active adds it so): a voter the active's raft cannot
// reach would stop every commit again. Once it follows the active's raft
// (the link healed), it asks for its vote explicitly (askPromotion,
// tsp.JoinVoter) and gets it; the active then stops withholding it. A
// plain join of the peer, a member without a vote, leaves it so: a peer
// restarted during the cut has forgotten its stand-down, and asks to
// join as a voter while it cannot reach the active's raft.
//
// If the active dies after 2, whether or not it went on alone, the peer
// does not take over: the pair waits for the active to come back, as it
// does for a node that restarted beside a dead peer before it caught up
// (README, Pair). If the peer cannot be asked or refuses (it leads raft,
// it is active, it runs an older release: 400), the active goes on
// waiting, as before.

// raftCutAfter is how many raft heartbeat timeouts an active node's raft
// elects nobody, while Binary Star hears the passive peer, before the
// active asks the peer to stand down: well past an election (one to two
// timeouts) and a leadership transfer from the passive.
const raftCutAfter = 3

// standDownWait bounds the stand-down request, and standDownEvery is
// how often it is asked.
const (
	standDownWait  = 2 * time.Second
	standDownEvery = time.Second
)

// raftCut reports whether this active node, not the raft leader while
// Binary Star hears its peer, may go on alone: its raft has elected
// nobody for raftCutWait, and the peer has stood down
// (StandDown). Run's goroutine only.
func (p *Pair) raftCut(ctx context.Context) bool {
	if !p.caughtUp.Load() || p.peerEndpoint == "" || p.peerClient == nil || p.notLeaderSince.IsZero() {
		return false
	}
	if time.Since(p.notLeaderSince) < p.raftCutWait() || time.Now().Before(p.standDownAt) {
		return false
	}
	if id, _ := p.node.Leader(); id != "" {
		return false // the peer leads: it hands leadership over (reconcile)
	}
	if !p.star.PeerAlive() {
		return false // lost since sync looked: a lost peer's case
	}
	p.standDownAt = time.Now().Add(standDownEvery)
	if err := p.dialPeer(); err != nil {
		p.log.Warn("client of the peer's broker", "endpoint", p.peerEndpoint, "err", err)
		return false
	}
	// Withheld before the peer stands down: no configuration this node
	// writes from now gives the peer a vote that would count it caught up.
	p.withhold.Store(true)
	cctx, cancel := p.whilePeerHeard(ctx, standDownWait)
	rep, err := p.peer.Request(cctx, tsp.SvcStandDown, [][]byte{{}})
	cancel()
	if err == nil && (len(rep) == 0 || string(rep[0]) != "200") {
		err = fmt.Errorf("peer answered %q", rep)
	}
	p.cutAbove = 0
	if err == nil && len(rep) > 1 {
		// The term the peer stood down at: this node's new raft must
		// lead a later one (see StandDown). A build without the frame
		// answers [200] alone: reformed in this node's next fenced
		// term, as before.
		if p.cutAbove, err = strconv.ParseUint(string(rep[1]), 10, 64); err != nil {
			err = fmt.Errorf("peer answered %q: its term: %w", rep, err)
		}
	}
	if err != nil {
		// Its raft of two may still be whole, or come back: nothing to
		// withhold. (A stand-down whose answer was lost is harmless:
		// the peer only rejoins without a vote.)
		p.withhold.Store(false)
		if time.Since(p.standDownLog) > 10*time.Second {
			p.standDownLog = time.Now()
			p.log.Warn("raft elects nobody while binary star hears the passive peer, which does not stand down: not going on alone",
				"not_leader_for", time.Since(p.notLeaderSince).Round(time.Millisecond), "endpoint", p.peerEndpoint, "err", err)
		}
		return false
	}
	return true
}

// whilePeerHeard returns ctx, also cancelled after d and as soon as
// Binary Star loses the peer: a request to a peer that is cut off
// altogether would otherwise hold Run's loop for d before it handles the
// lost peer (reforms alone). Polled, as untilLeader.
func (p *Pair) whilePeerHeard(ctx context.Context, d time.Duration) (context.Context, func()) {
	ctx, cancel := context.WithTimeout(ctx, d)
	go func() {
		t := time.NewTicker(leaderPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if !p.star.PeerAlive() {
					cancel()
					return
				}
			}
		}
	}()
	return ctx, cancel
}

// raftCutWait is how long raft elects nobody, while Binary Star hears the
// peer, before raftCut asks the peer to stand down: raftCutAfter raft
// heartbeat timeouts, and twice Binary Star's peer timeout (a cut of
// every link is a lost peer, seen within one, and handled as such).
func (p *Pair) raftCutWait() time.Duration {
	return max(raftCutAfter*p.node.HeartbeatTimeout(), 2*p.peerTimeout)
}

// StandDown is titanic.cluster.standdown: the active peer cannot reach
// this node's raft and is about to go on alone. This node, if passive
// and not the raft leader, gives up taking over until it is caught up
// again with the peer's new raft (see the top of this file);
// it returns why it refuses otherwise. Called from any goroutine.
func (p *Pair) StandDown() error {
	_, err := p.standDown()
	return err
}

// standDown is StandDown; it returns the term this node stood down at
// (standDownTerm), which titanic.cluster.standdown answers: the active
// reforms in a later term (replica ReformAbove). Its own next fenced term
// may otherwise be that very term (this node's pre-vote granted, its vote
// request lost as the link failed, puts it a term ahead), and the
// configuration that gives this node its vote back, written in it, would
// not count: a voter that never counts as caught up, and no failover.
func (p *Pair) standDown() (uint64, error) {
	p.cuMu.Lock()
	defer p.cuMu.Unlock()
	if p.star.State() == binarystar.StateActive || p.serving.Load() {
		return 0, errStandDownActive
	}
	if p.node.IsLeader() {
		return 0, errStandDownLeads
	}
	if id, _ := p.node.Leader(); id != "" {
		// It hears a raft leader: the link is not cut (a request that
		// arrived late, after the link healed). Taken, it would wait for
		// a configuration of a later term, which a raft that stays whole
		// may not write for months: no failover meanwhile.
		return 0, errStandDownFollows
	}
	was := p.caughtUp.Load()
	p.node.ForgetMembership()
	floor := max(p.node.StartTerm(), p.node.Status().Term, 1)
	prev := p.standDownTerm.Load()
	term := max(floor, prev)
	p.standDownTerm.Store(term)
	p.caughtUp.Store(false)
	if prev == 0 {
		// Once per stand-down: the active asks again until it has
		// reformed.
		p.log.Warn("stood down: the active peer cannot reach this node's raft and goes on alone; this node does not take over until it has caught up with the peer's new raft",
			"term", floor, "was_caught_up", was, "peer", p.peerName())
	}
	return term, nil
}

// Why StandDown refuses.
var (
	errStandDownActive  = errors.New("this node is active")
	errStandDownLeads   = errors.New("this node leads raft: it hands leadership to the active peer")
	errStandDownFollows = errors.New("this node follows a raft leader: its raft link is not cut")
)

// withholdsVote reports whether a join of id must not give it a vote
// (see Admin): id is the peer, which this node asked to stand down.
func (p *Pair) withholdsVote(id string) bool {
	return id == p.peerID && p.withhold.Load()
}

// voteGiven tells that the peer, a member without a vote of this node's
// raft that follows it, got its vote back.
func (p *Pair) voteGiven(id string) {
	if id == p.peerID && p.withhold.Swap(false) {
		p.log.Info("the peer follows this node's raft again and has its vote back", "peer", id)
	}
}

// Describe returns the pair's role state as slog attributes, for a log
// line that says why a node does or does not serve (the simulation's,
// when a run does not settle). Safe from any goroutine.
func (p *Pair) Describe() []any {
	return []any{
		"star", p.star.State().String(),
		"peer_alive", p.star.PeerAlive(),
		"serving", p.serving.Load(),
		"caught_up", p.caughtUp.Load(),
		"stand_down_term", p.standDownTerm.Load(),
		"withhold", p.withhold.Load(),
		"halted", p.node.Halted(),
		"failed", fmt.Sprint(p.node.Failed()),
	}
}
