package ha

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/titanicmq/titanic/store"
)

// A fork that grows between two tries of its handover: the yielding
// node's first batch reaches the taker and its answer is lost, and before
// the redo the yielding node serves alone again (Binary Star made it
// active, as when the link dropped again or the taker was lost: Pair
// reforms a raft halted for a handover it no longer makes) and takes a
// ticket in. Its fork then held more, and its handover was renamed (the
// last change of the fork was part of the name): the taker took the redo
// as a new handover, from the start, and its OpFail undid the retry the
// taker's client had made of the ticket the first try failed
// (acknowledged). The redo takes only what is new.
func TestHandoverOfGrownForkDoesNotUndoTakersRetry(t *testing.T) {
	dir := t.TempDir()
	log := testLogger()
	p, b, l, shared, onB := splitSharedFailed(t, dir, log)

	var grown atomic.Bool
	var later []store.ID
	link := &answerLostLink{between: func() {
		// The primary's client retries the ticket the first batch
		// failed: acknowledged.
		if !retryFailed(t, p, shared) {
			return
		}
		// The backup, its raft halted for the handover, goes on alone
		// again and takes a ticket in: its fork grows.
		if !reformAgain(t, b) {
			return
		}
		later = submitOn(t, b, BackupTag, 1)
		grown.Store(true)
	}}
	healThrough(t, dir, log, p, b, l, link.over, grown.Load)
	for _, id := range append(onB, later...) {
		if _, err := p.st.Get(context.Background(), id); err != nil {
			t.Fatalf("ticket %s, taken in by the backup alone, was not handed over: %v", id, err)
		}
	}
	wantRetryKept(t, p, shared, "retried by its client after the first try of the handover failed it (acknowledged), after the redo of the grown fork: the redo was taken as a new handover and its OpFail undid the retry")
}
