package ha

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/lograte"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// Pair is the role of one node of a Binary Star pair. Binary Star decides
// which node is active; raft (two voters) replicates the store. The
// active node must also be the raft leader:
//
//   - While both nodes are up, a passive node that holds raft leadership
//     hands it to the active one (or, when raft cannot hand it over,
//     steps down so that the active one is elected: see transfer), and
//     every acknowledged ticket is committed on both hosts (a two-voter
//     quorum).
//   - When Binary Star makes a node active because its peer is gone
//     (silent past the peer timeout and a client asked: the client vote),
//     the node reforms raft with itself as the only voter (replica.Reform)
//     and goes on alone.
//   - When the peer is heard again, the active node adds it back as a
//     voter; it catches up from the log or a snapshot, and Binary Star
//     keeps it passive.
//   - An active node that is not the raft leader while its peer, passive,
//     has halted its raft to hand its work over (see reconcile) goes on
//     alone as well: that peer will hand it no leadership, and this
//     node's configuration may still need its vote. It then takes the
//     peer's handover.
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
//   - An active node whose raft elects nobody while Binary Star hears its
//     passive peer (the raft link alone is cut: Binary Star's stays up)
//     asks the peer to give up taking over (titanic.cluster.standdown,
//     StandDown) and, once it has, goes on alone as when the peer is
//     lost. The peer then counts as caught up again only by a
//     configuration that gives it a vote written after that, in a later
//     term than the one it stood down at (a member of the active's new
//     raft, which leads a later term than that); until then it refuses
//     client requests without voting, as a node that restarted does, so
//     if the active dies before the peer has caught up, the pair waits
//     for it rather than lose what it took alone. Without the peer's
//     word (it cannot be asked, or it refuses) the active goes on waiting.
type Pair struct {
	// repeats bounds the lines a handover the peer keeps refusing
	// writes at each round (once a second): an older peer refusing a
	// newer ops record until it is upgraded.
	repeats *lograte.Limiter
	// handover bounds one batch of a handover (PairConfig.HandoverBytes).
	handover int
	// round bounds one round of reconcile's requests to the peer
	// (reconcileRound; tests shorten it).
	round    time.Duration
	node     *replica.Node
	star     Star
	svc      Dispatcher
	log      *slog.Logger
	peerID   string
	peerAddr string

	serving  atomic.Bool
	caughtUp atomic.Bool // may take over: holds every acknowledged entry
	kick     chan struct{}

	// The cut of the raft link alone (see StandDown and raftCut).
	//
	// cuMu orders StandDown (an admin goroutine) with sync's setting of
	// caughtUp: Run's loop may be blocked in a request to the peer
	// meanwhile, so the stand-down does not wait for it.
	cuMu sync.Mutex
	// standDownTerm, when not 0, is the raft term this node had reached
	// when it stood down: it counts as caught up again only by a
	// configuration that gives it a vote, of a later term (not by raft
	// leadership of its old raft). Cleared when it is caught up.
	standDownTerm atomic.Uint64
	// withhold: this node (active) asked its peer to stand down, to go
	// on alone: joins do not give the peer a vote until it follows this
	// node's raft again (see Admin, withholdsVote).
	withhold       atomic.Bool
	notLeaderSince time.Time // Run's goroutine only: active, not the raft leader, the peer heard
	// peerTimeout is Binary Star's (0 when the caller supplies the
	// star): raftCut waits past it, so that a cut of every link is taken
	// for a lost peer first, as before.
	peerTimeout  time.Duration
	standDownAt  time.Time // Run's goroutine only: when the peer may next be asked to stand down
	standDownLog time.Time // Run's goroutine only: the last refused stand-down logged
	// cutAbove is the term the peer said it stood down at, in answer to
	// this node's last stand-down request (0: none, or a build that does
	// not say): the reform that follows leads a later term. Run's
	// goroutine only.
	cutAbove uint64

	// The split-brain merge (see reconcile).
	peerEndpoint string
	peerTag      byte
	forkDir      string
	keepForks    int
	peerClient   func() (Requester, error)
	forgotten    atomic.Bool

	staleWarned   bool      // Run's goroutine only
	catchUpLogged time.Time // Run's goroutine only: the last "catching up without a vote" line
	nonvoterSince time.Time // Run's goroutine only: when this node last asked to join without a vote
	// joinedWithoutVote: the last join this process asked for was without
	// a vote (Run's goroutine only); its configuration from before may
	// still say voter.
	joinedWithoutVote bool
	addedAt           time.Time // Run's goroutine only: when the peer last answered a join 200
	waitWarned        bool      // Run's goroutine only
	retryAt           time.Time // Run's goroutine only: next reconcile
	peer              Requester // Run's goroutine only
	// Run's goroutine only: whether the peer, not a voter, runs a
	// release that cannot reconcile (asked again after legacyAt).
	legacyPeer bool
	legacyAt   time.Time
	// Run's goroutine only: when an active node that does not lead may
	// next ask whether its peer halted (peerHalted).
	haltAskAt time.Time
	// Run's goroutine only: leadership transfers to the active that
	// failed in a row, and when the last was logged.
	transferFails  int
	transferWarned time.Time
	transferSince  time.Time // the first failure of the streak
	transferStuck  int       // failures in a row refused "in progress"
	activateStuck  int       // activations in a row refused "in progress"
	transferFn     func(id, addr string) error
}

// Star is what a Pair needs of Binary Star: *binarystar.Node in a broker.
// Run runs it until ctx is done; the other methods are called from any
// goroutine.
type Star interface {
	State() binarystar.State
	PeerAlive() bool
	ClientRequest() bool
	// AllowBackupVote: see binarystar.Node.AllowBackupVote.
	AllowBackupVote(on bool)
	Run(ctx context.Context) error
}

// Requester is what a Pair needs of a client of its peer's broker (the
// admin services; *client.Client in a broker). It is used from Run's
// goroutine only.
type Requester interface {
	Request(ctx context.Context, service string, body [][]byte) ([][]byte, error)
	Close() error
}

// PairConfig configures a Pair.
type PairConfig struct {
	Star     binarystar.Config // Role, Local, Peer, Heartbeat...; OnChange and OnPeer are set by NewPair
	PeerID   string            // the peer's raft ID
	PeerAddr string            // the peer's raft address
	// PeerEndpoint is the peer's client endpoint: a node that yields
	// after a split brain asks the peer's history and hands its work
	// over there (admin services). Empty: no merge; a node that holds a
	// fork then waits for the operator.
	PeerEndpoint string
	// PeerCurve, when set, is this node's CURVE client identity towards
	// the peer's broker.
	PeerCurve *client.CurveClient
	// PeerTag is the mint tag of the peer's tickets (titanic.Config
	// MintTag): while this node may lack the peer's split, a lookup of
	// an unknown ticket the peer minted answers "not ready".
	PeerTag byte
	// ForkDir is where a node that drops a history keeps it (raft state
	// and store copy), one directory per resync.
	ForkDir string
	// KeepForks is how many of those directories are kept, the newest
	// (the older are removed when one is added, and at Run); negative:
	// every one. 0 means the default, 3.
	KeepForks int
	Logger    *slog.Logger
	// TransferLeadership, when set, stands for the replica's own in the
	// hand-over of raft leadership to the active peer: the simulation
	// makes transfers fail through it (internal/sim). Nil in a broker.
	TransferLeadership func(id, addr string) error
	// HandoverBytes bounds one batch of a split brain's handover, one
	// titanic.cluster.adopt request to the peer: under the peer's
	// limits.max_message_size (titanic/node sets half of this node's).
	// Zero: handoverBytes.
	HandoverBytes int
}

