package replica_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
)

// A single broker's store (or one restored backup) started as one member
// of a new group of three whose other two members are empty, the two
// empty ones started first (README, Restore: "One restored node beside
// empty ones is not enough"). The empty two elect a leader and start a
// log at index 1; the populated member, bootstrapped from its store at
// index 2 (restoredIndex), is then sent that log from index 1 (its own
// log is empty), takes the configuration and the leader's no-op at 1 and
// 2 past the guard (which checks command entries only), and applies the
// group's work from index 3 on top of tickets no other member has. No
// error, no "diverged": it answers for tickets the leader calls unknown,
// and serves them if it leads. The guard is there so that a store's
// content never silently disagrees with the log (guard.go); an entry at
// or below restoredIndex reaching a store that records restoredIndex in
// restoredTerm (its history's first epoch) says the leader's log never
// held that snapshot, and should stop the node as diverged.
func TestLoneRestoredMemberDivergesLoudly(t *testing.T) {
	data, restored := restoredBackup(t, false)
	var ms []*member
	var peers []replica.Peer
	for i := range 3 {
		m := &member{id: fmt.Sprintf("n%d", i+1), addr: freeAddr(t), dir: t.TempDir()}
		ms = append(ms, m)
		peers = append(peers, replica.Peer{ID: m.id, Addr: m.addr})
	}
	t.Cleanup(func() {
		for _, m := range ms {
			m.close()
		}
	})
	if err := os.WriteFile(filepath.Join(ms[0].dir, "titanic.db"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	ms[1].open(t, peers)
	ms[2].open(t, peers)
	ids := applySome(t, ms[1:], 3)
	ms[0].open(t, peers)
	ids = append(ids, applySome(t, ms[1:], 3)...)
	// Either ms[0] stops as diverged, or it takes the group's work on top
	// of tickets the others lack.
	deadline := time.Now().Add(wait)
	for {
		if err := ms[0].n.Failed(); err != nil {
			if !errors.Is(err, store.ErrDiverged) {
				t.Fatalf("n1 stopped with %v, want store.ErrDiverged", err)
			}
			return // stopped loudly: what it should do
		}
		caughtUp := true
		for _, id := range ids {
			if _, err := ms[0].st.Get(context.Background(), id); err != nil {
				caughtUp = false
			}
		}
		if caughtUp {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n1 neither stopped nor caught up within %s", wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
	l := leader(t, ms)
	own := 0
	for _, id := range restored {
		_, errHere := ms[0].st.Get(context.Background(), id)
		_, errLeader := l.st.Get(context.Background(), id)
		if errHere == nil && errLeader != nil {
			own++
		}
	}
	if own > 0 {
		t.Fatalf("n1 applied the group's %d entries on top of %d tickets that leader %s does not hold, without stopping: its store silently disagrees with the log", len(ids), own, l.id)
	}
}
