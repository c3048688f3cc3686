package ha

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// newcomer opens an empty group member named id over an in-memory
// transport connected both ways to the leader's, started as README's
// operator starts one before `cluster join`: no peers, no bootstrap.
func newcomer(t *testing.T, id string, leaderTr *raft.InmemTransport) (*replica.Node, *raft.InmemTransport) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "titanic.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	_, tr := raft.NewInmemTransport("")
	tr.Connect(leaderTr.LocalAddr(), leaderTr)
	leaderTr.Connect(tr.LocalAddr(), tr)
	node, err := replica.Open(st, replica.Config{
		ID: id, Dir: filepath.Join(dir, "raft"), Transport: tr,
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Close(); _ = st.Close() })
	return node, tr
}

func submitTo(t *testing.T, leader *replica.Node, n int) {
	t.Helper()
	for i := range n {
		if _, err := leader.Apply(t.Context(), []store.Op{{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(), Service: "s", Body: [][]byte{[]byte("x")}}}); err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
	}
}

// A member replaced at the same ID and address (README: leave the dead
// one, join an empty node) was left without its vote for good: the
// leader's replication of the member that left, still in its backoff,
// makes a last try after the join and sends the newcomer a snapshot
// older than what it holds. Its store keeps what it has, but raft takes
// the snapshot's configuration, which lacks the newcomer, as its latest,
// and the newcomer asked for its vote only when it found itself a
// nonvoter in its own configuration. Here that late snapshot is sent by
// hand, as raft's replication sends it; the newcomer must still get its
// vote, and its own configuration must hold it again.
func TestMemberOutOfItsConfigurationGetsItsVote(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nodes, trs, peers := memGroup(t, 1)
	leader := leaderOf(t, nodes)
	submitTo(t, leader, 20)
	// What the late try sends is the snapshot the join sent: the join
	// (PrepareJoin) snapshots at a barrier, one entry past the quiet
	// leader's last, the configuration of the group without the
	// newcomer. Its store part here is the store up to the last entry:
	// the newcomer holds more, as it does when the late one arrives.
	snapIndex := leader.Status().LastIndex + 1
	var snap bytes.Buffer
	if _, err := leader.Snapshot(t.Context(), &snap); err != nil {
		t.Fatal(err)
	}
	before := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(peers[0].ID), Address: raft.ServerAddress(peers[0].Addr)}}}

	n4, tr4 := newcomer(t, "n4", trs[0])
	admin := NewAdmin(leader, nil, log)
	admin.NonvoterFirst = true
	if rep := admin.serve(broker.Request{Service: tsp.SvcJoin, Body: [][]byte{[]byte("n4"), []byte(tr4.LocalAddr())}}); string(rep[0]) != "200" {
		t.Fatalf("join n4: %q", rep)
	}
	submitTo(t, leader, 5)
	waitFor(t, "n4 caught up, a nonvoter in its own configuration", 10*time.Second, func() bool {
		m, ok := n4.MemberAt("n4", "")
		return ok && !m.Voter && n4.Status().AppliedIndex >= leader.Status().CommitIndex
	})

	// The late snapshot, from the leader's address in its term.
	_, late := raft.NewInmemTransport("")
	late.Connect(tr4.LocalAddr(), tr4)
	var resp raft.InstallSnapshotResponse
	err := late.InstallSnapshot(raft.ServerID("n4"), tr4.LocalAddr(), &raft.InstallSnapshotRequest{
		RPCHeader:       raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(peers[0].ID), Addr: []byte(peers[0].Addr)},
		SnapshotVersion: raft.SnapshotVersionMax, Term: leader.Term(), Leader: []byte(peers[0].Addr),
		LastLogIndex: snapIndex, LastLogTerm: leader.Term(),
		Configuration: raft.EncodeConfiguration(before), ConfigurationIndex: 1,
		Size: int64(snap.Len()),
	}, &resp, bytes.NewReader(snap.Bytes()))
	if err != nil || !resp.Success {
		t.Fatalf("late snapshot: %v, success %v", err, resp.Success)
	}
	// The cause: raft took the late snapshot's configuration.
	if _, ok := n4.MemberAt("n4", ""); ok {
		t.Fatal("n4 still in its own configuration after the late snapshot: the case is not made")
	}

	// raft moved n4's applied index back to the snapshot's; it applies
	// (skips) the entries after it at the next commit.
	submitTo(t, leader, 1)
	// n4 asks at its version report, caught up.
	v := NewVersions(n4, VersionsConfig{Endpoint: func() string { return "tcp://127.0.0.1:5555" }, Logger: log})
	waitFor(t, "n4 caught up again", 10*time.Second, func() bool { return n4.Status().AppliedIndex >= leader.Status().CommitIndex })
	v.askVote(t.Context(), adminLink{admin})
	if m, ok := leader.MemberAt("n4", ""); !ok || !m.Voter {
		t.Fatalf("n4 at the leader after its ask: %+v (member %v), want a voter", m, ok)
	}
	waitFor(t, "n4 a voter in its own configuration", 10*time.Second, func() bool {
		m, ok := n4.MemberAt("n4", "")
		return ok && m.Voter
	})
}

