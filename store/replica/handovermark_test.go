package replica_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
)

// A handover's mark counts the ops after it in its call, and a store
// applies the ops of several calls in one log entry: when the replica
// refuses an op of the mark's call (here one of a kind this build does
// not know) and keeps the mark, the mark counts the next ops of the entry
// (here the last op of the call, standing for the next caller's) and
// records the refused op as taken. The redo the refusal asks for (the
// op sent again, as it can be taken now) then left it out, and it was
// lost with the yielding node's fork. The mark is left out with the
// refused op: the rest of its call goes in unmarked.
func TestHandoverMarkLeftOutWithRefusedOp(t *testing.T) {
	ms, _ := cluster(t, 1)
	l := leader(t, ms)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := l.n.Announce(ctx, replica.Announcement{Endpoint: "tcp://10.0.0.1:5555", ClusterVersion: store.OpsRecordVersion}); err != nil {
		t.Fatal(err)
	}
	for v, _ := l.n.ClusterVersion(ctx); v != store.OpsRecordVersion; v, _ = l.n.ClusterVersion(ctx) {
		if ctx.Err() != nil {
			t.Fatalf("cluster version %d, want %d", v, store.OpsRecordVersion)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var k1, k2 store.HandoverKey
	k1[7], k2[7] = 1, 2
	for _, mark := range []store.Op{
		store.HandoverMark(store.ID{1}, 0, 2),
		store.HandoverKeyedMark(store.ID{2}, []store.HandoverKey{k1, k2}),
	} {
		svc := mark.ID.String()
		pause := func(s string) store.Op { return store.Op{Kind: store.OpPause, Service: svc + s, Time: time.Now()} }
		res, err := l.n.Apply(ctx, []store.Op{mark, {Kind: store.OpKind(200), ID: store.NewID()}, pause("a"), pause("next")})
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(res[1].Err, store.ErrInvalidOp) || res[2].Err != nil || res[3].Err != nil {
			t.Fatalf("a call with an op of an unknown kind: %+v", res)
		}
		if res[0].Err == nil {
			t.Errorf("%s mark kept beside a refused op of its call", mark.Kind)
		}
		// The redo: the refused op sent again, as a pause now.
		res, err = l.n.Apply(ctx, []store.Op{mark, pause("refused"), pause("a")})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Err != nil || res[1].Err != nil {
			t.Fatalf("the redo of a batch whose op was refused: its mark %v, the op %v: the refused op was recorded as taken, and is left out", res[0].Err, res[1].Err)
		}
		paused, err := l.st.Paused(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := paused[svc+"refused"]; !ok {
			t.Fatalf("the op refused in the first call, sent again, is not applied: paused %v", paused)
		}
	}
}
