package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/titanicmq/titanic/broker/curve"
	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// titanic.cluster.version (tsp.SvcVersion) is the admin service of the cluster version:
//
//	titanic.cluster.version [""]                           → 200 | id=.. | protocol=N | release=.. | cluster=N
//	titanic.cluster.version ["report" | id | N | release]  → 200   (a member tells the leader what it runs)

// The cluster version (etcd and CockroachDB have the same idea): the
// newest ops record version (store.OpsRecordVersion) that every member of
// a replicated cluster reads. The leader writes an op of a newer kind only
// once the cluster version allows it (store/replica refuses it before it
// reaches the log with store.ErrClusterVersion), so that a rolling upgrade
// never makes a member that still runs the older binary meet an entry it
// cannot read.
//
// How members report: every member that does not lead sends its version
// to the leader every few seconds (titanic.cluster.version "report"), at
// the client endpoint the leader announced in the log
// (replica.Announcement: an entry every release reads). A member of the
// first release sends nothing and so counts as version 1. When every
// member the leader knows (a group: its raft configuration; a pair: both
// nodes, also while one goes on alone) reported a version above the
// cluster version, the leader raises it to the lowest of them, through an
// announcement, so the raise is in the log: a new leader starts from it,
// and it never goes down. Rolling a member back below it is refused by
// that member: it stops at the first entry of a newer kind.
type Versions struct {
	node     *replica.Node
	log      *slog.Logger
	self     string
	own      int
	release  string
	raftAddr string
	endpoint func() string
	// members lists the IDs whose reports count.
	members func() []string
	// leaderEndpoint is where a member that does not lead reports ("":
	// nowhere yet).
	leaderEndpoint func() string
	dial           func(endpoint string) (Requester, error)
	curve          *curve.KeyPair
	interval       time.Duration
	// group: a raft group's member, which asks the leader for its vote
	// once it has caught up after joining without one (askVote).
	group bool

	mu      sync.Mutex
	reports map[string]report
}

type report struct {
	version int
	release string
	at      time.Time
}

// VersionsConfig configures Versions.
type VersionsConfig struct {
	// Endpoint returns this node's client endpoint (once bound) as the
	// other members dial it; a wildcard host is replaced by the raft
	// advertise host.
	Endpoint func() string
	// Release names this binary (`titanic version`), for the operator.
	Release string
	// Pair, when set, makes the members this node and PeerID, and the
	// place to report PeerEndpoint; else the raft configuration and the
	// announced leader.
	Pair         bool
	PeerID       string
	PeerEndpoint string
	// PeerCurve is this node's CURVE client identity towards the peer
	// (pair).
	PeerCurve *client.CurveClient
	// Curve, when the brokers require CURVE (group mode), is this node's
	// broker key pair: the leader announces its public key, and the
	// members report with theirs as client keys, so every member's public
	// key must be on the others' allowlists.
	Curve *curve.KeyPair
	// Interval between reports and checks (default 2s).
	Interval time.Duration
	Logger   *slog.Logger
	// Protocol overrides the version this node reports (tests; default
	// store.OpsRecordVersion).
	Protocol int
	// Dial, when set, stands for the client of the broker at endpoint
	// that reports go to: the simulation calls its peer's admin services
	// in process through it (internal/sim). Nil in a broker.
	Dial func(endpoint string) (Requester, error)
}

// NewVersions returns the cluster-version keeper of node.
func NewVersions(node *replica.Node, cfg VersionsConfig) *Versions {
	self, raftAddr := node.Self()
	v := &Versions{
		node: node, self: self, own: store.OpsRecordVersion, release: cfg.Release,
		raftAddr: raftAddr, endpoint: cfg.Endpoint, curve: cfg.Curve,
		interval: cfg.Interval, reports: map[string]report{}, group: !cfg.Pair,
		log: cfg.Logger.With("component", "versions"),
	}
	if cfg.Protocol > 0 {
		v.own = cfg.Protocol
	}
	if v.interval <= 0 {
		v.interval = 2 * time.Second
	}
	if cfg.Pair {
		ids := []string{self, cfg.PeerID}
		v.members = func() []string { return ids }
		v.leaderEndpoint = func() string { return cfg.PeerEndpoint }
	} else {
		v.members = func() []string {
			ms, err := node.Members()
			if err != nil {
				return nil
			}
			ids := make([]string, 0, len(ms))
			for _, m := range ms {
				ids = append(ids, m.ID)
			}
			return ids
		}
		v.leaderEndpoint = func() string {
			li := node.LeaderInfo()
			if id, _ := node.Leader(); id == "" || id != li.ID {
				return "" // not announced yet by this leader
			}
			return li.Endpoint
		}
	}
	v.dial = func(endpoint string) (Requester, error) {
		cc := client.DefaultConfig()
		cc.Brokers = []string{endpoint}
		cc.Timeout, cc.Retries = 2*time.Second, 1
		cc.Direct = true
		cc.Logger = cfg.Logger
		switch li := node.LeaderInfo(); {
		case cfg.Pair:
			cc.Curve = cfg.PeerCurve
		case cfg.Curve != nil && li.Curve != "":
			cc.Curve = &client.CurveClient{ServerPublic: li.Curve, Public: cfg.Curve.Public, Secret: cfg.Curve.Secret}
		}
		return client.New(cc)
	}
	if cfg.Dial != nil {
		v.dial = cfg.Dial
	}
	return v
}

