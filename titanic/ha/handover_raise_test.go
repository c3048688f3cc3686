package ha

import (
	"context"
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
	p, b, leader, l := openMemPairLed(t, dir, log)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	announce := func(n *pairNode, v int) {
		t.Helper()
		if err := n.rep.Announce(ctx, replica.Announcement{Endpoint: "inproc://" + n.id, ClusterVersion: v}); err != nil {
			t.Fatalf("announce version %d on %s: %v", v, n.id, err)
		}
	}
	announce(leader, store.HandoverMarkVersion)
	shared := submitOn(t, leader, 0, 1)[0]
	waitFor(t, "version 6 and the shared ticket on both", 10*time.Second, func() bool {
		vp, _ := p.rep.ClusterVersion(ctx)
		vb, _ := b.rep.ClusterVersion(ctx)
		_, errP := p.st.Get(ctx, shared)
		_, errB := b.st.Get(ctx, shared)
		return vp == store.HandoverMarkVersion && vb == store.HandoverMarkVersion && errP == nil && errB == nil
	})
	l.down()
	if err := b.rep.Reform(ctx); err != nil {
		t.Fatalf("backup reform: %v", err)
	}
	if res, err := b.rep.Apply(ctx, []store.Op{{Kind: store.OpFail, ID: shared, Time: time.Now(), Reason: "attempt 1 of 1 failed on the backup"}}); err != nil || res[0].Err != nil {
		t.Fatalf("fail on the backup: %v %v", err, res)
	}
	onB := submitOn(t, b, BackupTag, 1)
	if err := p.rep.Reform(ctx); err != nil {
		t.Fatalf("primary reform: %v", err)
	}
	// The primary, alone, raises its version (the taker reads both forms).
	announce(p, store.HandoverKeyVersion)
	submitOn(t, p, PrimaryTag, 1)
	l.up()

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
		if err := b.rep.Announce(ctx, replica.Announcement{Endpoint: "inproc://backup", ClusterVersion: store.HandoverKeyVersion}); err != nil {
			t.Errorf("raise on the backup: %v", err)
			return
		}
		raised.Store(true)
	}}
	healThrough(t, dir, log, p, b, l, link, raised.Load)
	if _, err := p.st.Get(context.Background(), onB[0]); err != nil {
		t.Fatalf("the backup's own ticket was not handed over: %v", err)
	}
	wantRetryKept(t, p, shared, "retried by its client after the first try of the handover (marked by position, version 6) failed it (acknowledged), after the redo marked by key (version 7): the redo was taken as another handover and its OpFail undid the retry")
}
