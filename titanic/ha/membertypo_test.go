package ha

import (
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// Membership changes that name a member wrongly are refused, saying why,
// and change nothing. A join of a member's ID at another address (a typo
// in the address) answered ok and moved the member there, where the
// leader replicated to nobody; a leave of an ID that is not a member (a
// typo for the dead member's ID) answered ok, and the dead member still
// counted in the quorum.
func TestMembershipTyposRefused(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nodes, _, _ := memGroup(t, 3)
	leader := leaderOf(t, nodes)
	follower := nodes[0]
	if follower == leader {
		follower = nodes[1]
	}
	id, addr := follower.Self()
	admin := NewAdmin(leader, nil, log)
	admin.NonvoterFirst = true
	for _, tc := range []struct {
		name string
		req  broker.Request
		want string
	}{
		{"join of a member at another address", broker.Request{Service: tsp.SvcJoin, Body: [][]byte{[]byte(id), []byte("10.9.9.9:7000")}},
			id + " is a member at " + addr + ", not 10.9.9.9:7000"},
		{"leave of a non-member", broker.Request{Service: tsp.SvcLeave, Body: [][]byte{[]byte("n9")}}, "n9 is not a member (members: "},
	} {
		rep := admin.serve(tc.req)
		if len(rep) != 2 || string(rep[0]) != "400" || !strings.Contains(string(rep[1]), tc.want) {
			t.Errorf("%s: %q, want 400 with %q", tc.name, rep, tc.want)
		}
	}
	if m, ok := leader.MemberAt(id, ""); !ok || m.Addr != addr || !m.Voter {
		t.Fatalf("%s after the refused join: %+v %v, want a voter at %s", id, m, ok, addr)
	}
	if ms, _ := leader.Members(); len(ms) != 3 {
		t.Fatalf("members after the refusals: %+v", ms)
	}
	// The right ones still work: the member joins again at its address
	// (a pair's passive asks so after a restart).
	if rep := admin.serve(broker.Request{Service: tsp.SvcJoin, Body: [][]byte{[]byte(id), []byte(addr)}}); string(rep[0]) != "200" {
		t.Fatalf("join of %s at its own address: %q", id, rep)
	}
}

// A member asks for its vote with its applied index, and the leader keeps
// the vote until it is within voteSlack of the leader's commit index: the
// member's own commit index is capped at what it holds, so it asked, and
// was given its vote, thousands of entries behind (found by a tester of
// the group under faults). An operator's `cluster join --voter` (no
// applied index) is taken as asked.
func TestVoteOnlyWhenCaughtUp(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nodes, _, _ := memGroup(t, 3)
	// Through whichever node leads at each try: a loaded machine can
	// cost a leader its term (the submit's outcome is then unknown).
	for i := 0; leaderOf(t, nodes).Status().CommitIndex <= 2*voteSlack; i++ {
		_, err := leaderOf(t, nodes).Apply(t.Context(), []store.Op{{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(), Service: "s", Body: [][]byte{[]byte("x")}}})
		if err != nil && !errors.Is(err, replica.ErrUncertain) && !errors.Is(err, replica.ErrNotLeader) {
			t.Fatalf("submit %d: %v", i, err)
		}
	}
	leader := leaderOf(t, nodes)
	follower := nodes[0]
	if follower == leader {
		follower = nodes[1]
	}
	id, addr := follower.Self()
	admin := NewAdmin(leader, nil, log)
	ask := func(applied uint64) [][]byte {
		return admin.serve(broker.Request{Service: tsp.SvcJoin, Body: [][]byte{[]byte(id), []byte(addr), []byte(tsp.JoinVoter), []byte(strconv.FormatUint(applied, 10))}})
	}
	if rep := ask(1); len(rep) != 2 || string(rep[0]) != "400" || !strings.HasPrefix(string(rep[1]), catchingUp) {
		t.Fatalf("vote asked far behind: %q, want 400 %s", rep, catchingUp)
	}
	if rep := ask(leader.Status().CommitIndex); string(rep[0]) != "200" {
		t.Fatalf("vote asked caught up: %q", rep)
	}
	if rep := admin.serve(broker.Request{Service: tsp.SvcJoin, Body: [][]byte{[]byte(id), []byte(addr), []byte(tsp.JoinVoter)}}); string(rep[0]) != "200" {
		t.Fatalf("an operator's join --voter: %q", rep)
	}
}