// dialable replaces a wildcard host in a tcp endpoint by the host of the
// raft address, which the other members dial already.
func dialable(endpoint, raftAddr string) string {
	rest, ok := strings.CutPrefix(endpoint, "tcp://")
	if !ok {
		return endpoint
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil || (host != "*" && host != "0.0.0.0" && host != "::" && host != "") {
		return endpoint
	}
	rhost, _, err := net.SplitHostPort(raftAddr)
	if err != nil || rhost == "" || rhost == "0.0.0.0" || rhost == "::" {
		rhost = "127.0.0.1"
	}
	return "tcp://" + net.JoinHostPort(rhost, port)
}

// Own returns the version this node reports and its release.
func (v *Versions) Own() (int, string) { return v.own, v.release }

// Report records a member's report (any node records them; the leader
// uses them).
func (v *Versions) Report(id string, version int, release string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	old, had := v.reports[id]
	v.reports[id] = report{version: version, release: release, at: time.Now()}
	if !had || old.version != version {
		v.log.Info("member reports its version", "member", id, "protocol", version, "release", release)
	}
}

// Member is one member's version as this node knows it.
type MemberVersion struct {
	ID       string
	Version  int // 1 when it never reported (the first release reports nothing)
	Release  string
	Reported bool
}

// reportsFresh is how many intervals a member's report counts for: a
// member reports every interval, and one that stopped (rolled back to
// the first release, which reports nothing) must count as that release
// again, not as what it once reported, or a raise would leave it behind.
const reportsFresh = 5

// Members returns what each member reported (this node included); a
// report older than reportsFresh intervals counts as none.
func (v *Versions) Members() []MemberVersion {
	ids := v.members()
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]MemberVersion, 0, len(ids))
	for _, id := range ids {
		if id == v.self {
			out = append(out, MemberVersion{ID: id, Version: v.own, Release: v.release, Reported: true})
			continue
		}
		r, ok := v.reports[id]
		mv := MemberVersion{ID: id, Version: 1}
		if ok && time.Since(r.at) <= reportsFresh*v.interval {
			mv.Version, mv.Release, mv.Reported = r.version, r.release, true
		}
		out = append(out, mv)
	}
	return out
}

// settleDiv: until the cluster version has settled (the leader has every
// member's report and nothing to raise; a member's report reached its
// leader), rounds come this many times as often, for at most settleFor
// intervals after a start or a change of leader (a member of the first
// release never reports). A new group otherwise refused the job
// lifecycle options for its first seconds, every member current, while
// the reports and the raise came a round apart each.
const (
	settleDiv = 10
	settleFor = 10
)

// Run reports or raises until ctx is done.
// RaiseFor raises a pair's cluster version to need for a handover of
// ops the peer wrote alone after raising it: the sides of a split may
// be at different versions (the raise committed on one side only), and
// a yielding node with a fork reports nothing, so the taker's version
// would never be raised by reports and every try of the handover would
// be refused. The peer reads ops of that version (it wrote them), this
// node does (need is at most its own), and a pair has no other member.
// A group takes no handover: nothing is raised there.
func (v *Versions) RaiseFor(ctx context.Context, need int) error {
	if v.group || need < 3 {
		return nil
	}
	if need > v.own {
		return fmt.Errorf("the handover holds ops of version %d and this node reads up to %d: upgrade it", need, v.own)
	}
	cv, err := v.node.ClusterVersion(ctx)
	if err != nil || cv >= need {
		return err
	}
	ep := v.endpoint()
	if ep == "" {
		return errors.New("not bound yet: the cluster version is raised at a later try")
	}
	a := replica.Announcement{Endpoint: dialable(ep, v.raftAddr), ClusterVersion: need}
	if v.curve != nil {
		a.Curve = v.curve.Public
	}
	if err := v.node.Announce(ctx, a); err != nil {
		return fmt.Errorf("raise the cluster version for a handover: %w", err)
	}
	v.log.Info("cluster version raised for a handover: the peer wrote ops of that version alone", "cluster_version", need, "was", cv)
	return nil
}

