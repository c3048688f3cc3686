package ha

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
)

// A handover whose first try is marked by position (the yielding node's
// cluster at version 6, both nodes running this build: a pair right after
// its upgrade, before the version was raised) and whose redo is marked by
// key (the yielding node served alone again in between, and its leader,
// the only member, raised its version to 7, as Versions does). The two
// forms name the handover differently (HandoverID, HandoverName): the
// taker takes the redo as another handover, whole, and its OpFail undoes
// the retry that the taker's client made (acknowledged) of the ticket the
// first try failed. The fork did not grow in between (an announcement
// holds no ops): at one version the redo would have been left out.
func TestHandoverRedoAcrossVersionRaiseDoesNotUndoTakersRetry(t *testing.T) {
	dir := t.TempDir()
	log := testLogger()
	p, b, l, shared, onB := splitAtMarkVersion(t, dir, log)
	// The primary, alone, raises its version (the taker reads both forms).
	announceVersion(t, p, store.HandoverKeyVersion)

	var raised atomic.Bool
	link := &answerLostLink{between: func() {
		if !retryFailed(t, p, shared) {
			return
		}
		// The backup serves alone again and its leader raises the
		// version: nothing else changes in its fork.
		if !reformAgain(t, b) {
			return
		}
		if err := announceAt(b, store.HandoverKeyVersion); err != nil {
			t.Error(err)
			return
		}
		raised.Store(true)
	}}
	healThrough(t, dir, log, p, b, l, link.over, raised.Load)
	if _, err := p.st.Get(context.Background(), onB[0]); err != nil {
		t.Fatalf("the backup's own ticket was not handed over: %v", err)
	}
	wantRetryKept(t, p, shared, "retried by its client after the first try of the handover (marked by position, version 6) failed it (acknowledged), after the redo marked by key (version 7): the redo was taken as another handover and its OpFail undid the retry")
}

// splitAtMarkVersion is splitSharedFailed at cluster version 6 (position
// marks) on both nodes.
func splitAtMarkVersion(t *testing.T, dir string, log *slog.Logger) (p, b *pairNode, l memPairLink, shared store.ID, onB []store.ID) {
	t.Helper()
	p, b, l = openMemPair(t, dir, log)
	announceOnLeader(t, p, b, store.HandoverMarkVersion)
	waitFor(t, "version 6 on both", 10*time.Second, func() bool {
		vp, _ := p.rep.ClusterVersion(context.Background())
		vb, _ := b.rep.ClusterVersion(context.Background())
		return vp == store.HandoverMarkVersion && vb == store.HandoverMarkVersion
	})
	shared, onB = splitFailing(t, p, b, l)
	return p, b, l, shared, onB
}

// announceVersion has node n, which leads, raise its cluster version to
// v, as Versions does.
func announceVersion(t *testing.T, n *pairNode, v int) {
	t.Helper()
	if err := announceAt(n, v); err != nil {
		t.Fatal(err)
	}
}

// announceOnLeader raises the cluster version of the raft of two of p and
// b to v, announced by whichever node leads at each try (see onLeader).
func announceOnLeader(t *testing.T, p, b *pairNode, v int) {
	t.Helper()
	onLeader(t, fmt.Sprintf("announce version %d", v), p, b, func(n *pairNode) error { return announceAt(n, v) })
}

func announceAt(n *pairNode, v int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.rep.Announce(ctx, replica.Announcement{Endpoint: "inproc://" + n.id, ClusterVersion: v}); err != nil {
		return fmt.Errorf("announce version %d on %s: %w", v, n.id, err)
	}
	return nil
}