// DefaultKeepForks is PairConfig.KeepForks when it is 0.
const DefaultKeepForks = 3

// Mint tags of a pair's nodes (titanic.Config.MintTag).
const (
	PrimaryTag byte = 1
	BackupTag  byte = 2
)

// NewPair returns the role of node in a pair.
func NewPair(node *replica.Node, svc Dispatcher, cfg PairConfig) (*Pair, error) {
	p := newPair(node, svc, cfg)
	p.peerClient = func() (Requester, error) {
		cc := client.DefaultConfig()
		cc.Brokers = []string{cfg.PeerEndpoint}
		// A join waits for the new member to take a snapshot of the
		// whole store: give it time.
		cc.Timeout, cc.Retries = 15*time.Second, 1
		// The admin services answer in any role, and the peer must be
		// reached also while it is passive (it takes a handover when this
		// node's replica halted on a fork).
		cc.Direct = true
		cc.Logger = cfg.Logger
		cc.Curve = cfg.PeerCurve
		return client.New(cc)
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
	p.peerTimeout = star.PeerTimeout()
	return p, nil
}

// NewPairWith returns the role of node in a pair whose Binary Star and
// link to the peer's admin services the caller supplies, in one process
// (the simulation, internal/sim): star is called once with the function
// the star must call after each change of its state or of the peer's
// liveness (NewPair's OnChange and OnPeer), and dial connects to the
// peer's admin services (cfg.PeerEndpoint must still be set: empty means
// no merge). cfg.Star and cfg.PeerCurve are not used.
func NewPairWith(node *replica.Node, svc Dispatcher, cfg PairConfig, star func(poke func()) Star, dial func() (Requester, error)) *Pair {
	p := newPair(node, svc, cfg)
	p.peerClient = dial
	p.star = star(p.poke)
	return p
}

func newPair(node *replica.Node, svc Dispatcher, cfg PairConfig) *Pair {
	p := &Pair{
		repeats: lograte.New(lograte.Every),
		node:    node, svc: svc, log: cfg.Logger.With("component", "ha"),
		peerID: cfg.PeerID, peerAddr: cfg.PeerAddr,
		kick:         make(chan struct{}, 1),
		peerEndpoint: cfg.PeerEndpoint, peerTag: cfg.PeerTag, forkDir: cfg.ForkDir,
		keepForks:  cmp.Or(cfg.KeepForks, DefaultKeepForks),
		transferFn: cfg.TransferLeadership,
		handover:   handoverBytes,
		round:      reconcileRound,
	}
	if cfg.HandoverBytes > 0 {
		p.handover = min(p.handover, cfg.HandoverBytes)
	}
	return p
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
	if strings.HasPrefix(service, tsp.AdminPrefix) {
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
		if strings.HasPrefix(service, tsp.Prefix) {
			return [][]byte{[]byte(tsp.CodeError), []byte(NotReady)}
		}
		return nil
	}
	if why := p.Waiting(); why != "" && strings.HasPrefix(service, tsp.Prefix) {
		// Still "not active" first: clients move on to another node as
		// from any refusal; people read why.
		return [][]byte{[]byte(tsp.CodeError), []byte(why)}
	}
	return titanic.Refusal(service)
}

// Waiting says why this node refuses clients while it waits for its
// peer: it has never been in sync with it (a new pair's node started
// alone, or a node restarted whose peer went away before it caught up),
// and the peer is not heard. Empty otherwise: a passive node beside a
// live active one, or a node that may take over.
func (p *Pair) Waiting() string {
	if p.caughtUp.Load() || p.star.State() == binarystar.StateActive || p.star.PeerAlive() {
		return ""
	}
	if p.standDownTerm.Load() > 0 {
		return tsp.NotActive.Text("waiting for the peer " + p.peerName() + ": it went on alone while this node's raft link to it was cut," +
			" and holds work this node lacks (see titanic.cluster.standdown)")
	}
	return tsp.NotActive.Text("waiting for the peer " + p.peerName() + " to be in sync once" +
		" (a pair node serves only after it has been in sync with its peer: start both nodes of a new pair)")
}

// peerName names the peer for people: its id and where it is.
func (p *Pair) peerName() string {
	where := p.peerEndpoint
	if where == "" {
		where = p.peerAddr
	}
	return p.peerID + " at " + where
}

// NotReady is the text of an active node's refusal while it is not ready.
const NotReady = string(tsp.NotReady) + ": taking over, retry"

// State is the node's Binary Star state.
func (p *Pair) State() binarystar.State { return p.star.State() }

// Run runs Binary Star and the role loop until ctx is done or Binary Star
// fails (dual actives, dual passives), which is returned: the caller must
// exit.
func (p *Pair) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pruneForks(p.forkDir, p.keepForks, p.log)
	starErr := make(chan error, 1)
	go func() { starErr <- p.star.Run(ctx) }()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.demote("shutting down")
			<-starErr
			p.closePeer()
			return nil
		case err := <-starErr:
			p.demote("binary star stopped")
			p.closePeer()
			if err != nil {
				return fmt.Errorf("binary star: %w", err)
			}
			return nil
		case <-p.kick:
		case <-p.node.LeaderCh():
		case <-t.C:
		case err := <-p.node.Fatal():
			if errors.Is(err, store.ErrDiverged) && p.peerEndpoint != "" {
				// A fork seen while following the peer: this node holds
				// work the peer's log lacks, and raft made the peer's log
				// the one that stands. Whatever Binary Star says, this
				// node does not serve until reconcile has handed its work
				// over to the peer and it has rejoined.
				p.demote("this node's store forked from its peer's")
				p.retryAt = time.Time{}
				break
			}
			p.demote("replica stopped")
			cancel()
			<-starErr
			p.closePeer()
			return fmt.Errorf("pair: %w", err)
		}
		p.sync(ctx)
	}
}

// dialPeer makes the client of the peer's broker, p.peer, unless there is
// one already (Run's goroutine only).
func (p *Pair) dialPeer() error {
	if p.peer != nil {
		return nil
	}
	c, err := p.peerClient()
	if err != nil {
		return err
	}
	p.peer = c
	return nil
}

func (p *Pair) closePeer() {
	if p.peer != nil {
		_ = p.peer.Close()
		p.peer = nil
	}
}

