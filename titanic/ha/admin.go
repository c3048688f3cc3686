package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/internal/lograte"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// Admin services, answered by every node (see tsp.AdminPrefix):
//
//	titanic.cluster        [""]         → 200 | key=value...   this node's raft status, the members it knows and, of a pair's node, caught_up
//	titanic.cluster.join   [id | addr]  → 200                  add a voter (leader only, else 500 not active)
//	titanic.cluster.join   [id | addr | nonvoter] → 200        add a member without a vote (a pair's returning node; releases before it answer 400)
//	titanic.cluster.join   [id | addr | voter] → 200           give a member its vote (a group's member that joined without one and caught up; a pair's passive that follows the active's raft)
//	titanic.cluster.leave  [id]         → 200                  remove a member (leader only)
//	titanic.cluster.role   [""]         → 200 | serving=... | star=...   see tsp.Role
//
// and, for a split brain's merge (see Pair), titanic.cluster.history (a
// node's applied history), .adopt (the work a yielding node hands over)
// and .forget (the operator's way to stop waiting for a peer that may
// hold a split); for a cut of the raft link alone, .standdown (the active
// asks its passive peer to give up taking over, Pair.StandDown; answered
// [200 | the raft term it stood down at]). Their names are in package tsp.

// Replier answers a deferred request (broker.Broker does).
type Replier interface {
	Reply(c broker.Client, service string, body [][]byte)
}

// Admin serves the admin services as a broker.Handler.
type Admin struct {
	node *replica.Node
	b    Replier
	log  *slog.Logger
	// refusals bounds the "cluster change refused" warnings: a stranger
	// asking in a loop must not write a line per request.
	refusals *lograte.Limiter
	// Endpoint is this node's client endpoint, reported in the status.
	Endpoint string
	// Role is what titanic.cluster.role answers; it is called on the
	// broker's loop and must not block. Nil: not serving.
	Role func() tsp.Role
	// Merge takes in work handed over by a yielding peer (titanic.Service
	// Merge). Nil: refused.
	Merge func(context.Context, []store.Op) error
	// Forget ends the wait for a peer's split (Pair.ForgetPeerSplit) and
	// says what it gives up. Nil: refused.
	Forget func() string
	// Pair is this node's pair role, if it is a pair's node: it answers
	// titanic.cluster.standdown, and it withholds the peer's vote in
	// joins while it goes on alone because its raft link to the peer is
	// cut (Pair.withholdsVote). Nil: standdown refused, joins as above.
	Pair *Pair
	// Versions keeps the cluster version (titanic.cluster.version). Nil:
	// the service answers 400.
	Versions *Versions
	// NonvoterFirst (group mode) adds a member that joins with a plain
	// [id | addr] without a vote: it asks for its vote ([id | addr |
	// voter]) once it has caught up (Versions). Added as a voter at once,
	// a member that is not up yet raises the quorum at once: with another
	// member down, the group lost its quorum, and nothing could remove the
	// newcomer without a leader.
	NonvoterFirst bool
	// Sources, when set, decides where the services that change the
	// cluster may be asked from (register the Admin with
	// broker.HandleFrom); the others are answered to anyone.
	Sources *AdminSources

	// busy holds a token per request being served: a bound on the
	// goroutines (each may wait on raft for seconds) any client can make.
	busy chan struct{}
	// asks is how far each member that asked for its vote had applied:
	// an operator's join --voter is taken only for a member known caught
	// up (a pointer: tests copy the Admin).
	asks *voteAsks
}

// voteAsks keeps the last applied index each member sent with its ask
// for a vote (Versions.askVote), for an operator's join --voter.
type voteAsks struct {
	mu   sync.Mutex
	last map[string]voteAsk
}

type voteAsk struct {
	applied uint64
	at      time.Time
}

// askFresh is how long a member's ask tells how far it has applied: it
// asks at each version report (every 2 s) while it lacks its vote.
const askFresh = 30 * time.Second

