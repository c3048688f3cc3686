package replica

import (
	"errors"
	"testing"

	"github.com/hashicorp/raft"
)

// The log guard answers for the latest snapshot's index only when the log
// begins right after it (a follower's term check after a lost answer). A
// log that also holds entries before the snapshot's index, with the
// snapshot's own entry missing, keeps it not found: a leader reading
// entries to send would otherwise send the made-up entry in place of the
// real one, whose content only the snapshot holds.
func TestGuardAnswersSnapshotEntryOnlyAtLogStart(t *testing.T) {
	const snapIndex, snapTerm = 10, 3
	for _, tc := range []struct {
		name    string
		entries []uint64
		want    bool // GetLog(snapIndex) answered with the snapshot's term
	}{
		{"log after the snapshot", []uint64{11, 12, 13}, true},
		{"entries before and after it", []uint64{7, 8, 9, 11, 12}, false},
		{"entries before it only", []uint64{7, 8, 9}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := raft.NewInmemStore()
			for _, i := range tc.entries {
				if err := logs.StoreLog(&raft.Log{Index: i, Term: snapTerm, Type: raft.LogCommand, Data: []byte("x")}); err != nil {
					t.Fatal(err)
				}
			}
			snaps := raft.NewInmemSnapshotStore()
			sink, err := snaps.Create(raft.SnapshotVersionMax, snapIndex, snapTerm, raft.Configuration{}, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := sink.Close(); err != nil {
				t.Fatal(err)
			}
			g := &logGuard{LogStore: logs, snaps: snaps}
			var l raft.Log
			err = g.GetLog(snapIndex, &l)
			switch {
			case tc.want && (err != nil || l.Index != snapIndex || l.Term != snapTerm || l.Type != raft.LogNoop):
				t.Fatalf("GetLog(%d): %v %+v, want the snapshot's index and term", snapIndex, err, l)
			case !tc.want && !errors.Is(err, raft.ErrLogNotFound):
				t.Fatalf("GetLog(%d): %v %+v, want raft.ErrLogNotFound", snapIndex, err, l)
			}
		})
	}
}

// A leader reads the entry before a follower's next one, then the next
// one; a compaction through the snapshot's index in between (the join's
// PrepareJoin compacts with no trailing entries) must not leave the log
// beginning right after the snapshot, where GetLog makes the entry up:
// compaction keeps the snapshot's own entry, and the read gets the real
// command. Found by a reviewer: before, the read got the made-up no-op,
// which raft would have sent in place of the command.
func TestGuardLeaderReadRacesCompaction(t *testing.T) {
	const snapIndex, term = 10, 3
	logs := raft.NewInmemStore()
	for i := uint64(1); i <= 13; i++ {
		if err := logs.StoreLog(&raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	snaps := raft.NewInmemSnapshotStore()
	g := &logGuard{LogStore: logs, snaps: snaps, fsm: &fsm{}}
	var prev, l raft.Log
	if err := g.GetLog(snapIndex-1, &prev); err != nil { // setPreviousLog
		t.Fatal(err)
	}
	sink, err := snaps.Create(raft.SnapshotVersionMax, snapIndex, term, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.DeleteRange(1, snapIndex); err != nil { // compactLogs, TrailingLogs 0
		t.Fatal(err)
	}
	if err := g.GetLog(snapIndex, &l); err != nil || l.Type != raft.LogCommand || string(l.Data) != "x" { // setNewLogs
		t.Fatalf("GetLog(%d) after compaction: %v %+v, want the real command", snapIndex, err, l)
	}
	// Raft replacing entries after the snapshot (a conflict at the
	// first index of a log that begins after it, a follower's that
	// installed it) is not compaction: every entry goes.
	after := raft.NewInmemStore()
	for i := uint64(snapIndex + 1); i <= 13; i++ {
		if err := after.StoreLog(&raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	g = &logGuard{LogStore: after, snaps: snaps, fsm: &fsm{}}
	if err := g.DeleteRange(snapIndex+1, 13); err != nil {
		t.Fatal(err)
	}
	if last, _ := after.LastIndex(); last != 0 {
		t.Fatalf("last index %d after deleting %d-13 of a log beginning there, want none left", last, snapIndex+1)
	}
}
