package replica_test

import (
	"context"
	"testing"
)

// ReformAbove leads a term later than the one it is given, in this node's
// fence, however far that term is ahead of its own: a pair's active that
// goes on alone because raft's link to its passive peer is cut reforms
// past the term the peer stood down at (titanic/ha StandDown), which may
// be ahead of the active's own.
func TestReformAboveLeadsLaterTerm(t *testing.T) {
	p := newMemPair(t, true)
	l := p.leader(t)
	ids := l.submit(t, 2)
	p.cut()
	slot := uint64(1) // primary
	if l.id == "backup" {
		slot = 0
	}
	for _, ahead := range []uint64{1, 2, 7} {
		above := l.n.Term() + ahead
		// Above, in this node's fence too: the case a plain reform
		// could land on.
		if above%2 != slot {
			above++
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		err := l.n.ReformAbove(ctx, above)
		cancel()
		if err != nil {
			t.Fatalf("reform above %d: %v", above, err)
		}
		if got := l.n.Term(); got <= above || got%2 != slot || !l.n.IsLeader() {
			t.Fatalf("reformed above term %d: leads=%v in term %d (fence slot %d)", above, l.n.IsLeader(), got, slot)
		}
	}
	ids = append(ids, l.submit(t, 2)...)
	if n := l.missing(ids); n != 0 {
		t.Fatalf("after the reforms the store lacks %d of %d tickets", n, len(ids))
	}
}
