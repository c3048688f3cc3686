package replica_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
)

// A cluster started over restored stores (titanic restore on every node:
// tickets, and no applied index) begins a raft log at index 1 that holds
// none of the restored tickets. A member that comes back with an empty
// data directory (a replaced disk) under its ID, still a voter, must be
// sent the restored tickets too: README (Restore) says a node with an
// empty data directory receives its peers' state through raft.
//
// It failed before restored stores bootstrapped raft from a snapshot of
// themselves (replica's restoredIndex): nothing compacted such a log
// (PrepareJoin does, but only before an AddVoter, and this member is no
// new voter); the emptied member bootstrapped the same configuration at
// index 1, the leader found the logs agree there and replayed its entries
// from index 2, so the member held the new deployment's work and none of
// the restored tickets. The failover test
// TestPairRestoredThenPassiveDiskReplaced shows the loss this led to once
// that member served.
func TestEmptyMemberOfRestoredClusterGetsRestoredTickets(t *testing.T) {
	ms, peers, restored, ids := restoredCluster(t, 2, false)
	// The follower's disk is replaced: the same ID and address, an empty
	// data directory, started as the broker starts it (with its peers).
	f := follower(ms, leader(t, ms))
	f.close()
	emptiedGetsAll(t, ms, f, peers, append(restored, ids...))
}

// TestEmptyGroupMemberOfRestoredClusterGetsRestoredTickets is the same in
// a group of three, where the emptied member comes back while its old
// leader is down too: the only other member, which has never led, is
// elected with the emptied member's vote and must bring it up to date
// with the restored tickets at once (a leader replicates to its peers as
// soon as it leads, before anything it might do on being elected). The
// restored stores are marked as a bootstrap from the store that stopped
// before its snapshot was written leaves them, which must bootstrap the
// same way again.
func TestEmptyGroupMemberOfRestoredClusterGetsRestoredTickets(t *testing.T) {
	ms, peers, restored, ids := restoredCluster(t, 3, true)
	l := leader(t, ms)
	e := follower(ms, l)
	e.close()
	l.close()
	emptiedGetsAll(t, ms, e, peers, append(restored, ids...))
}

// emptiedGetsAll starts the closed member e again with an empty data
// directory (a replaced disk: the same ID and address, started as the
// broker starts it, with its peers), applies more work, and checks that
// e holds it and every ticket of had.
func emptiedGetsAll(t *testing.T, ms []*member, e *member, peers []replica.Peer, had []store.ID) {
	t.Helper()
	e.dir = t.TempDir()
	e.open(t, peers)
	hasAll(t, e, append(had, applySome(t, ms, 3)...))
}

// restoredCluster starts size members over a restored backup
// (restoredBackup), applies the new deployment's first work, fewer
// entries than the snapshot threshold as a young deployment's (the
// broker's is 8192), and waits until every member holds all of it. It
// returns the tickets of the backup and of the new work.
func restoredCluster(t *testing.T, size int, marked bool) (ms []*member, peers []replica.Peer, restored, ids []store.ID) {
	t.Helper()
	data, restored := restoredBackup(t, marked)
	ms, peers = clusterFrom(t, size, data)
	ids = applySome(t, ms, 3)
	for _, m := range ms {
		hasAll(t, m, restored)
		hasAll(t, m, ids)
	}
	return ms, peers, restored, ids
}

// restoredBackup returns a backup's bytes, as titanic restore leaves
// them, and the tickets it holds. Marked, the store also records the
// restored index as applied, as bootstrapFromStore's first step does.
func restoredBackup(t *testing.T, marked bool) ([]byte, []store.ID) {
	t.Helper()
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
	if marked {
		if res := st.ApplyLog(context.Background(), []store.Entry{{Index: 2, Term: 1}}); res[0].Err != nil {
			t.Fatal(res[0].Err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	return data, restored
}
