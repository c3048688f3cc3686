package replica

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/store"
)

// One committed announcement (cluster version 3), applied as raft
// commits it on the active and replayed by a reform on its peer (which
// had it in its log, not applied, when the active died), leaves both
// stores at the same cluster version. The replay marked every command
// solo by replacing its extension, the announcement's with it, and the
// reformed node refused the ops of version 3 until the next announcement.
func TestReformReplayKeepsAnnouncement(t *testing.T) {
	ctx := context.Background()
	open := func() (*store.BoltStore, *fsm) { return openFSM(t) }
	entry := func() *raft.Log {
		return &raft.Log{Index: 5, Term: 2, Type: raft.LogCommand, Data: store.EncodeOps(nil),
			Extensions: encodeMeta("a", Announcement{Endpoint: "tcp://a:1", ClusterVersion: 3}, false)}
	}
	active, fa := open()
	fa.ApplyBatch([]*raft.Log{entry()})
	passive, fp := open()
	hist, err := passive.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := &recovering{fsm: fp, hist: hist}
	if res, ok := r.Apply(entry()).(response); !ok || res.err != nil {
		t.Fatalf("replay: %v", res.err)
	}
	if _, err := r.Snapshot(); err != nil { // flushes the replayed entries
		t.Fatal(err)
	}
	va, _ := active.ClusterVersion(ctx)
	vp, _ := passive.ClusterVersion(ctx)
	ia, _ := active.AppliedIndex(ctx)
	ip, _ := passive.AppliedIndex(ctx)
	if ia != 5 || ip != 5 || va != 3 || vp != va {
		t.Fatalf("entry 5: active applied %d at cluster version %d, reformed passive %d at %d; want both 5 at 3", ia, va, ip, vp)
	}
	if li := fp.leader.Load(); li == nil || li.ID != "a" {
		t.Fatalf("leader info after the replay = %+v, want the announcement's", li)
	}
}

// openFSM opens a store in a temporary directory and an fsm over it.
func openFSM(t *testing.T) (*store.BoltStore, *fsm) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "titanic.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, &fsm{st: st, log: slog.New(slog.DiscardHandler), fatal: make(chan error, 1)}
}

// A configuration entry a node held but had not seen committed when it
// reformed alone (its leader committed it; the commit index had not
// reached the node) is in the reformed node's store history, as it is in
// the leader's, which applied it: the histories part after it, not
// before. Before, RecoverCluster replayed commands alone, the reformed
// store's term ended before the entry, and the leader, restarted and
// made active beside it, looked forked ("holding" the entry): the node
// halted its raft to hand its work over to a peer that could neither
// lead nor go on alone, and nobody served (the pair simulation, seed
// 80084: "0 nodes serve").
func TestReformRecordsConfigurationInTail(t *testing.T) {
	ctx := context.Background()
	open := func() (*store.BoltStore, *fsm) { return openFSM(t) }
	two := raft.Configuration{Servers: []raft.Server{
		{Suffrage: raft.Voter, ID: "a", Address: "a"},
		{Suffrage: raft.Voter, ID: "b", Address: "b"},
	}}
	conf := func(index, term uint64) *raft.Log {
		return &raft.Log{Index: index, Term: term, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(two)}
	}
	// The log both nodes hold: a bootstrap configuration, a no-op of
	// term 2, then the leader's term 3: its no-op and two
	// configurations (the peer added again, twice).
	log := []*raft.Log{
		conf(1, 1),
		{Index: 2, Term: 2, Type: raft.LogNoop},
		{Index: 3, Term: 3, Type: raft.LogNoop},
		conf(4, 3),
		conf(5, 3),
	}
	// The leader saw all of it committed and applied it.
	leader, fl := open()
	fl.ApplyBatch([]*raft.Log{conf(1, 1), conf(4, 3), conf(5, 3)})
	// The follower saw up to 4 committed, then reforms alone.
	follower, ff := open()
	ff.ApplyBatch([]*raft.Log{conf(1, 1), conf(4, 3)})
	ff.applied.Store(4)
	mem := raft.NewInmemStore()
	if err := mem.StoreLogs(log); err != nil {
		t.Fatal(err)
	}
	hist, err := follower.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = "b"
	_, trans := raft.NewInmemTransport("b")
	alone := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: "b", Address: "b"}}}
	rf := &recovering{fsm: ff, hist: hist}
	if err := raft.RecoverCluster(rc, rf, reformLog(mem, 4, 5, rf), mem, raft.NewInmemSnapshotStore(), trans, alone); err != nil {
		t.Fatal(err)
	}
	hl, err := leader.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hf, err := follower.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fork := hf.ForkPoint(hl); fork < hl.Applied || hf.Applied != 5 {
		t.Fatalf("reformed follower's history %+v, the leader's %+v: they part at %d, want at %d (the follower holds everything the leader applied)",
			hf, hl, fork, hl.Applied)
	}
}