// An operator's `cluster join --voter` in a group is refused for a member
// that has not reported being caught up (--force gives the vote all the
// same): given to a member that was down, it made 3 voters of whom 2
// were up, and a leader's loss then left no quorum.
func TestOperatorVoteRefusedUntilCaughtUp(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nodes, trs, peers := memGroup(t, 1)
	leader := leaderOf(t, nodes)
	admin := NewAdmin(leader, nil, log)
	admin.NonvoterFirst = true
	// n4 joins and is never up: its address reaches nothing.
	if rep := admin.serve(broker.Request{Service: tsp.SvcJoin, Body: [][]byte{[]byte("n4"), []byte("nowhere:1")}}); string(rep[0]) != "200" {
		t.Fatalf("join n4: %q", rep)
	}
	// Once n5 votes, a group of two voters with these short raft
	// timeouts may change leader in a loaded machine's stalls (a join
	// answered "leadership lost" in 1 run in 10 even with n5 caught up).
	// A join so answered is asked again once the leader, whose admin
	// holds the members' asks, leads again: what the test checks is the
	// answer of a leader, not that leadership holds.
	var others []*replica.Node
	join := func(id, addr string, frames ...string) [][]byte {
		t.Helper()
		body := [][]byte{[]byte(id), []byte(addr)}
		for _, f := range frames {
			body = append(body, []byte(f))
		}
		for try := 0; ; try++ {
			rep := admin.serve(broker.Request{Service: tsp.SvcJoin, Body: body})
			if !answersLeadershipMoved(rep) || try == 10 {
				return rep
			}
			leadAgain(t, leader, peers[0], others)
		}
	}
	isVoter := func(id string) bool { m, ok := leader.MemberAt(id, ""); return ok && m.Voter }
	rep := join("n4", "nowhere:1", tsp.JoinVoter)
	if len(rep) != 2 || string(rep[0]) != tsp.CodeUnknown || !strings.Contains(string(rep[1]), "has not reported") || !strings.Contains(string(rep[1]), "--force") {
		t.Fatalf("join --voter of a member never up: %q, want 400 saying it has not reported, and --force", rep)
	}
	if isVoter("n4") {
		t.Fatal("n4 given its vote by a refused join --voter")
	}

	// n5 is up but far behind: it asked at its applied index 1.
	submitTo(t, leader, 2*voteSlack)
	n5, tr5 := newcomer(t, "n5", trs[0])
	others = append(others, n5)
	addr5 := string(tr5.LocalAddr())
	if rep := join("n5", addr5); string(rep[0]) != "200" {
		t.Fatalf("join n5: %q", rep)
	}
	if rep := join("n5", addr5, tsp.JoinVoter, "1"); string(rep[0]) != tsp.CodeUnknown {
		t.Fatalf("n5 asks its vote far behind: %q, want 400", rep)
	}
	c := leader.Status().CommitIndex
	rep = join("n5", addr5, tsp.JoinVoter)
	if len(rep) != 2 || string(rep[0]) != tsp.CodeUnknown || !strings.HasPrefix(string(rep[1]), catchingUp) || !strings.Contains(string(rep[1]), "entries behind the commit index") {
		t.Fatalf("join --voter of a member far behind: %q, want 400 %s, how far behind", rep, catchingUp)
	}
	if isVoter("n5") {
		t.Fatal("n5 given its vote by a refused join --voter")
	}
	// Once it reported being caught up, the operator's --voter is taken
	// (its own ask gave it the vote already; the join keeps it). It
	// reports so when it has caught up, as its version loop does
	// (askVote sends its own applied index): reported while it still
	// took the join's snapshot and the entries after it, n5 got a vote
	// that every commit then waited for, and the leader of two voters,
	// whose RPCs to n5 timed out meanwhile, lost its leadership: the next
	// join failed "leadership lost" in 6 runs of 10 under -race on two
	// busy cores.
	waitFor(t, "n5 caught up with the commit index it reports", 30*time.Second, func() bool { return n5.Status().AppliedIndex >= c })
	if rep := join("n5", addr5, tsp.JoinVoter, strconv.FormatUint(c, 10)); string(rep[0]) != "200" {
		t.Fatalf("n5 asks its vote caught up: %q", rep)
	}
	if rep := join("n5", addr5, tsp.JoinVoter); string(rep[0]) != "200" || !isVoter("n5") {
		t.Fatalf("join --voter of a member caught up: %q, voter %v", rep, isVoter("n5"))
	}

	// --force gives the vote to the member never up.
	if rep := join("n4", "nowhere:1", tsp.JoinVoterForce); string(rep[0]) != "200" || !isVoter("n4") {
		t.Fatalf("join --voter --force of n4: %q, voter %v", rep, isVoter("n4"))
	}
}

