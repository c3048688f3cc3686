package failover

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestGroupReplacedMemberGetsItsVote replaces a dead member of a 3-node
// group under load as README's operator would, several times: SIGKILL a
// follower, wipe its data directory, `titanic cluster leave` it, start it
// empty without --peers and `titanic cluster join` it at its address. The
// newcomer must be given its vote once it has caught up (README: it asks
// at its next version report, every 2 s), and the group of three must
// then survive the loss of its leader, with nothing acknowledged lost.
//
// Found by a tester: the newcomer, caught up (its applied index at the
// leader's commit), stayed a nonvoter for good, and the group of two
// voters had no quorum once its leader died. Two causes. Its own raft
// configuration lacked it: the leader's replication of the member that
// left (same ID and address) made its last best-effort try after its
// backoff and sent the newcomer the snapshot taken for the join, after
// the newcomer held the AddNonvoter entry past it; raft's
// installSnapshot set the snapshot's configuration (without the
// newcomer) as its latest, and askVote asked only for a member that
// found itself a nonvoter in its own configuration (it now asks all the
// same: TestMemberOutOfItsConfigurationGetsItsVote). And the newcomer
// did not know where the leader was when the leave and the join came
// between two rounds of the leader's version loop: no announcement
// followed (TestReplacedMemberLearnsTheLeader).
func TestGroupReplacedMemberGetsItsVote(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nodes, brokers, dg := healthyGroup(t, ctx, "g1", "g2", "g3")
	B := strings.Join(brokers, ",")
	echoWorkers(t, ctx, brokers, 3)
	ld := startLoad(t, ctx, brokers, 4, clientTimeout)
	ld.progress(t, 200, 30*time.Second, "first acks", dg)

	// The race is with the old replication's backoff: a few rounds make
	// it likely to show.
	const rounds = 8
	for round := 1; round <= rounds; round++ {
		leader := waitMembers(t, ctx, nodes, names(nodes), 30*time.Second)
		victim := without(nodes, leader)[round%2]
		rest := without(nodes, victim)
		victim.kill()
		ld.progress(t, 100, 20*time.Second, fmt.Sprintf("round %d: acks with %s dead", round, victim.name), dg)
		if err := os.RemoveAll(victim.dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(victim.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := cli(t, rest[0], "cluster", "leave", "--broker", B, victim.name); err != nil {
			t.Fatalf("round %d: cluster leave %s: %v\n%s%s", round, victim.name, err, out, dg())
		}
		victim.args = withoutPeers(victim.args)
		victim.start(t)
		if out, err := cli(t, rest[0], "cluster", "join", "--broker", B, victim.name, victim.host.Addr+":7000"); err != nil {
			t.Fatalf("round %d: cluster join %s: %v\n%s%s", round, victim.name, err, out, dg())
		}
		// Caught up within seconds under this load; it asks every 2 s.
		eventually(t, 20*time.Second, fmt.Sprintf("round %d: the new member %s given its vote", round, victim.name), func() error {
			l := leaderOf(t, ctx, rest, 5*time.Second)
			st, err := clusterStatus(ctx, l.endpoint())
			if err != nil {
				return err
			}
			if slices.Contains(st.voters(), victim.name) {
				return nil
			}
			own, err := clusterStatus(ctx, victim.endpoint())
			return fmt.Errorf("leader %s (commit %d) has members %v; %s (applied %d) has members %v (%v)",
				l.name, st.Commit, st.Members, victim.name, own.Applied, own.Members, err)
		}, dg)
		ld.progress(t, 50, 20*time.Second, fmt.Sprintf("round %d: acks after the join", round), dg)
	}

	// The group of three survives its leader's loss.
	l := waitMembers(t, ctx, nodes, names(nodes), 30*time.Second)
	l.kill()
	ld.progress(t, 100, 20*time.Second, "acks with the leader "+l.name+" killed", dg)
	l.start(t)
	waitMembers(t, ctx, nodes, names(nodes), 30*time.Second)
	acks := ld.finish(t, dg)
	checkAcks(t, ctx, brokers, acks, dg)
}

// withoutPeers returns args without --peers and its value: how a new
// member is started before `cluster join` (README: "no --peers").
func withoutPeers(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == "--peers" {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// statuses is every node's titanic.cluster answer, for failure messages.
func statuses(ctx context.Context, nodes []*node) string {
	var b strings.Builder
	for _, n := range nodes {
		st, err := clusterStatus(ctx, n.endpoint())
		fmt.Fprintf(&b, "\n%s: %+v %v", n.name, st, err)
	}
	return b.String()
}

// TestGroupVoterJoinOfDeadMemberRefused: `titanic cluster join --voter`
// of a member that joined but is not up is refused (exit 4, saying it
// has not reported); it gave the vote at once, and the group of three
// voters with one down would have had no quorum after a leader's loss.
// Started, the member gets its vote by itself.
func TestGroupVoterJoinOfDeadMemberRefused(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nodes, brokers, dg := healthyGroup(t, ctx, "g1", "g2", "g3")
	B := strings.Join(brokers, ",")
	leader := waitMembers(t, ctx, nodes, names(nodes), 30*time.Second)
	victim := without(nodes, leader)[0]
	rest := without(nodes, victim)
	victim.kill()
	if err := os.RemoveAll(victim.dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(victim.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	addr := victim.host.Addr + ":7000"
	for _, args := range [][]string{{"leave", victim.name}, {"join", victim.name, addr}} {
		if out, err := cli(t, rest[0], append([]string{"cluster", "--broker", B}, args...)...); err != nil {
			t.Fatalf("cluster %v: %v\n%s%s", args, err, out, dg())
		}
	}
	out, err := cli(t, rest[0], "cluster", "join", "--voter", "--broker", B, victim.name, addr)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 4 || !strings.Contains(out, "has not reported") {
		t.Fatalf("cluster join --voter of %s, down: %v, output %q; want exit 4 saying it has not reported%s", victim.name, err, out, dg())
	}
	st, err := clusterStatus(ctx, leaderOf(t, ctx, rest, 10*time.Second).endpoint())
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(st.voters(), victim.name) {
		t.Fatalf("%s a voter after a refused join --voter: %v%s", victim.name, st.Members, dg())
	}
	victim.args = withoutPeers(victim.args)
	victim.start(t)
	waitMembers(t, ctx, nodes, names(nodes), 30*time.Second)
}
