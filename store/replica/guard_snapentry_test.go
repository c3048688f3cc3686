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