func (v *voteAsks) note(id string, applied uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.last[id] = voteAsk{applied: applied, at: time.Now()}
}

// recent returns member id's last ask if it is fresh, and forgets the
// stale ones (a bound on the map: only members are noted).
func (v *voteAsks) recent(id string) (voteAsk, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, a := range v.last {
		if time.Since(a.at) > askFresh {
			delete(v.last, k)
		}
	}
	a, ok := v.last[id]
	return a, ok
}

// adminInFlight bounds the admin requests served at once.
const adminInFlight = 16

// changes reports whether a request asks to change the cluster (or to
// report a member's version, which raises the cluster version), rather
// than to read it.
func changes(req broker.Request) bool {
	switch req.Service {
	case tsp.SvcJoin, tsp.SvcLeave, tsp.SvcAdopt, tsp.SvcForget, tsp.SvcStandDown:
		return true
	case tsp.SvcVersion:
		return len(req.Body) > 0 && string(req.Body[0]) == "report"
	}
	return false
}

// NewAdmin returns the admin handler of node.
func NewAdmin(node *replica.Node, b Replier, log *slog.Logger) *Admin {
	return &Admin{node: node, b: b, log: log.With("component", "admin"), refusals: lograte.New(lograte.Every), busy: make(chan struct{}, adminInFlight),
		asks: &voteAsks{last: map[string]voteAsk{}}}
}

// ServeMDP implements broker.Handler. Raft calls may block, so the work
// is done on a goroutine and answered with Reply; the role is answered at
// once (clients ask it of every node before each call, so it must not
// queue behind raft).
func (a *Admin) ServeMDP(req broker.Request) [][]byte {
	if req.Service == tsp.SvcRole {
		if a.Role == nil {
			return tsp.EncodeRole(tsp.Role{})
		}
		return tsp.EncodeRole(a.Role())
	}
	select {
	case a.busy <- struct{}{}:
	default:
		return text(tsp.CodeError, tsp.Busy.Text(fmt.Sprintf("%d admin requests being served", adminInFlight)))
	}
	go func() {
		defer func() { <-a.busy }()
		a.b.Reply(req.Client, req.Service, a.serve(req))
	}()
	return nil
}

// Serves implements broker.Handler.
func (a *Admin) Serves(service string) bool { return tsp.AdminServed(service) }

func text(code, msg string) [][]byte { return [][]byte{[]byte(code), []byte(msg)} }

// catchingUp starts the refusal of a vote asked too far behind.
const catchingUp = "catching up"

// askedByStranger starts the refusal of a vote asked by a node that is
// not a member: one that left (and kept running) and finds itself out of
// its own configuration asks all the same (see Versions.askVote).
const askedByStranger = "only a member may ask for its vote"

// caughtUp says why member id, as far as the leader knows, has not
// caught up: nil if its last ask for its vote (Versions.askVote) was
// within voteSlack of the commit index.
func (a *Admin) caughtUp(id string) error {
	ask, ok := a.asks.recent(id)
	if !ok {
		// The member asks for its vote itself (and gets it) once
		// caught up: one that did not ask is down, not joined yet,
		// still far behind (it asks only near its own commit index), or
		// of a release that does not ask.
		return fmt.Errorf("%s has not reported how far it has applied in the last %s (down, not joined yet, still catching up, or of an older release that does not ask for its vote): its vote now would raise the quorum before it can take part; give it with --force once `titanic cluster` shows it caught up", id, askFresh)
	}
	if c := a.node.Status().CommitIndex; ask.applied+voteSlack < c {
		return fmt.Errorf("%s: %s reported applied index %d %s ago, %d entries behind the commit index %d; it gets its vote itself once caught up (--force gives it now)",
			catchingUp, id, ask.applied, time.Since(ask.at).Round(time.Second), c-ask.applied, c)
	}
	return nil
}