func (p *Pair) sync(ctx context.Context) {
	active := p.star.State() == binarystar.StateActive
	leader := p.node.IsLeader()
	peerAlive := p.star.PeerAlive()
	if p.node.Failed() != nil {
		// Only a fork leaves Run's loop running with a failed replica.
		p.demote("this node's store forked from its peer's")
		if peerAlive {
			p.reconcile(ctx)
		}
		return
	}
	if !leader {
		// A streak of failed transfers or activations is one of this
		// node's leadership: a later one starts afresh.
		p.transferFails, p.transferStuck, p.activateStuck = 0, 0, 0
	}
	if active && !leader && peerAlive {
		if p.notLeaderSince.IsZero() {
			p.notLeaderSince = time.Now()
		}
	} else {
		p.notLeaderSince = time.Time{}
	}
	p.cuMu.Lock()
	if !p.caughtUp.Load() {
		var b memberBasis
		// After a stand-down (see StandDown), only a configuration of
		// a later term than the node had reached counts: leadership of
		// its old raft of two (the link healing before the peer went on
		// alone) does not, as the peer goes on alone all the same.
		floor := p.standDownTerm.Load()
		if !leader || floor > 0 {
			b = p.memberSinceStart()
		}
		if leader && floor == 0 || b.member && b.term() > floor {
			p.caughtUp.Store(true)
			p.standDownTerm.Store(0)
			// With what it counted on (see memberSinceStart): the raft
			// leadership, or the membership it holds against its log's
			// last entry at start. Only values memberSinceStart read:
			// another call into raft here (its configuration goes
			// through raft's loop) shifts the pair's timing enough to
			// expose the loss that the simulation's seed 831874142
			// finds (see README, Pair).
			p.log.Info("caught up with the active peer: may take over if it fails",
				"leader", leader, "config_term", b.configTerm, "config_index", b.configIndex, "voter", b.voter,
				"start_term", b.startTerm, "start_index", b.startIndex, "snapshot_voter_term", b.snapshotVoterTerm,
				"stood_down_at_term", floor)
		}
	}
	p.cuMu.Unlock()
	// A backup that is the only voter of its raft and leads it went on
	// alone before it restarted, and holds everything acknowledged: it
	// may be voted active, as a primary may, while its peer stays down.
	p.star.AllowBackupVote(p.caughtUp.Load() && leader && p.node.Solo())
	if !p.waitWarned && !p.caughtUp.Load() && !peerAlive && !active {
		// Said once: "broker ready" came before, and without this line
		// a new pair's primary started alone refuses every client in
		// silence.
		p.waitWarned = true
		p.log.Warn("not serving until this node has been in sync with its peer once: waiting for the peer; clients are refused \"not active\" meanwhile (a new pair: start both nodes; a node restarted while its peer is down waits for it, unless it went on alone before it stopped)",
			"peer", p.peerID, "peer_endpoint", p.peerEndpoint, "peer_raft", p.peerAddr)
	}
	if !active {
		p.demote("binary star: " + p.star.State().String())
		if peerAlive && p.star.State() == binarystar.StatePassive {
			p.reconcile(ctx)
		}
		return
	}
	if !leader {
		p.demote("not the raft leader")
		// Normally the passive peer hands leadership over. It cannot when
		// a raft is halted for a handover: this node's own (it yielded
		// while passive, then Binary Star made it active, as when its
		// peer restarted), or the peer's, which then hands its work over
		// into a raft this node leads, and only a raft this node leads
		// alone: its configuration may still count the halted peer as a
		// voter, and no election is won without that vote (issue 9).
		// Going on alone is what this node does when the peer is lost:
		// its terms are fenced, and the peer, passive, serves nothing.
		selfHalted := p.node.Halted()
		cut := false
		if peerAlive && !selfHalted && !p.peerHalted(ctx) {
			// Or the raft link alone is cut: the peer stood down.
			if cut = p.raftCut(ctx); !cut {
				return
			}
		}
		if !p.caughtUp.Load() {
			// Active without a vote (the peer restarted beside it) but
			// not caught up, and the peer is gone again (or can hand
			// over only what it took in alone, not what this node
			// lacks): alone, this node may lack acknowledged tickets.
			// Wait for the peer.
			if !p.staleWarned {
				p.staleWarned = true
				p.log.Warn("peer lost or halted before this node caught up: not serving alone; waiting for the peer", "peer_alive", peerAlive)
			}
			return
		}
		switch {
		case cut:
			p.log.Warn("raft link to the passive peer cut (its raft elects nobody while binary star hears the peer), and the peer gave up taking over: reforming raft with this node as the only voter",
				"not_leader_for", time.Since(p.notLeaderSince).Round(time.Millisecond))
		case !peerAlive:
			p.log.Warn("peer lost: reforming raft with this node as the only voter")
		case selfHalted:
			p.log.Warn("active, with this node's raft halted for a handover it no longer makes: reforming raft with this node as the only voter; the passive peer hands its work over here")
		default:
			p.log.Warn("the passive peer halted its raft to hand its work over, and this node is not the raft leader: reforming raft with this node as the only voter to take it")
		}
		above := uint64(0)
		if cut {
			// Past the term the peer stood down at: only a
			// configuration of a later term counts it caught up again.
			above = p.cutAbove
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := p.node.ReformAbove(rctx, above)
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			p.log.Error("reform raft", "err", err)
		}
		return
	}
	// Re-add the peer once in each term: the configuration entry of this
	// term is what tells the peer it has caught up (see caughtUp). A peer
	// that is not a voter asks to join (titanic.cluster.join) once it has
	// reconciled its history with this node's; adding it before would
	// let raft meet a history of its own. A peer without PeerEndpoint
	// (no merge) is added at once, as before.
	if cterm, _ := p.node.ConfigTerm(); peerAlive && (p.node.HasVoter(p.peerID) && cterm < p.node.Status().Term || !p.node.HasVoter(p.peerID) && (p.peerEndpoint == "" || p.peerIsLegacy(ctx))) {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := p.node.AddVoter(actx, p.peerID, p.peerAddr); err != nil {
			p.log.Warn("adding the peer as a voter", "err", err)
		} else {
			p.log.Info("peer added as a voter in this term; it catches up before it may take over")
		}
		cancel()
	}
	if p.withhold.Load() && p.node.HasVoter(p.peerID) {
		// Leading a raft in which the peer votes: it holds whatever
		// this node commits from now on (a stand-down whose answer was
		// lost and a reform that failed leave the raft of two).
		p.withhold.Store(false)
	}
	if !p.serving.Load() {
		if err := p.svc.Activate(ctx); err != nil {
			p.log.Warn("active but could not activate the dispatcher", "err", err)
			p.activateStuck++
			if !errors.Is(err, raft.ErrLeadershipTransferInProgress) {
				p.activateStuck = 0
			}
			if p.activateStuck >= stepDownAfter {
				// This node's raft instance is stuck (hashicorp/raft#696,
				// from a transfer it tried while passive): it refuses
				// every write, the activation's barrier among them, in
				// any term it leads. A new instance is free of it; the
				// peer leads meanwhile and hands leadership back, or,
				// if the peer is gone, this node reforms alone.
				p.log.Warn("raft refuses every write as a leadership transfer in progress: stepping down to restart it",
					"failures", p.activateStuck)
				p.activateStuck = 0
				p.stepDown()
			}
			return
		}
		p.activateStuck = 0
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

// transfer hands raft leadership to the active peer. A transfer that keeps
// failing leaves the pair with nobody serving, so failures are logged (at
// most every 10 s) with the cause, and this node steps down instead
// (replica.StepDown: raft restarts, and stands for no election for a
// while), so that the active peer, which then hears no leader, is
// elected:
//
//   - after stepDownAfter refusals in a row with "transfer in progress":
//     transfer waits for each of its transfers, so raft's flag outlived
//     them; that is hashicorp/raft#696 (a transfer cut short by a lost
//     leadership leaves the instance refusing every later transfer, in
//     any term it leads), which only a new instance is free of;
//   - after transferGiveUp of failures of any kind. Not sooner: a
//     transfer also fails while the peer catches up (each waits one
//     election timeout), and a restart would cut a snapshot short.
//
// Stepping down changes no Binary Star state and no data: this passive
// node served nothing, raft's log, term and vote are durable, and raft's
// election rule still elects only a node that holds every committed entry.
func (p *Pair) transfer() {
	transfer := p.node.TransferLeadership
	if p.transferFn != nil {
		transfer = p.transferFn
	}
	err := transfer(p.peerID, p.peerAddr)
	if err == nil {
		p.transferFails, p.transferStuck = 0, 0
		return
	}
	if p.transferFails == 0 {
		p.transferSince = time.Now()
	}
	p.transferFails++
	p.transferStuck++
	if !errors.Is(err, raft.ErrLeadershipTransferInProgress) {
		p.transferStuck = 0
	}
	if p.transferFails == 1 || time.Since(p.transferWarned) > 10*time.Second {
		p.log.Warn("leadership transfer to the active peer failed; trying again", "err", err, "failures", p.transferFails)
		p.transferWarned = time.Now()
	}
	if p.transferStuck < stepDownAfter && time.Since(p.transferSince) < transferGiveUp {
		return
	}
	p.log.Warn("leadership transfers to the active peer keep failing: stepping down so that the peer is elected",
		"failures", p.transferFails, "since", p.transferSince, "last_err", err)
	p.transferFails, p.transferStuck = 0, 0
	p.stepDown()
}

// stepDown restarts this node's raft so that it leads no more (see
// transfer). Leadership lost meanwhile is what it was for.
func (p *Pair) stepDown() {
	err := p.node.StepDown()
	switch {
	case errors.Is(err, replica.ErrNotLeader):
		p.log.Info("not the raft leader any more: no need to step down")
	case err != nil:
		p.log.Error("stepping down from raft leadership", "err", err)
	}
}

// When a passive raft leader steps down (see transfer): after
// stepDownAfter transfers in a row refused as "in progress" (they are
// tried every 100 ms at most), or after transferGiveUp of failures.
const (
	stepDownAfter  = 5
	transferGiveUp = 30 * time.Second
)

// reconcile brings a passive node whose peer is active into the active's
// raft without losing what either side acknowledged. It runs on Run's
// goroutine, at most once a second until the node has joined.
//
// The node asks the peer for its applied history (titanic.cluster.history)
// and compares it with its own (store.History.ForkPoint):
//
//   - Its history is a prefix of the peer's: it holds nothing the peer
//     lacks. If it leads a raft of its own (it went on alone once and
//     restarted), it leaves it (Resync, keeping the store), then asks
//     the peer to add it (titanic.cluster.join).
//   - The peer's history is a prefix of its own and it leads: the peer
//     is behind and forked nothing (a survivor that died came back after
//     its peer restarted). It adds the peer and hands leadership over;
//     the transfer brings the peer up to date first.
//   - Otherwise the two forked: a split brain, or this node served alone
//     after its peer had. This node yields (Binary Star made the other
//     one active): it hands every change it made after the fork point
//     over to the peer (titanic.cluster.adopt; store.BoltStore.ForkOps),
//     each batch durable there before the next, then drops its fork
//     (Resync into ForkDir, where the dropped state stays) and asks to
//     join. The peer applies the handover idempotently, so a handover
//     cut short is simply redone: adoptions are taken once, and each
//     batch is marked with the handover's name and which of its ops it
//     holds (store.OpHandover, from cluster version 6; by their keys in
//     the solo journal from 7, so that a fork that grew between two
//     tries is still the same handover), so the peer takes none of its
//     ops twice, over what its clients did in between.
func (p *Pair) reconcile(ctx context.Context) {
	if p.node.IsLeader() && p.node.HasVoter(p.peerID) && p.node.Failed() == nil {
		// A raft of two, led by the passive (it won an election): no
		// history of its own can be there. Leadership goes to the
		// active; the transfer brings it up to date first.
		p.transfer()
		return
	}
	if p.node.IsLeader() && p.node.Failed() == nil && p.peerWithoutVote() {
		// The active peer follows this node's raft without a vote: it
		// rejoined while this node was active, and Binary Star made it
		// active since (this node restarted). It holds a prefix of this
		// raft's log and nothing of its own (a member without a vote
		// never goes on alone), but cannot lead: give it its vote, and
		// leadership at the next round (the first case). Taken for a
		// raft of this node's own, it was left (Resync), and nobody
		// could lead: the pair simulation under -race, seed 5.
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := p.node.AddVoter(actx, p.peerID, p.peerAddr)
		cancel()
		if err != nil {
			p.log.Warn("giving the active peer, a member without a vote, its vote", "err", err)
			return
		}
		p.log.Info("the active peer, a member of this node's raft without a vote, has one now; leadership goes to it next")
		return
	}
	if p.peerEndpoint == "" || time.Now().Before(p.retryAt) {
		return
	}
	joined := p.joined()
	// A voter by a configuration received since its start: its own from
	// before (a cut, a restart) says voter until the leader's entries
	// replace it, and taken for the leader's it asked to be added again
	// as a voter while far behind (askReadd), and the leader's commits
	// waited for its whole catch-up.
	voter := p.node.VoterSinceStart()
	if joined && voter && p.caughtUp.Load() {
		return
	}
	p.retryAt = time.Now().Add(time.Second)
	if err := p.dialPeer(); err != nil {
		p.log.Warn("client of the peer's broker", "endpoint", p.peerEndpoint, "err", err)
		return
	}
	cctx, cancel := context.WithTimeout(ctx, p.round)
	defer cancel()
	if !joined && time.Since(p.addedAt) < joinSettle {
		return // added a moment ago: the peer's raft has not reached it yet
	}
	if joined {
		if !voter {
			// By its store against the active's: a node restarted in
			// the active's term (a voter all along, close behind: the
			// active committed nothing without it) asks at once; one
			// that rejoined without a vote, once close behind. Also
			// when caught up once before: a node that followed as a
			// voter, then rejoined without one.
			p.askPromotion(cctx)
			return
		}
		p.askReadd(cctx)
		return
	}
	peer, err := p.peerHistory(cctx)
	if err != nil {
		return
	}
	if peer.Halted {
		p.takeHandover(ctx)
		return
	}
	theirs := peer.History
	ours, err := p.node.History(cctx)
	if err != nil {
		p.log.Error("this node's history", "err", err)
		return
	}
	resynced := false
	fork := ours.ForkPoint(theirs)
	if split := fork < ours.Applied && fork < theirs.Applied; split && (p.node.IsLeader() || p.node.Halted()) {
		// About to yield (or yielding): only to an active that can take
		// the handover (see peerCannotTake).
		why, peerTerm, err := p.peerCannotTake(cctx, theirs)
		if err != nil {
			return // asked again at the next round, before yielding
		}
		if why != "" {
			p.keepFromPeer(cctx, why, peerTerm, fork, ours.Applied, theirs.Applied)
			return
		}
	}
	if ahead := fork >= theirs.Applied && fork < ours.Applied; p.node.IsLeader() && !ahead {
		// A leader of its own raft that will not bring its peer up to
		// date: it stops taking entries before it reads what to hand
		// over (a submit in flight could land after the read and be
		// dropped with the fork), then reads its history again.
		if err := p.node.Halt(); err != nil {
			p.log.Error("stopping raft before the handover", "err", err)
			return
		}
		if ours, err = p.node.History(cctx); err != nil {
			p.log.Error("this node's history", "err", err)
			return
		}
		fork = ours.ForkPoint(theirs)
	}
	switch {
	case fork >= ours.Applied:
		// Leave a raft of its own (one that has this node as the only
		// voter, or that stopped); a new, empty member just asks again.
		self, _ := p.node.Self()
		if p.node.Failed() == nil && p.node.Status().State != "Shutdown" && p.node.HasVoter(self) && p.peerWithoutVote() {
			// Not a raft of this node's own: the peer follows it without
			// a vote (this node restarted and has not led again yet).
			// Left, nobody could lead (the peer has no vote); once this
			// node leads, it gives the peer its vote (reconcile's
			// second case).
			return
		}
		if p.node.Failed() != nil || p.node.Status().State == "Shutdown" || p.node.HasVoter(self) && !p.node.HasVoter(p.peerID) {
			p.log.Info("this node holds nothing its active peer lacks; leaving its own raft to rejoin the peer's",
				"applied", ours.Applied, "peer_applied", theirs.Applied)
			if !p.resync(cctx, true) {
				return
			}
			resynced = true
		}
	case fork >= theirs.Applied:
		// This node holds everything the peer does, and more: never
		// drop any of it. Leading, it brings the peer up to date and
		// hands leadership over; otherwise raft is on it already.
		if !p.node.IsLeader() {
			return
		}
		p.log.Info("the active peer is behind this node and forked nothing: bringing it up to date, then handing leadership over",
			"applied", ours.Applied, "peer_applied", theirs.Applied)
		if !p.node.HasVoter(p.peerID) {
			p.addPeer(cctx)
			return
		}
		p.transfer()
		return
	default:
		if left, ok := p.repeats.Allow(time.Now(), "split"); ok {
			p.log.Warn("split brain: this node and its active peer each hold work the other lacks; handing this node's over",
				"fork_index", fork, "applied", ours.Applied, "peer_applied", theirs.Applied,
				"epochs", lastEpochs(ours), "peer_epochs", lastEpochs(theirs), "suppressed", left)
		}
		ops, batches := 0, 0
		cv, _ := p.node.ClusterVersion(cctx)
		// Each batch marked with the handover's name and which of its
		// ops it holds (store.OpHandover), so that the peer takes none
		// of them twice: a redo (an answer lost, this node restarted
		// between two batches, or serving alone again in between)
		// re-applied the verdicts on tickets both sides held and the
		// pauses over what the peer's clients did in between (a retry
		// of a ticket the handover failed undone). By their keys in the
		// solo journal when the peer reads them (cluster version 7): a
		// fork that grew between two tries is still the same handover,
		// and the peer takes what changed since alone. By position at
		// version 6: a fork that grew is another handover, taken whole
		// again. Below it (an older peer), unmarked, as before.
		//
		// The form is the first try's on every redo, not this node's
		// cluster version now: serving alone between two tries, its
		// leader (the only member) raises it, and a first try marked
		// by position and a redo marked by key named the handover
		// differently (HandoverID, HandoverName), so the peer took the
		// redo whole again, undoing what its clients did since.
		self, _ := p.node.Self()
		form, err := p.node.HandoverForm(cctx, self, fork, cv)
		if err != nil {
			p.log.Error("the form of the handover", "err", err)
			return
		}
		var hid store.ID
		switch {
		case form >= store.HandoverKeyVersion:
			hid = store.HandoverName(self, fork)
		case form >= store.HandoverMarkVersion:
			if hid, err = p.node.HandoverID(cctx, self, fork); err != nil {
				p.log.Error("naming the handover", "err", err)
				return
			}
		}
		err = p.node.HandoverOps(cctx, fork, p.handover, func(batch []store.Op, keys []store.HandoverKey) error {
			if cv < store.AdoptHistoryVersion {
				// The peer may run a release that cannot read an
				// adoption's attempts (this pair's version is below
				// the one that added them): it adopts the tickets as
				// never dispatched, as such a release does.
				for i := range batch {
					batch[i] = batch[i].WithoutAdoptHistory()
				}
			}
			if form < store.HandoverPurgeVersion {
				// A peer below it refuses an OpPurge in a merge (and
				// the whole batch with it): a purge goes over as the
				// close it took until then. By the first try's form,
				// as the marks are: the same handover on every redo.
				for i := range batch {
					batch[i] = batch[i].PurgeAsClose()
				}
			}
			send := batch
			switch {
			case form >= store.HandoverKeyVersion:
				send = append([]store.Op{store.HandoverKeyedMark(hid, keys)}, batch...)
			case form >= store.HandoverMarkVersion:
				send = append([]store.Op{store.HandoverMark(hid, ops, len(batch))}, batch...)
			}
			rep, err := p.peer.Request(cctx, tsp.SvcAdopt, [][]byte{store.EncodeOps(send)})
			if err != nil {
				return err
			}
			if len(rep) == 0 || string(rep[0]) != "200" {
				return fmt.Errorf("peer refused the handover: %q", rep)
			}
			ops += len(batch)
			batches++
			return nil
		})
		if err != nil {
			if left, ok := p.repeats.Allow(time.Now(), "handover failed"); ok {
				p.log.Warn("handing the fork over to the peer; will retry", "handed_ops", ops, "err", err, "suppressed", left)
			}
			return
		}
		p.log.Warn("fork handed over to the active peer", "ops", ops, "batches", batches)
		if !p.resync(cctx, false) {
			return
		}
		resynced = true
	}
	// Not caught up from now: this node lacks what the peer committed
	// alone, and takes over from nobody until a configuration that
	// gives it a vote arrives (memberSinceStart), after all of that in
	// the log. Set before the request: the peer may add it and the
	// answer be lost.
	p.node.ForgetMembership()
	p.caughtUp.Store(false)
	// Without a vote first when the catch-up is long: a voter that lags
	// holds every commit of a raft of two until it has caught up (31 s
	// of no acknowledgement after a failover at 10,000,000 pending). A
	// node that left its raft (Resync) catches up from a snapshot, a
	// copy of the peer's store; one far behind, from many entries. Close
	// behind, it joins as a voter at once: the pair is whole a round
	// sooner. A release that does not know the nonvoter join answers
	// 400: then as a voter, as before.
	// And after a stand-down (see StandDown): this node's raft link to
	// the peer may still be cut, and a voter it cannot reach would stop
	// the peer's every commit; it asks for its vote once it follows.
	nonvoter := resynced || p.standDownTerm.Load() > 0 || theirs.Applied > ours.Applied+promoteSlack
	if nonvoter {
		p.nonvoterSince = time.Now()
	}
	err = p.askJoin(cctx, nonvoter)
	p.joinedWithoutVote = nonvoter && err == nil
	if nonvoter && errors.Is(err, errJoinRefused) {
		p.log.Info("the active peer adds no member without a vote (an older release): asking to join as a voter", "err", err)
		nonvoter = false
		err = p.askJoin(cctx, false)
	}
	if err != nil {
		p.log.Info("asking the active peer to add this node", "err", err)
		return
	}
	// Soon again: the vote it asks for once close behind is what makes
	// the pair whole.
	p.retryAt = time.Now().Add(promotePoll)
	p.addedAt = time.Now()
	p.log.Info("the active peer added this node; catching up", "voter", !nonvoter, "applied", ours.Applied, "peer_applied", theirs.Applied)
}

// addPeer adds the active peer as a voter of the raft this node leads
// (reconcile): the peer follows it, and leadership goes to it at a later
// round (reconcile's first case). If the peer holds work of its own, its
// log guard finds the fork as it follows, and it hands that work over into
// this node's raft (takeHandover).
func (p *Pair) addPeer(ctx context.Context) {
	// A real snapshot first, as for any join: if the peer's fork is
	// found and it resyncs, it needs one, and a raft of two that holds
	// only the reform's placeholder can neither send it nor commit the
	// entries a new one needs (the simulation stalled that way, 0 nodes
	// serving). Briefly: this loop also watches the peer, and at depth
	// the snapshot takes minutes (raft goes on with it; a later round
	// finds it done).
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err := p.node.PrepareJoin(pctx)
	cancel()
	if err != nil {
		p.log.Warn("preparing to add the active peer; will retry", "err", err)
		return
	}
	if err := p.node.AddVoter(ctx, p.peerID, p.peerAddr); err != nil {
		p.log.Warn("adding the active peer as a voter", "err", err)
		return
	}
	// Not handed over in the same breath: the peer may still lead a raft
	// of its own (it went on alone), and a transfer sent before this
	// node's first entries reach it (raft starts a new member's
	// replication as if it were up to date, and sends the transfer's
	// TimeoutNow at once) makes it elect itself alone in a term outside
	// its fence: two leaders of one term, whose entries at the same index
	// raft then takes for the same, and the tickets of one are lost (the
	// pair simulation, seed 831874142). The next round of reconcile
	// hands leadership over (its first case), once the peer follows.
}

// peerCannotTake says why the active peer cannot take this node's
// handover after a split brain, or "" if it can (or does not say: a
// release that does not report caught_up in titanic.cluster, which this
// node yields to as before). A handover goes into a raft the peer leads:
// the peer leads one, follows a leader, or, caught up, goes on alone
// once this node has halted (sync). A peer that is neither caught up nor
// hears a leader can do none of it: its raft of two needs this node's
// vote, which a halted raft never gives, and it may not go on alone (it
// may lack acknowledged work). Yielding to it, this node would halt for
// a handover nobody takes, and neither node would serve again (the pair
// simulation, seed 80084, 0 nodes serve). With it, a bound on the term of
// the last entry of the peer's log, which keepFromPeer needs: that of the
// last it applied (theirs, its history), or, if its log holds entries past
// those, its raft's current term (0 if it did not say). Not the current
// term always: a peer that stands for election in its raft of two takes
// this node's term from each answer, and would stay level with it. An
// error: the peer could not be asked.
func (p *Pair) peerCannotTake(ctx context.Context, theirs store.History) (string, uint64, error) {
	rep, err := p.peer.Request(ctx, tsp.SvcCluster, [][]byte{{}})
	if err == nil && (len(rep) == 0 || string(rep[0]) != "200") {
		err = fmt.Errorf("peer answered %q", rep)
	}
	if err != nil {
		p.log.Info("asking the active peer for its raft status before handing this node's work over", "err", err)
		return "", 0, err
	}
	kv := map[string]string{}
	for _, f := range rep[1:] {
		k, v, _ := strings.Cut(string(f), "=")
		kv[k] = v
	}
	if kv[caughtUpKey] != "false" || kv["state"] == "Leader" || kv["leader"] != "" {
		return "", 0, nil
	}
	var term uint64
	if n := len(theirs.Epochs); n > 0 {
		term = theirs.Epochs[n-1].Term
	}
	if last, _ := strconv.ParseUint(kv["last"], 10, 64); last > theirs.Applied {
		term, _ = strconv.ParseUint(kv["term"], 10, 64)
	}
	return "the active peer is not caught up and its raft has no leader (state " + kv["state"] + "): it could neither lead nor go on alone to take a handover", term, nil
}

// caughtUpKey is the titanic.cluster key by which a pair's node says
// whether it is caught up (may take over).
const caughtUpKey = "caught_up"

// keepFromPeer is reconcile's course after a split brain when the active
// peer cannot take this node's handover (peerCannotTake says why): this
// node does not yield. Leading its own raft, it adds the peer, which
// then hands its own work over into that raft (addPeer) and rejoins; it
// takes leadership once caught up. Halted for a handover already (the
// peer could take it then; it restarted since), it first takes its raft
// up again (Reform: it led that raft alone, and holds all of it), and
// adds the peer at the next round.
//
// And only from a term later than that of the last entry of the peer's
// log (peerTerm, a bound on it; see peerCannotTake). Added in an
// earlier one, the peer's log is the more up to date by raft's election
// rule: the peer wins this raft of two with this node's vote and leads
// it with its own fork, and this node, whose log the join's snapshot
// compacted (addPeer), refuses each of the peer's entries at an index
// it no longer holds, while the peer, holding them, never sends a
// snapshot instead. Nothing commits, and neither node serves again (a
// loaded machine gave the active's fork the later term). So this node
// reforms in a term past the peer's first, as when halted, and adds the
// peer at the next round: its configuration entry, of that term, makes
// its log the more up to date, the peer follows it, and the peer's log
// guard finds its fork.
func (p *Pair) keepFromPeer(ctx context.Context, why string, peerTerm, fork, applied, peerApplied uint64) {
	halted := p.node.Halted()
	term := p.node.Status().Term
	if left, ok := p.repeats.Allow(time.Now(), "not yielding"); ok {
		p.log.Warn("split brain, and this node does not yield yet: "+why+"; this node keeps its raft and brings the peer into it, and the peer hands its own work over here",
			"halted", halted, "term", term, "peer_term", peerTerm, "fork_index", fork, "applied", applied, "peer_applied", peerApplied, "suppressed", left)
	}
	if !halted && term > peerTerm {
		p.addPeer(ctx)
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.node.ReformAbove(rctx, peerTerm); err != nil && !errors.Is(err, context.Canceled) {
		p.log.Error("reform raft", "err", err)
	}
}

// askJoin asks the active peer to add this node (titanic.cluster.join),
// as a voter or, if nonvoter, without a vote; nil once it answered 200.
func (p *Pair) askJoin(ctx context.Context, nonvoter bool) error {
	if nonvoter {
		return p.askJoinAs(ctx, tsp.JoinNonvoter)
	}
	return p.askJoinAs(ctx, "")
}

// askJoinAs is askJoin with the join's third frame: tsp.JoinNonvoter,
// tsp.JoinVoter (a member asking for its vote), or none ("").
func (p *Pair) askJoinAs(ctx context.Context, role string) error {
	ctx, stop := p.untilLeader(ctx)
	defer stop()
	id, addr := p.node.Self()
	body := [][]byte{[]byte(id), []byte(addr)}
	if role != "" {
		body = append(body, []byte(role))
	}
	rep, err := p.peer.Request(ctx, tsp.SvcJoin, body)
	switch {
	case err != nil && errors.Is(context.Cause(ctx), errLeadsRaft):
		return errLeadsRaft
	case err != nil:
		return err
	case len(rep) > 0 && string(rep[0]) == "400":
		return fmt.Errorf("%w: %q", errJoinRefused, rep)
	case len(rep) == 0 || string(rep[0]) != "200":
		return fmt.Errorf("peer answered %q", rep)
	}
	return nil
}

// errJoinRefused is a join the peer answered 400: it does not take that
// request (a nonvoter join sent to an older release).
var errJoinRefused = errors.New("the peer refused the join request")

// promoteSlack is how far behind its active peer's store (in raft
// entries) a member without a vote may be when it asks for one: once it
// votes, every commit waits for it, so it asks only when the wait is
// short (at a few hundred entries a second under load, about a second).
const promoteSlack = 256

// promoteWait is how long a member without a vote waits to come within
// promoteSlack before it asks for a vote anyway: under a load its
// catch-up never closes, a pair without a second copy of each commit is
// worse than commits that wait for it while it catches up the rest.
const promoteWait = time.Minute

// joinSettle is how long after the peer added it a node waits for the
// peer's raft to reach it before it asks to join again.
const joinSettle = 2 * time.Second

// promotePoll is how often a member without a vote compares its store
// with its peer's (a request for the peer's history each time).
const promotePoll = 200 * time.Millisecond

// askPromotion asks the active peer, whose raft this node follows without
// a vote, for one (titanic.cluster.join as a voter) once this node's
// store is within promoteSlack entries of the peer's. Until it votes it
// has not caught up (see memberSinceStart) and does not take over; the
// peer meanwhile commits alone, as it did while this node was away.
func (p *Pair) askPromotion(ctx context.Context) {
	if p.nonvoterSince.IsZero() {
		p.nonvoterSince = time.Now() // restarted as a member without a vote
	}
	peer, err := p.peerHistory(ctx)
	if errors.Is(err, errFirstRelease) {
		self, selfAddr := p.node.Self()
		if !p.joinedWithoutVote && p.node.HasVoterAt(self, selfAddr) {
			// An active of the first release has no history to
			// compare, and adds nobody without a vote: this node,
			// restarted in its term, is a voter of its configuration
			// as before (as the configuration it holds says), and asks
			// to be added again, as that release expects.
			p.askReadd(ctx)
		}
		return
	}
	if err != nil {
		return
	}
	ours, err := p.node.History(ctx)
	if err != nil {
		p.log.Error("this node's history", "err", err)
		return
	}
	behind := int64(peer.Applied) - int64(ours.Applied)
	if behind > promoteSlack && time.Since(p.nonvoterSince) < promoteWait {
		p.retryAt = time.Now().Add(promotePoll)
		if time.Since(p.catchUpLogged) > 10*time.Second {
			p.catchUpLogged = time.Now()
			p.log.Info("catching up without a vote", "applied", ours.Applied, "peer_applied", peer.Applied, "behind", behind)
		}
		return
	}
	self, selfAddr := p.node.Self()
	again := !p.joinedWithoutVote && p.node.HasVoterAt(self, selfAddr) // restarted in the active's term
	// Explicitly (tsp.JoinVoter): this node follows the peer's raft
	// (reconcile asks only when joined), and an active that withholds
	// this node's vote (raft's link was found cut, see StandDown) gives
	// it only on this request, not on a plain join, which a node sends
	// also while cut off (restarted after it stood down, it knows
	// nothing of that).
	err = p.askJoinAs(ctx, tsp.JoinVoter)
	if errors.Is(err, errJoinRefused) {
		// A build without the explicit request (400), or a peer that
		// does not count this node a member: a plain join, as before.
		err = p.askJoin(ctx, false)
	}
	if err != nil {
		p.log.Info("asking the active peer for a vote", "err", err)
		return
	}
	if again {
		// The log line the failover tests look for (askReadd's).
		p.log.Info("the active peer added this node again in its term; catching up", "applied", ours.Applied, "peer_applied", peer.Applied, "behind", behind)
		return
	}
	p.log.Info("the active peer gave this node a vote; it may take over once it holds that configuration",
		"applied", ours.Applied, "peer_applied", peer.Applied, "behind", behind, "without_vote_for", time.Since(p.nonvoterSince).Round(time.Millisecond))
}

// peerHistory asks the peer for its applied history
// (titanic.cluster.history); false, with the failure logged, if it could
// not be had.
func (p *Pair) peerHistory(ctx context.Context) (PeerHistory, error) {
	frames, err := p.peer.Request(ctx, tsp.SvcHistory, [][]byte{{}})
	if err != nil {
		p.log.Info("asking the active peer for its history", "endpoint", p.peerEndpoint, "err", err)
		return PeerHistory{}, err
	}
	if firstReleaseAnswer(frames) {
		p.log.Debug("the active peer runs the first release: no history to compare", "endpoint", p.peerEndpoint)
		return PeerHistory{}, errFirstRelease
	}
	peer, err := DecodeHistory(frames)
	if err != nil {
		p.log.Warn("the active peer's history", "err", err)
		return PeerHistory{}, err
	}
	return peer, nil
}

// errFirstRelease is peerHistory's error when the peer runs the first
// release (v0.1.0), which has no titanic.cluster.history.
var errFirstRelease = errors.New("the peer runs the first release: it has no titanic.cluster.history")

// firstReleaseAnswer reports whether rep is the first release's answer to
// titanic.cluster.history: an unknown admin service.
func firstReleaseAnswer(rep [][]byte) bool {
	return len(rep) > 1 && string(rep[0]) == "400" && strings.Contains(string(rep[1]), "unknown admin service")
}

// errLeadsRaft ends a request to the peer that cannot succeed while this
// node leads raft.
var errLeadsRaft = errors.New("this node leads raft now: the peer cannot add it; leadership goes to the active peer first")

// leaderPoll is how often a request to the peer checks whether this node
// has become the raft leader (untilLeader).
const leaderPoll = 50 * time.Millisecond

// untilLeader returns ctx, also cancelled (cause errLeadsRaft) once this
// node leads raft. A join is answered only by the raft leader, and the
// peer client retries the peer's "not active" until its tries are spent
// (15 s). A passive node whose log is the longer one wins the election
// while it waits (a restart after the active was cut off and killed does
// that), and the active, which Binary Star chose, then refuses it the
// whole time while this node's loop, blocked in the request, cannot hand
// leadership over (reconcile's first case): the pair served nothing for
// those 15 s in the fault suite. Polled, because raft's leadership
// channel belongs to Run's loop.
func (p *Pair) untilLeader(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(leaderPoll)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if p.node.IsLeader() {
					cancel(errLeadsRaft)
					return
				}
			}
		}
	}()
	return ctx, func() {
		close(done)
		cancel(nil)
	}
}