func (v *Versions) Run(ctx context.Context) error {
	t := time.NewTimer(v.interval / settleDiv)
	defer t.Stop()
	settled := false
	fastUntil := time.Now().Add(settleFor * v.interval)
	var (
		peer        Requester
		peerAt      string
		announced   uint64 // the term this node last announced in
		announcedAt time.Time
		announcedTo string // the members then, by ID
		// announcedConf: the configuration entry then (group): a member
		// replaced at the same ID, leave and join between two rounds,
		// leaves the IDs as they were.
		announcedConf uint64
		warnedBelow   = map[string]bool{}
		warnedReport  bool
		failedSince   time.Time // first report that got no answer, of a run
	)
	defer func() {
		if peer != nil {
			peer.Close()
		}
	}()
	for {
		next := v.interval
		if !settled && time.Now().Before(fastUntil) {
			next /= settleDiv
		}
		t.Reset(next)
		settled = false
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if v.node.Failed() != nil {
			continue
		}
		if v.node.IsLeader() {
			if v.endpoint() == "" {
				continue // not bound yet: nothing to announce
			}
			cv, err := v.node.ClusterVersion(ctx)
			if err != nil {
				continue
			}
			ms := v.Members()
			low, missing := v.own, false
			for _, m := range ms {
				low = min(low, m.Version)
				missing = missing || !m.Reported
				if m.Reported && m.Version < cv && !warnedBelow[m.ID] {
					warnedBelow[m.ID] = true
					v.log.Error("a member runs a titanic older than the cluster version: it stops at the first entry it cannot read; upgrade it",
						"member", m.ID, "protocol", m.Version, "cluster_version", cv)
				}
			}
			term := v.node.Status().Term
			a := replica.Announcement{Endpoint: dialable(v.endpoint(), v.raftAddr)}
			if v.curve != nil {
				a.Curve = v.curve.Public
			}
			// Ops of a newer kind than the first release's that a
			// raise may allow all come with version 3 or later: a raise
			// below that allows nothing.
			raise := low > cv && low >= 3 && len(ms) > 0
			if raise {
				a.ClusterVersion = low
			}
			// Settled: nothing more to raise, or a member that cannot
			// read more (an older release, which may never report).
			settled = !raise && (!missing || cv >= v.own)
			var to strings.Builder
			for _, m := range ms {
				to.WriteString(m.ID + " ")
			}
			// A member that joined since learns where the leader is
			// (to report, and to ask for its vote) from an
			// announcement it applies: a snapshot it was sent may hold
			// none.
			if term != announced {
				fastUntil = time.Now().Add(settleFor * v.interval)
			}
			// A newcomer at the ID of a member that left learns it too:
			// the member that left had reported, so none is missing, and
			// when its leave and the join fell between two rounds the
			// IDs were as before; the newcomer, sent a snapshot that
			// held no announcement, did not report, nor ask for its
			// vote, for 15 rounds.
			conf := v.node.ConfigIndex()
			if raise || term != announced || to.String() != announcedTo || v.group && conf != announcedConf || missing && time.Since(announcedAt) > 15*v.interval {
				if err := v.node.Announce(ctx, a); err != nil {
					v.log.Debug("announcement not written", "err", err)
					continue
				}
				announced, announcedAt, announcedTo, announcedConf = term, time.Now(), to.String(), conf
				if raise {
					v.log.Info("cluster version raised: every member reads it", "cluster_version", low, "was", cv, "members", len(ms))
				}
			}
			continue
		}
		ep := v.leaderEndpoint()
		if ep == "" {
			continue
		}
		if peer == nil || peerAt != ep+v.node.LeaderInfo().Curve {
			if peer != nil {
				peer.Close()
			}
			c, err := v.dial(ep)
			if err != nil {
				continue
			}
			peer, peerAt = c, ep+v.node.LeaderInfo().Curve
			fastUntil = time.Now().Add(settleFor * v.interval)
		}
		cctx, cancel := context.WithTimeout(ctx, 2*v.interval)
		rep, err := peer.Request(cctx, tsp.SvcVersion, [][]byte{[]byte("report"), []byte(v.self), []byte(strconv.Itoa(v.own)), []byte(v.release)})
		cancel()
		switch {
		case err == nil && (len(rep) == 0 || string(rep[0]) != "200") && !warnedReport:
			warnedReport = true
			v.log.Warn("the leader did not take this node's version report", "leader_endpoint", ep, "answer", fmt.Sprintf("%q", rep))
		case err != nil && failedSince.IsZero():
			failedSince = time.Now()
		case err != nil && !warnedReport && time.Since(failedSince) > 10*v.interval:
			// The cluster version cannot move while this goes on.
			warnedReport = true
			v.log.Warn("the leader does not answer this node's version reports (with security.curve, every member's public key must be on the others' allowlists)",
				"leader_endpoint", ep, "since", failedSince, "err", err)
		case err == nil:
			failedSince = time.Time{}
			settled = true
			v.askVote(ctx, peer)
		}
	}
}

