package replica_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/titanicmq/titanic/store"
)

// A cluster started over restored stores (titanic restore on every node:
// tickets, and no applied index) begins a raft log at index 1 that holds
// none of the restored tickets. A member that comes back with an empty
// data directory (a replaced disk) under its ID, still a voter, must be
// sent the restored tickets too: README (Restore) says a node with an
// empty data directory receives its peers' state through raft.
//
// FAILS (bug): nothing compacts such a log (PrepareJoin does, but only
// before an AddVoter, and this member is no new voter); the emptied
// member bootstraps the same configuration at index 1, the leader finds
// the logs agree there and replays its entries from index 2, so the
// member holds the new deployment's work and none of the restored
// tickets. The failover test TestPairRestoredThenPassiveDiskReplaced
// shows the loss this leads to once that member serves.
func TestEmptyMemberOfRestoredClusterGetsRestoredTickets(t *testing.T) {
	// The backup every member is restored from.
	backup := filepath.Join(t.TempDir(), "titanic.db")
	st, err := store.Open(backup, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	var restored []store.ID
	var ops []store.Op
	for range 20 {
		op := submitOp("s")
		ops = append(ops, op)
		restored = append(restored, op.ID)
	}
	if _, err := st.Apply(context.Background(), ops); err != nil {
		t.Fatal(err)
	}
	// As titanic restore leaves it (there is no bookkeeping to clear
	// here, but this is the call restore makes).
	if _, err := st.ResetReplication(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}

	ms, peers := clusterFrom(t, 2, data)
	// The new deployment's work: fewer entries than the snapshot
	// threshold, as a young deployment (the broker's is 8192).
	ids := applySome(t, ms, 3)
	for _, m := range ms {
		hasAll(t, m, restored)
		hasAll(t, m, ids)
	}

	// The follower's disk is replaced: the same ID and address, an empty
	// data directory, started as the broker starts it (with its peers).
	f := follower(ms, leader(t, ms))
	f.close()
	f.dir = t.TempDir()
	f.open(t, peers)
	ids = append(ids, applySome(t, ms, 3)...)
	hasAll(t, f, ids)
	hasAll(t, f, restored)
}