// askReadd asks the active peer, whose raft this node follows as a voter,
// to add it again (titanic.cluster.join): the configuration entry that
// writes is what lets this node count as caught up (memberSinceStart)
// when it restarted in the active's term, which otherwise writes one only
// in its next term. Every release's join adds a voter already there again.
// A node whose voter configuration came after its start asks this way; one
// whose configuration is from before asks through askPromotion (by its
// store against the active's: its configuration may be from before a
// cut), or this way if the active is of the first release (no history).
func (p *Pair) askReadd(ctx context.Context) {
	if err := p.askJoin(ctx, false); err != nil {
		p.log.Info("asking the active peer to add this node again, to count as caught up", "err", err)
		return
	}
	p.log.Info("the active peer added this node again in its term; catching up")
}

// peerIsLegacy reports whether the peer runs a release that has no
// titanic.cluster.history (the first wave: v0.1.0). Not a voter, it never
// asks to join, but waits to be added as that release's active did, so
// this node adds it as before, with that release's rules (whatever it
// took in alone is not merged). It asks at most every few seconds.
func (p *Pair) peerIsLegacy(ctx context.Context) bool {
	if p.peerClient == nil || time.Now().Before(p.legacyAt) {
		return p.legacyPeer
	}
	p.legacyAt = time.Now().Add(5 * time.Second)
	if p.dialPeer() != nil {
		return false
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	rep, err := p.peer.Request(cctx, tsp.SvcHistory, [][]byte{{}})
	legacy := err == nil && firstReleaseAnswer(rep)
	if legacy && !p.legacyPeer {
		p.log.Warn("the peer runs an older release that cannot reconcile a split brain: adding it back as that release expects; upgrade it",
			"answer", fmt.Sprintf("%q", rep))
	}
	p.legacyPeer = legacy
	return legacy
}

// takeHandover readies this passive node for the handover of an active
// peer whose replica halted on a fork (it followed this node's raft and
// met entries of its own there): the peer cannot take entries, so the
// handover goes the other way, into a raft this node leads. This node's
// raft may be waiting for the halted peer's vote (it had added the peer,
// to bring it up to date, when the fork showed): it goes on alone, in a
// fenced term, and takes the peer's handover and then its join; leadership
// then goes back to the active (reconcile's first case).
func (p *Pair) takeHandover(ctx context.Context) {
	if p.node.Failed() != nil {
		if !p.staleWarned {
			p.staleWarned = true
			p.log.Error("this node and its active peer both halted on a fork: neither can take the other's work; restart one of them (its work is kept, and handed over once it rejoins)")
		}
		return
	}
	if p.node.IsLeader() {
		return // the peer hands its work over here, then asks to join
	}
	p.log.Warn("the active peer halted on a fork and cannot take entries: going on alone to take its handover")
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.node.Reform(rctx); err != nil && !errors.Is(err, context.Canceled) {
		p.log.Error("reform raft", "err", err)
	}
}

// peerHalted reports whether the peer says its replica is halted
// (titanic.cluster.history): it takes no entries until it has handed its
// work over. It asks at most once a second (haltAskAt) and reports false
// meanwhile, and when the peer cannot be asked.
func (p *Pair) peerHalted(ctx context.Context) bool {
	if p.peerEndpoint == "" || p.peerClient == nil || time.Now().Before(p.haltAskAt) {
		return false
	}
	p.haltAskAt = time.Now().Add(time.Second)
	if err := p.dialPeer(); err != nil {
		p.log.Warn("client of the peer's broker", "endpoint", p.peerEndpoint, "err", err)
		return false
	}
	// Not for long once Binary Star has lost the peer: the lost peer's
	// case (reform alone) waits for this loop.
	cctx, cancel := p.whilePeerHeard(ctx, 2*time.Second)
	defer cancel()
	frames, err := p.peer.Request(cctx, tsp.SvcHistory, [][]byte{{}})
	if err != nil {
		p.log.Debug("asking the passive peer for its history", "endpoint", p.peerEndpoint, "err", err)
		return false
	}
	h, err := DecodeHistory(frames)
	if err != nil {
		// A release without the service (peerIsLegacy) never halts.
		p.log.Debug("the passive peer's history", "err", err)
		return false
	}
	return h.Halted
}

// handoverBytes bounds one batch of a fork handover (one raft entry on
// the peer).
const handoverBytes = 1 << 20

// reconcileRound bounds one round of reconcile's requests to the peer (a
// handover of many batches included; not the resync's copy of the store).
const reconcileRound = 30 * time.Second

// resync drops this node's raft state (and, unless keepStore, its store
// content) into a new directory under ForkDir. It reports success.
func (p *Pair) resync(ctx context.Context, keepStore bool) bool {
	aside := filepath.Join(p.forkDir, forkName(time.Now()))
	if err := p.node.Resync(ctx, keepStore, aside); err != nil {
		p.log.Error("dropping this node's raft state", "aside", aside, "err", err)
		return false
	}
	pruneForks(p.forkDir, p.keepForks, p.log)
	p.caughtUp.Store(false)
	p.staleWarned = false
	return true
}

// peerWithoutVote reports whether the peer is a member of this node's raft
// configuration without a vote.
func (p *Pair) peerWithoutVote() bool {
	m, ok := p.node.MemberAt(p.peerID, p.peerAddr)
	return ok && !m.Voter
}

// joined reports whether this node follows its peer in a raft of two.
func (p *Pair) joined() bool {
	if p.node.Failed() != nil {
		return false
	}
	leader, _ := p.node.Leader()
	return leader == p.peerID && p.node.HasVoter(p.peerID)
}

// MaybeElsewhere implements titanic.Config.MaybeElsewhere: while this
// node's raft has it as the only voter, its peer may hold a split of its
// own, not handed over yet, and the tickets the peer minted may be there.
func (p *Pair) MaybeElsewhere(id store.ID) bool {
	return !p.forgotten.Load() && titanic.Tagged(id, p.peerTag) && p.node.Solo()
}

// ForgetPeerSplit stops answering "not ready" for tickets the peer may
// hold (MaybeElsewhere), for an operator whose peer will not come back.
// It says what that gives up.
func (p *Pair) ForgetPeerSplit() string {
	p.forgotten.Store(true)
	p.log.Warn("operator: not waiting for the peer's split any more")
	return "this node no longer waits for its peer's split: tickets the peer acknowledged while the pair was split, " +
		"and has not handed over yet, now answer 400 (unknown) here. Nothing is deleted: if the peer comes back, " +
		"it still hands them over and they answer again. Until this node restarts."
}

// lastEpochs formats the last few epochs of h for a log line.
func lastEpochs(h store.History) string {
	e := h.Epochs
	if len(e) > 6 {
		e = e[len(e)-6:]
	}
	var b strings.Builder
	for _, x := range e {
		fmt.Fprintf(&b, "%d@%d", x.Term, x.Start)
		if x.End != 0 {
			fmt.Fprintf(&b, "-%d", x.End)
		}
		b.WriteByte(' ')
	}
	return strings.TrimSpace(b.String())
}

// memberSinceStart reports whether this node holds a configuration that
// makes it a voter, written in a term later than its log's last when it
// started, which is raft's current term: by an entry it applied, or
// inside a snapshot it installed.
//
// A configuration entry of the term this node is in, at an index past
// its log's last at start, counts too: it came from the current leader
// after this node started, so this node holds that leader's log up to
// it, and a leader goes on alone only in a term of its own (Reform), so
// everything it commits later in this term needs this node's vote. That
// is the case of a node restarted beside an active peer that kept its
// term: the peer re-adds it when asked (see askPromotion, and askReadd
// for a peer of the first release).
func (p *Pair) memberSinceStart() memberBasis {
	b := memberBasis{startTerm: p.node.StartTerm(), startIndex: p.node.StartIndex(), configIndex: p.node.ConfigIndex()}
	b.configTerm, b.voter = p.node.ConfigTerm()
	switch {
	case b.voter && b.configTerm > b.startTerm && b.configTerm == p.node.Term():
		// Of the current term too: a configuration of an earlier term
		// may be one that never committed in a raft of two (the leader
		// gave this node a vote, could not reach it, and went on alone,
		// which commits its whole log), followed in the leader's log by
		// work this node does not hold yet. The leader writes one in
		// each of its terms while this node is a voter (sync), and its
		// promotions are written in its term.
		b.member = true
	case b.voter && b.configTerm == p.node.Status().Term && b.configIndex > b.startIndex:
		b.member = true
	default:
		b.snapshotVoterTerm = p.node.SnapshotVoterTerm()
		b.member = b.snapshotVoterTerm > b.startTerm
	}
	return b
}

// term is the term of the configuration that made b a member.
func (b memberBasis) term() uint64 {
	if b.snapshotVoterTerm > 0 {
		return b.snapshotVoterTerm
	}
	return b.configTerm
}

// memberBasis is what memberSinceStart decided on (snapshotVoterTerm
// only when it was read).
type memberBasis struct {
	member                bool
	voter                 bool
	configTerm            uint64
	configIndex           uint64
	startTerm, startIndex uint64
	snapshotVoterTerm     uint64
}
