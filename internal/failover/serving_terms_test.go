package failover

import (
	"os"
	"path/filepath"
	"slices"
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
	life := lifeLogs(t)
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

// TestServingTermsForkMovedAside: the node of a pair that yields after a
// split brain hands its fork over and moves its raft state aside; the
// terms it served alone end there, and its peer's raft, which it joins as
// a new member, may reach the same term number by an election of the two
// (solo terms are fenced apart, an election of two is not). So
// TestPairPausedActiveAnswersQueuedSubmits failed: "split brain: nodes
// [pa pb] all served in raft term 4", pb alone in term 4 (fenced: even)
// while pa was stopped, pa alone in term 3 (odd) once resumed, pb's fork
// handed over and moved aside at 21:03:07.414, pa and pb a raft of two,
// pa elected in term 4 at 21:03:08.533 and serving at 21:03:09.024. The
// lines are the run's. A term served by both while neither had moved its
// raft aside is still a split brain, and so is a term the one that moved
// its raft aside led in a raft of two (not alone in its fenced term).
func TestServingTermsForkMovedAside(t *testing.T) {
	t.Parallel()
	life := lifeLogs(t)
	const (
		paServes2 = `time=2026-12-07T21:03:02.888Z level=INFO msg="serving: binary star active and raft leader" component=ha term=2` + "\n"
		pbFenced4 = `time=2026-12-07T21:03:04.733Z level=INFO msg="only voter of its raft: its next term is fenced" component=raft node=backup term=4 stride=2 slot=0` + "\n"
		pbServes4 = `time=2026-12-07T21:03:04.772Z level=INFO msg="serving: binary star active and raft leader" component=ha term=4` + "\n"
		paServes3 = `time=2026-12-07T21:03:07.246Z level=INFO msg="serving: binary star active and raft leader" component=ha term=3` + "\n"
		pbAside   = `time=2026-12-07T21:03:07.414Z level=WARN msg="raft state moved aside; rejoining as a new member" component=raft node=backup aside=/tmp/x/002/forks/20261207T210307.387204428Z store_kept=false applied=0` + "\n"
		paServes4 = `time=2026-12-07T21:03:09.024Z level=INFO msg="serving: binary star active and raft leader" component=ha term=4` + "\n"
		// The same term served before pb moved its raft aside: both
		// rafts ran in term 4 at once.
		paServes4Early = `time=2026-12-07T21:03:07.300Z level=INFO msg="serving: binary star active and raft leader" component=ha term=4` + "\n"
	)
	split4 := []string{"split brain: nodes [pa pb] all served in raft term 4"}
	cases := []struct {
		name   string
		pa, pb string
		want   []string
		terms  int
	}{
		{"the run: pb's term 4 ended with its raft moved aside", paServes2 + paServes3 + paServes4, pbFenced4 + pbServes4 + pbAside, nil, 3},
		{"pb's raft not moved aside", paServes2 + paServes3 + paServes4, pbFenced4 + pbServes4, split4, 3},
		{"pa served term 4 before pb moved its raft aside", paServes2 + paServes4Early, pbFenced4 + pbServes4 + pbAside, split4, 2},
		{"pb led term 4 in a raft of two, then moved it aside", paServes2 + paServes3 + paServes4, pbServes4 + pbAside, split4, 3},
	}
	for _, c := range cases {
		pa := &node{name: "pa", procs: []*netns.Process{life("pa-"+c.name, c.pa)}}
		pb := &node{name: "pb", procs: []*netns.Process{life("pb-"+c.name, c.pb)}}
		if got := splitBrains(pa, pb); !slices.Equal(got, c.want) {
			t.Errorf("%s: split brains %q, want %q", c.name, got, c.want)
		}
		// The terms served are counted as before (TestGroupFaults).
		if got := len(servingTerms(pa, pb)[0]); got != c.terms {
			t.Errorf("%s: %d terms served: %v", c.name, got, servingTerms(pa, pb))
		}
	}
}

// lifeLogs returns a maker of broker lives whose logs hold the lines
// given, written by the test.
func lifeLogs(t *testing.T) func(name, lines string) *netns.Process {
	dir := t.TempDir()
	return func(name, lines string) *netns.Process {
		path := filepath.Join(dir, name+".log")
		if err := os.WriteFile(path, []byte(lines), 0o600); err != nil {
			t.Fatal(err)
		}
		return &netns.Process{Proc: harness.Proc{Name: name, Log: path}}
	}
}