// memberIDs lists the members' IDs, for refusals.
func (a *Admin) memberIDs() string {
	ms, err := a.node.Members()
	if err != nil {
		return "unknown: " + err.Error()
	}
	ids := make([]string, 0, len(ms))
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	return strings.Join(ids, ", ")
}

func (a *Admin) serve(req broker.Request) [][]byte {
	if a.Sources != nil && changes(req) {
		if err := a.Sources.Allow(req.From); err != nil {
			// At most once every lograte.Every, with the count left
			// out since: the refusal costs its caller nothing.
			if n, ok := a.refusals.Allow(time.Now(), "cluster change refused"); ok {
				a.log.Warn("cluster change refused", "service", req.Service, "from", req.From, "err", err, "suppressed", n)
			}
			return text(tsp.CodeUnknown, tsp.Forbidden.Text(err.Error()))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch req.Service {
	case tsp.SvcCluster:
		return a.status()
	case tsp.SvcJoin:
		nonvoter := len(req.Body) == 3 && string(req.Body[2]) == tsp.JoinNonvoter
		force := len(req.Body) == 3 && string(req.Body[2]) == tsp.JoinVoterForce
		vote := (len(req.Body) == 3 || len(req.Body) == 4) && string(req.Body[2]) == tsp.JoinVoter || force
		if len(req.Body) != 2 && !nonvoter && !vote || len(req.Body[0]) == 0 || len(req.Body[1]) == 0 {
			return text("400", "want [node id | raft address], or [node id | raft address | "+tsp.JoinNonvoter+", "+tsp.JoinVoterForce+" or "+tsp.JoinVoter+" [| applied index]]")
		}
		if !a.node.IsLeader() {
			return text(tsp.CodeError, string(tsp.NotActive))
		}
		if vote && len(req.Body) == 4 {
			// A member asking for its vote says how far it has applied:
			// only the leader knows how far that is from the commit.
			applied, err := strconv.ParseUint(string(req.Body[3]), 10, 64)
			if err != nil {
				return text("400", fmt.Sprintf("applied index %q", req.Body[3]))
			}
			if _, ok := a.node.MemberAt(string(req.Body[0]), ""); ok {
				a.asks.note(string(req.Body[0]), applied)
			}
			if c := a.node.Status().CommitIndex; applied+voteSlack < c {
				return text("400", fmt.Sprintf("%s: %d entries behind the commit index %d", catchingUp, c-applied, c))
			}
		}
		id, addr := string(req.Body[0]), string(req.Body[1])
		if other, ok := a.node.MemberAt(id, ""); ok && other.Addr != addr {
			// Raft would move the member to addr: a typo there left a
			// voter the leader replicates to at the wrong address.
			return text("400", fmt.Sprintf("%s is a member at %s, not %s: to move it, make it leave first (titanic cluster leave %s), then join it at the new address", id, other.Addr, addr, id))
		}
		// A member asking again (a pair's passive restarted in this
		// term, see Pair.askReadd) or asking for a vote (a nonvoter
		// that caught up, see Pair.askPromotion) needs only the
		// configuration entry, not a log compacted for a new member.
		m, known := a.node.MemberAt(id, addr)
		if len(req.Body) == 2 && a.NonvoterFirst && !(known && m.Voter) {
			nonvoter = true
		}
		if vote && !known {
			return text("400", askedByStranger+": join first")
		}
		if vote && len(req.Body) == 3 && !force && a.NonvoterFirst && !(known && m.Voter) {
			// An operator's join --voter in a group: given to a member
			// that is down or far behind, the vote raised the quorum at
			// once (3 voters, 2 up: a leader's loss then left no
			// quorum). Taken only for a member whose last ask for its
			// vote said it has caught up.
			if err := a.caughtUp(id); err != nil {
				return text("400", err.Error())
			}
		}
		promotes := false
		if a.Pair != nil && a.Pair.withholdsVote(id) {
			// This node goes on alone (or is about to) because its raft
			// link to its peer was found cut, and the peer gave up
			// taking over (Pair.StandDown). A configuration written now
			// that gives the peer a vote, in a term after the peer's
			// stand-down, would count it caught up again (see
			// Pair.memberSinceStart) while it lacks what this node takes
			// alone; and a voter whose raft link is cut would stop every
			// commit again. So: a voter of this node's (old) raft is not
			// written again; a new member joins without a vote; a member
			// without a vote that asks for one explicitly (tsp.JoinVoter:
			// Pair.askPromotion, which asks only once it follows this
			// node's raft: the link works) gets it. A plain join of a
			// member without a vote leaves it so: the peer sends one
			// also while cut off (restarted after it stood down, it
			// knows nothing of that), and given a vote then it stopped
			// this node's commits until the cut was found again.
			switch {
			case known && m.Voter:
				return text("500", "going on alone, the raft link to "+id+" was found cut: join again without a vote")
			case known && vote:
				promotes = true
			case known:
				return [][]byte{[]byte("200")} // a member without a vote already
			default:
				nonvoter = true
			}
		}
		if !known {
			if err := a.node.PrepareJoin(ctx); err != nil {
				return text("500", err.Error())
			}
		}
		if nonvoter {
			if err := a.node.AddNonvoter(ctx, id, addr); err != nil {
				return text("500", err.Error())
			}
			if !known {
				a.log.Info("member joined without a vote; it gets one once it has caught up", "id", id, "addr", addr)
			}
			return [][]byte{[]byte("200")}
		}
		promoted := known && !m.Voter
		if err := a.node.AddVoter(ctx, id, addr); err != nil {
			return text("500", err.Error())
		}
		if promotes {
			a.Pair.voteGiven(id)
		}
		if promoted {
			a.log.Info("member given a vote", "id", id, "addr", addr)
		} else {
			a.log.Info("member joined", "id", id, "addr", addr)
		}
		return [][]byte{[]byte("200")}
	case tsp.SvcLeave:
		if len(req.Body) != 1 || len(req.Body[0]) == 0 {
			return text("400", "want [node id]")
		}
		if !a.node.IsLeader() {
			return text(tsp.CodeError, string(tsp.NotActive))
		}
		id := string(req.Body[0])
		if _, ok := a.node.MemberAt(id, ""); !ok {
			// Raft removes an unknown ID without a word: an operator
			// who mistyped the dead member's ID was told it was gone.
			return text("400", fmt.Sprintf("%s is not a member (members: %s)", id, a.memberIDs()))
		}
		if err := a.node.RemoveServer(ctx, id); err != nil {
			return text("500", err.Error())
		}
		a.log.Info("member left", "id", id)
		return [][]byte{[]byte("200")}
	case tsp.SvcHistory:
		h, err := a.node.History(ctx)
		if err != nil {
			return text("500", err.Error())
		}
		return EncodeHistory(PeerHistory{History: h, Halted: a.node.Failed() != nil || a.node.Halted()})
	case tsp.SvcAdopt:
		if a.Merge == nil {
			return text("500", "this node takes no handover")
		}
		if len(req.Body) != 1 {
			return text("400", "want [ops record]")
		}
		ops, err := store.DecodeOps(req.Body[0])
		if err != nil {
			return text("400", err.Error())
		}
		if a.Versions != nil {
			if err := a.Versions.RaiseFor(ctx, handoverVersion(ops)); err != nil {
				a.log.Warn("handover: cluster version not raised", "err", err)
			}
		}
		ops = a.keepMarks(ctx, ops)
		err = a.Merge(ctx, ops)
		if errors.Is(err, titanic.ErrNotActive) && a.node.IsLeader() {
			// The raft leader that does not serve (yet): a Binary Star
			// passive node pushing its log onto an active peer that
			// then finds a fork of its own. The store takes the ops;
			// the dispatcher rebuilds its queues from it when this node
			// serves.
			var res []store.Result
			if res, err = a.node.Apply(ctx, ops); err == nil {
				for _, r := range res {
					if r.Err != nil && !errors.Is(r.Err, store.ErrFinal) && !errors.Is(r.Err, store.ErrNotFound) && !errors.Is(r.Err, store.ErrHandedOver) && !errors.Is(r.Err, store.ErrNotFailed) {
						a.log.Warn("merge op refused", "err", r.Err)
					}
				}
				err = titanic.MergeRefusal(res)
			}
		}
		if err != nil {
			if errors.Is(err, titanic.ErrNotActive) {
				return text(tsp.CodeError, string(tsp.NotActive))
			}
			return text("500", err.Error())
		}
		return [][]byte{[]byte("200")}
	case tsp.SvcVersion:
		if a.Versions == nil {
			return text("400", "this node keeps no cluster version")
		}
		return a.Versions.serve(ctx, req.Body)
	case tsp.SvcForget:
		if a.Forget == nil {
			return text("400", "only a pair node waits for its peer's split")
		}
		return text("200", a.Forget())
	case tsp.SvcStandDown:
		if a.Pair == nil {
			return text("400", "only a pair node stands down")
		}
		term, err := a.Pair.standDown()
		if err != nil {
			return text("500", "stand-down refused: "+err.Error())
		}
		// With the term it stood down at (builds before answered [200]
		// alone; a frame added at the end of an answer is ignored by
		// readers of every release).
		return [][]byte{[]byte("200"), strconv.AppendUint(nil, term, 10)}
	}
	return text("400", fmt.Sprintf("unknown admin service %q", req.Service))
}

// keepMarks returns a handover's ops with their marks (store.OpHandover,
// which make a redone handover change nothing) only while the cluster
// version takes every op of them: the marks of a yielding node whose
// cluster is at store.HandoverMarkVersion (or store.HandoverKeyVersion),
// to a taker whose version could not be raised to it yet (RaiseFor), are
// dropped, and the batch is taken as an older yielder's (applied again if
// redone). Kept, a mark would be
// refused alone (store.ErrClusterVersion) or count an op the version
// refuses, which the redo must carry again, among the ops taken.
func (a *Admin) keepMarks(ctx context.Context, ops []store.Op) []store.Op {
	if !slices.ContainsFunc(ops, func(o store.Op) bool { return o.Kind == store.OpHandover }) {
		return ops
	}
	if cv, err := a.node.ClusterVersion(ctx); err == nil && cv >= handoverVersion(ops) {
		return ops
	}
	a.log.Warn("handover taken without its marks: this cluster's version is below what they need, so a redo of it applies its ops again")
	return slices.DeleteFunc(slices.Clone(ops), func(o store.Op) bool { return o.Kind == store.OpHandover })
}

// handoverVersion is the cluster version ops need: an op that a newer
// field only enriches (an attempt's worker) is kept without it below.
func handoverVersion(ops []store.Op) int {
	need := 0
	for _, o := range ops {
		bare := o.WithoutOptional()
		need = max(need, bare.Version())
	}
	return need
}

// PeerHistory is what titanic.cluster.history answers: the node's applied
// history and whether its replica halted: on a fork seen while it
// followed its peer (Failed), or stopped by the node itself before it
// reads the work it hands over (replica.Node.Halt). Either way it takes
// no entries until it has handed its work over, so the handover must go
// into a raft its peer leads.
type PeerHistory struct {
	store.History
	Halted bool
}

// EncodeHistory is titanic.cluster.history's answer: ["200" | applied |
// "TERM START END"...], applied followed by " halted" when the node's
// replica halted.
func EncodeHistory(h PeerHistory) [][]byte {
	applied := strconv.AppendUint(nil, h.Applied, 10)
	if h.Halted {
		applied = append(applied, " halted"...)
	}
	out := [][]byte{[]byte("200"), applied}
	if len(h.Epochs) <= historyFrames {
		for _, e := range h.Epochs {
			out = append(out, fmt.Appendf(nil, "%d %d %d", e.Term, e.Start, e.End))
		}
		return out
	}
	// One line per epoch in one frame: past about a thousand terms, a
	// frame per epoch was more frames than the peer's client takes
	// (zsock.DefaultMaxFrames), and no node could ever read its peer's
	// history again (found by a reviewer of the pair). Up to
	// historyFrames, a frame each, as builds before this one read.
	var all []byte
	for i, e := range h.Epochs {
		if i > 0 {
			all = append(all, '\n')
		}
		all = fmt.Appendf(all, "%d %d %d", e.Term, e.Start, e.End)
	}
	return append(out, all)
}

// historyFrames is the most epochs a history answer carries a frame each.
const historyFrames = 512

// DecodeHistory reads an EncodeHistory answer.
func DecodeHistory(frames [][]byte) (PeerHistory, error) {
	var h PeerHistory
	if len(frames) < 2 || string(frames[0]) != "200" {
		return h, fmt.Errorf("history: unexpected answer %q", frames)
	}
	num, flag, _ := strings.Cut(string(frames[1]), " ")
	applied, err := strconv.ParseUint(num, 10, 64)
	if err != nil || flag != "" && flag != "halted" {
		return h, fmt.Errorf("history: applied index %q", frames[1])
	}
	h.Applied, h.Halted = applied, flag == "halted"
	var lines []string
	for _, f := range frames[2:] {
		lines = append(lines, strings.Split(string(f), "\n")...)
	}
	for _, f := range lines {
		var e store.Epoch
		if _, err := fmt.Sscanf(f, "%d %d %d", &e.Term, &e.Start, &e.End); err != nil {
			return h, fmt.Errorf("history: epoch %q: %w", f, err)
		}
		if e.End != 0 && e.End < e.Start {
			return h, fmt.Errorf("history: epoch %q ends before it starts", f)
		}
		if n := len(h.Epochs); n > 0 && (e.Term <= h.Epochs[n-1].Term || e.Start <= h.Epochs[n-1].Start) {
			return h, fmt.Errorf("history: epochs out of order at %q", f)
		}
		h.Epochs = append(h.Epochs, e)
	}
	return h, nil
}

func (a *Admin) status() [][]byte {
	st := a.node.Status()
	out := [][]byte{[]byte("200")}
	kv := func(k, v string) { out = append(out, []byte(k+"="+v)) }
	kv("id", st.ID)
	kv("endpoint", a.Endpoint)
	kv("state", st.State)
	kv("term", strconv.FormatUint(st.Term, 10))
	kv("last", strconv.FormatUint(st.LastIndex, 10))
	kv("commit", strconv.FormatUint(st.CommitIndex, 10))
	kv("applied", strconv.FormatUint(st.AppliedIndex, 10))
	kv("leader", st.LeaderID)
	if a.Pair != nil {
		// Read by the passive peer before it yields after a split brain
		// (Pair.peerCannotTake); ignored by readers that do not know it.
		kv(caughtUpKey, strconv.FormatBool(a.Pair.caughtUp.Load()))
	}
	if a.Versions != nil {
		own, release := a.Versions.Own()
		kv("protocol", strconv.Itoa(own))
		kv("release", release)
		if cv, err := a.node.ClusterVersion(context.Background()); err == nil {
			kv("cluster_version", strconv.Itoa(cv))
		}
	}
	if ms, err := a.node.Members(); err == nil {
		for _, m := range ms {
			role := "voter"
			if !m.Voter {
				role = "nonvoter"
			}
			kv("member", m.ID+","+m.Addr+","+role)
		}
	}
	return out
}
