package ha

import (
	"context"
	"testing"
	"time"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// A handed-over op that the taker's cluster version refuses is not
// dropped. The cluster version is raised by an announcement, which during
// a split commits on the side that wrote it only: a split that cut the
// pair as its raise was written leaves the sides at different versions.
// Here the backup, alone, raised it and cancelled a ticket both sides
// held (its client was told cancelled). The taker's Merge answered 200
// with the cancel refused in its per-op result, and the backup dropped
// its fork: after the merge the ticket was pending on the primary and ran
// (found by a review). Now the handover fails while the taker refuses an
// op and is sent again; once the taker's version is raised (in a running
// pair, when the yielding node reports its release) it goes through.
func TestHandoverOfOpNewerThanTakersVersionNotDropped(t *testing.T) {
	dir := t.TempDir()
	log := testLogger()
	p, b, l := openMemPair(t, dir, log)
	// A ticket both sides hold.
	shared, _ := submitCommon(t, p, b, 0, "shared")
	waitFor(t, "the shared ticket on both", 10*time.Second, func() bool {
		_, errP := p.st.Get(context.Background(), shared)
		_, errB := b.st.Get(context.Background(), shared)
		return errP == nil && errB == nil
	})

	// The split.
	l.down()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.rep.Reform(ctx); err != nil {
		t.Fatalf("backup reform: %v", err)
	}
	// The backup, alone, raises the cluster version (its leader saw both
	// members report this build just before the cut) and its client
	// cancels the shared ticket: acknowledged.
	if err := b.rep.Announce(ctx, replica.Announcement{Endpoint: "inproc://backup", ClusterVersion: store.OpsRecordVersion}); err != nil {
		t.Fatalf("backup announce: %v", err)
	}
	res, err := b.rep.Apply(ctx, []store.Op{{Kind: store.OpCancel, ID: shared, Time: time.Now(), Reason: "cancelled by its client"}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("cancel on the backup: %v %v", err, res)
	}
	onB := submitOn(t, b, BackupTag, 1) // and it takes a ticket in
	if err := p.rep.Reform(ctx); err != nil {
		t.Fatalf("primary reform: %v", err)
	}
	submitOn(t, p, PrimaryTag, 1)
	if v, _ := p.rep.ClusterVersion(ctx); v >= 3 {
		t.Fatalf("primary's cluster version %d: the test needs it below the cancel's", v)
	}
	l.up()

	// The primary is active: the backup yields and hands its fork over.
	pairP, pairB := linkedPairs(dir, log, p, b, binarystar.StateActive, binarystar.StatePassive, nil)
	runPairs(t, pairP, pairB)
	rejoined := func() bool {
		_, member := p.rep.MemberAt("backup", string(l.addrB))
		return member && pairP.Active()
	}
	waitFor(t, "the handover refused, or the backup back in the primary's raft", 30*time.Second, func() bool { return p.disp.refused.Load() > 0 || rejoined() })
	if p.disp.refused.Load() > 0 {
		if err := p.rep.Announce(ctx, replica.Announcement{Endpoint: "inproc://primary", ClusterVersion: store.OpsRecordVersion}); err != nil {
			t.Fatalf("primary announce: %v", err)
		}
	}
	waitFor(t, "the backup rejoins the primary's raft", 30*time.Second, rejoined)
	if _, err := p.st.Get(context.Background(), onB[0]); err != nil {
		t.Fatalf("the ticket the backup took in alone was not handed over: %v", err)
	}
	tk, err := p.st.Get(context.Background(), shared)
	if err != nil {
		t.Fatal(err)
	}
	if tk.State != store.StateCancelled {
		t.Fatalf("ticket %s, cancelled on the backup during the split (acknowledged to its client), is %s on the primary after the handover: the primary's cluster version refused the handed-over cancel, the handover still answered 200, and the backup dropped its fork", shared, tk.State)
	}
}

// A pair's taker raises its cluster version for a handover that needs it
// (Versions.RaiseFor): a yielding node with a fork reports no version, so
// reports alone never raised the taker's, and the handover (refused at
// every try, see above) never went through.
func TestHandoverRaisesPairVersion(t *testing.T) {
	log := testLogger()
	node := soloLeader(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id := store.NewID()
	if res, err := node.Apply(ctx, []store.Op{{Kind: store.OpSubmit, ID: id, Time: time.Now(), Service: "echo", Body: [][]byte{[]byte("x")}}}); err != nil || res[0].Err != nil {
		t.Fatalf("submit: %v %v", err, res)
	}
	if cv, _ := node.ClusterVersion(ctx); cv >= 3 {
		t.Fatalf("cluster version %d: the test needs it below a cancel's", cv)
	}
	admin := NewAdmin(node, nil, log)
	admin.Versions = NewVersions(node, VersionsConfig{Pair: true, PeerID: "backup", PeerEndpoint: "tcp://127.0.0.1:5556",
		Endpoint: func() string { return "tcp://127.0.0.1:5555" }, Logger: log})
	disp := &applyDispatcher{node: node}
	disp.active.Store(true)
	admin.Merge = disp.merge
	cancelOp := store.Op{Kind: store.OpCancel, ID: id, Time: time.Now(), Reason: "cancelled on the peer during a split"}
	rep, err := adminLink{admin}.Request(ctx, tsp.SvcAdopt, [][]byte{store.EncodeOps([]store.Op{cancelOp})})
	if err != nil || len(rep) == 0 || string(rep[0]) != "200" {
		t.Fatalf("handover of a cancel: %q %v, want 200", rep, err)
	}
	tk, err := node.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if tk.State != store.StateCancelled {
		t.Fatalf("ticket %s after the handover of its cancel: %s, want cancelled", id, tk.State)
	}
}
