package replica_test

import (
	"errors"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store/replica"
)

// TestStepDown: a leader that steps down restarts its raft and stands
// aside, so its peer is elected; nothing committed is lost, and the
// restarted instance takes leadership back by a transfer (a stuck one,
// hashicorp/raft#696, never would).
func TestStepDown(t *testing.T) {
	ms, _ := cluster(t, 2)
	ids := applySome(t, ms, 10)
	old := leader(t, ms)
	other := ms[0]
	if other == old {
		other = ms[1]
	}
	if err := other.n.StepDown(); !errors.Is(err, replica.ErrNotLeader) {
		t.Fatalf("StepDown on a follower = %v, want ErrNotLeader", err)
	}
	if err := old.n.StepDown(); err != nil {
		t.Fatalf("StepDown: %v", err)
	}
	// The peer hears no leader and stands first: the node that stepped
	// down does not run for several heartbeat timeouts.
	deadline := time.Now().Add(wait)
	for !other.n.IsLeader() {
		if old.n.IsLeader() {
			t.Fatalf("%s, which stepped down, was elected again before its peer", old.id)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not elected within %s after %s stepped down (status %+v)", other.id, wait, old.id, other.n.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	ids = append(ids, applySome(t, ms, 10)...)
	hasAll(t, old, ids)
	hasAll(t, other, ids)
	if err := other.n.TransferLeadership(old.id, old.addr); err != nil {
		t.Fatalf("transfer back to the node that stepped down: %v", err)
	}
	if l := leader(t, ms); l != old {
		t.Fatalf("leader after the transfer back is %s, want %s", l.id, old.id)
	}
	ids = append(ids, applySome(t, ms, 5)...)
	hasAll(t, other, ids)
}
