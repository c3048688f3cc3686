package failover

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/internal/netns"
)

// TestServingTermsPerRaftHistory: a restore of a backup starts a new raft
// history whose terms count from 1 again, so the same term number served
// by each node, once before and once after the restore, is no split
// brain; in one history it is. TestPairRestoredThenPassiveDiskReplaced
// and TestPairRestoredTicketsLostForGood failed so under load: "split
// brain: nodes [pa pb] all served in raft term 4", pa in the first raft
// history, pb in the restored one ("bootstrapped raft cluster from the
// store's content ... a restored backup" between them). No broker runs:
// the lives' logs are written by the test.
func TestServingTermsPerRaftHistory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	life := func(name, lines string) *netns.Process {
		path := filepath.Join(dir, name+".log")
		if err := os.WriteFile(path, []byte(lines), 0o600); err != nil {
			t.Fatal(err)
		}
		return &netns.Process{Proc: harness.Proc{Name: name, Log: path}}
	}
	const serving4 = `time=2026-12-07T21:43:37.386Z level=INFO msg="serving: binary star active and raft leader" component=ha term=4` + "\n"
	pa := &node{name: "pa", procs: []*netns.Process{life("pa-0", serving4), life("pa-1", "")}, restores: []int{1}}
	pb := &node{name: "pb", procs: []*netns.Process{life("pb-0", ""), life("pb-1", serving4)}, restores: []int{1}}

	hs := servingTerms(pa, pb)
	if len(hs) != 2 {
		t.Fatalf("%d raft histories, want 2 (one restore): %v", len(hs), hs)
	}
	if who := hs[0][4]; len(who) != 1 || who[0] != "pa" {
		t.Errorf("term 4 of the first history served by %v, want [pa]", who)
	}
	if who := hs[1][4]; len(who) != 1 || who[0] != "pb" {
		t.Errorf("term 4 of the restored history served by %v, want [pb]", who)
	}

	// Without the restore, both lives are of one history: a split brain.
	pa.restores, pb.restores = nil, nil
	hs = servingTerms(pa, pb)
	if len(hs) != 1 || len(hs[0][4]) != 2 {
		t.Errorf("one history: term 4 served by %v, want [pa pb]", hs)
	}
}