// voteSlack is how far behind the commit index a group member that
// joined without a vote may be when it asks for its vote: its vote then
// waits for little catching up (the pair's promoteSlack).
const voteSlack = promoteSlack

// askVote asks the leader (through peer) for this node's vote when it is
// a group member without one that has caught up: it joined through
// titanic cluster join, which adds members without a vote (see
// Admin.NonvoterFirst).
func (v *Versions) askVote(ctx context.Context, peer Requester) {
	if !v.group {
		return
	}
	m, ok := v.node.MemberAt(v.self, "")
	if ok && m.Voter {
		return
	}
	addr := m.Addr
	if !ok {
		// Out of its own configuration, it asks all the same, at its
		// own raft address: the leader answers from its configuration
		// (a stranger is refused). A member replaced at the same ID and
		// address was left out of its own configuration for good, and
		// so without its vote: the leader's replication of the member
		// that left, in its backoff, made a last try after the join
		// and sent a snapshot older than what the newcomer held, whose
		// configuration (without it) raft took as its latest. The
		// leader's entry that gives the vote puts it back.
		addr = v.raftAddr
	}
	st := v.node.Status()
	if st.CommitIndex == 0 || st.AppliedIndex+voteSlack < st.CommitIndex {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 2*v.interval)
	defer cancel()
	// With its applied index: its own commit index is capped at the
	// last entry it holds, so only the leader can tell how far behind it
	// is (it was given its vote thousands of entries behind; found by a
	// tester of the group under faults).
	rep, err := peer.Request(cctx, tsp.SvcJoin, [][]byte{[]byte(v.self), []byte(addr), []byte(tsp.JoinVoter), []byte(strconv.FormatUint(st.AppliedIndex, 10))})
	switch {
	case err != nil:
		v.log.Debug("asking the leader for a vote", "err", err)
	case len(rep) > 1 && string(rep[0]) == "400" && strings.HasPrefix(string(rep[1]), catchingUp):
		v.log.Debug("the leader keeps this node's vote until it has caught up", "answer", string(rep[1]))
	case !ok && len(rep) > 1 && string(rep[0]) == "400" && strings.HasPrefix(string(rep[1]), askedByStranger):
		// It left the group, and keeps running outside it.
		v.log.Debug("not a member: no vote to ask for", "answer", string(rep[1]))
	case len(rep) == 0 || string(rep[0]) != tsp.CodeOK:
		v.log.Warn("the leader did not give this node its vote", "answer", fmt.Sprintf("%q", rep))
	default:
		v.log.Info("caught up: this member has its vote", "applied", st.AppliedIndex, "commit", st.CommitIndex)
	}
}

// serve answers titanic.cluster.version.
func (v *Versions) serve(ctx context.Context, body [][]byte) [][]byte {
	if len(body) >= 1 && string(body[0]) == "report" {
		if len(body) != 4 || len(body[1]) == 0 || len(body[1]) > 256 || len(body[3]) > 256 {
			return text("400", "want [report | id | version | release]")
		}
		n, err := strconv.Atoi(string(body[2]))
		if err != nil || n < 1 || n > 1<<20 {
			return text("400", fmt.Sprintf("version %q is not a positive number", body[2]))
		}
		id := string(body[1])
		if !slices.Contains(v.members(), id) {
			// Not (yet) a member: a later report counts once it is.
			return text("200", "not a member")
		}
		v.Report(id, n, string(body[3]))
		return [][]byte{[]byte("200")}
	}
	cv, err := v.node.ClusterVersion(ctx)
	if err != nil {
		return text("500", err.Error())
	}
	out := [][]byte{[]byte("200")}
	kv := func(k, val string) { out = append(out, []byte(k+"="+val)) }
	kv("id", v.self)
	kv("protocol", strconv.Itoa(v.own))
	kv("release", v.release)
	kv("cluster", strconv.Itoa(cv))
	for _, m := range v.Members() {
		if m.ID == v.self {
			continue
		}
		rep := "reported"
		if !m.Reported {
			rep = "silent"
		}
		kv("member", fmt.Sprintf("%s,%d,%s,%s", m.ID, m.Version, rep, m.Release))
	}
	return out
}