// answersLeadershipMoved says whether an admin's answer rep says its node
// was not, or stopped being, the raft leader before the request took
// effect.
func answersLeadershipMoved(rep [][]byte) bool {
	if len(rep) != 2 || string(rep[0]) != tsp.CodeError {
		return false
	}
	why := string(rep[1])
	return why == string(tsp.NotActive) || strings.Contains(why, raft.ErrLeadershipLost.Error()) ||
		strings.Contains(why, raft.ErrNotLeader.Error()) || strings.Contains(why, store.ErrNotLeader.Error())
}

// leadAgain waits until n (member self) leads its group again, having
// another member that leads, if one does, hand its leadership back.
func leadAgain(t *testing.T, n *replica.Node, self replica.Peer, others []*replica.Node) {
	t.Helper()
	waitFor(t, self.ID+" leads again", 20*time.Second, func() bool {
		if n.IsLeader() {
			return true
		}
		for _, o := range others {
			if o.IsLeader() {
				_ = o.TransferLeadership(self.ID, self.Addr)
			}
		}
		return false
	})
}

// A member replaced at the same ID between two rounds of the leader's
// version loop (leave, then join of an empty node) learns where the
// leader is from an announcement: the member that left had reported, so
// none was missing, and the members' IDs were as at the last round; the
// leader announced again only 15 rounds later, and the newcomer, sent a
// snapshot that held no announcement, neither reported nor asked for its
// vote until then (a 20 s wait for its vote failed).
func TestReplacedMemberLearnsTheLeader(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nodes, trs, peers := memGroup(t, 2)
	// a leads, b (the last member) is replaced: joined again, it is
	// last again, and the members' IDs read as before.
	if l := leaderOf(t, nodes); l != nodes[0] {
		if err := l.TransferLeadership(peers[0].ID, peers[0].Addr); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a leads", 10*time.Second, nodes[0].IsLeader)
	leader, li, other := nodes[0], 0, peers[1].ID
	admin := NewAdmin(leader, nil, log)
	admin.NonvoterFirst = true
	// Rounds every 3 s once settled: the leave and the join below fall
	// between two of them (they take milliseconds).
	const interval = 3 * time.Second
	// At version 1, nothing to raise: the first round, which announces,
	// settles, and the next comes a whole interval later.
	v := NewVersions(leader, VersionsConfig{Endpoint: func() string { return "tcp://127.0.0.1:5555" }, Interval: interval, Logger: log, Protocol: 1})
	v.Report(other, 1, "")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- v.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "the other member told where the leader is", interval, func() bool { return nodes[1-li].LeaderInfo().Endpoint != "" })

	// The other member dies and is replaced at once: leave, and an empty
	// node joins at its ID (here at another address: the IDs are what
	// the loop compared). It is sent a snapshot of the whole log, which
	// the announcement is in.
	// It leaves before its link is cut: cut first, the leader of two
	// voters steps down once its lease (150 ms) passes without the
	// other, and a leave that came later was answered "not active" (1
	// run in 10 under -race on two busy cores); a leave met by a
	// leadership change of the loaded group is asked again once a leads.
	retried := false
	for try := 0; ; try++ {
		rep := admin.serve(broker.Request{Service: tsp.SvcLeave, Body: [][]byte{[]byte(other)}})
		if string(rep[0]) == "200" {
			retried = try > 0
			break
		}
		if !answersLeadershipMoved(rep) || try == 10 {
			t.Fatalf("leave %s: %q", other, rep)
		}
		leadAgain(t, leader, peers[li], []*replica.Node{nodes[1-li]})
	}
	trs[li].Disconnect(trs[1-li].LocalAddr())
	n, tr := newcomer(t, other, trs[li])
	if rep := admin.serve(broker.Request{Service: tsp.SvcJoin, Body: [][]byte{[]byte(other), []byte(tr.LocalAddr())}}); string(rep[0]) != "200" {
		t.Fatalf("join the new %s: %q", other, rep)
	}
	waitFor(t, "the new member told where the leader is, within a round and a half", interval*3/2, func() bool {
		return n.LeaderInfo().Endpoint != ""
	})
	if retried {
		// The leave waited for a leader again, so the leave and the join
		// may have fallen in different rounds of the version loop, which
		// then saw the members change: the case was not made.
		t.Skip("did not make its case: the leave met a leadership change and was asked again (a loaded machine)")
	}
}
