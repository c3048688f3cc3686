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
	open := func() (*store.BoltStore, *fsm) {
		st, err := store.Open(filepath.Join(t.TempDir(), "titanic.db"), store.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st, &fsm{st: st, log: slog.New(slog.DiscardHandler), fatal: make(chan error, 1)}
	}
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
