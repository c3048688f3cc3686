package ha

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// answerLostLink is the yielding node's link to the taker's admin: the
// first handover batch reaches the taker and is applied there, then its
// answer is lost (as on a network blip, a 15 s client timeout on a slow
// taker, or the yielding node killed after the batch and restarted).
// between runs after the taker applied the batch and before the
// yielding node hears the (lost) answer: what the taker's clients do in
// between.
type answerLostLink struct {
	adminLink
	lost    atomic.Bool
	between func()
}

// over makes l the link to the taker's admin a (healThrough).
func (l *answerLostLink) over(a adminLink) Requester {
	l.adminLink = a
	return l
}

func (l *answerLostLink) Request(ctx context.Context, service string, body [][]byte) ([][]byte, error) {
	rep, err := l.adminLink.Request(ctx, service, body)
	if service == tsp.SvcAdopt && err == nil && len(rep) > 0 && string(rep[0]) == "200" && l.lost.CompareAndSwap(false, true) {
		l.between()
		return nil, errors.New("answer lost")
	}
	return rep, err
}

// A handover that is redone (its answer lost: the yielding node sends
// every batch again from the fork point) is idempotent only for
// adoptions (the adopted bucket). The verdicts it carries for tickets
// both sides held (OpFail, OpCancel) and the pauses are applied again,
// over whatever the taker's clients did in between. Here the backup,
// alone, failed a ticket both sides held; the handover fails it on the
// primary; the primary's client, seeing it failed, retries it (200: it
// is pending again, to run); the handover is redone and fails it again.
// The client's acknowledged retry is undone: the ticket never runs.
// (The same redo pauses again a service the primary's operator resumed
// in between.)
func TestHandoverRedoDoesNotUndoTakersRetry(t *testing.T) {
	dir := t.TempDir()
	log := testLogger()
	p, b, l, shared, onB := splitSharedFailed(t, dir, log)

	var retried atomic.Bool
	link := &answerLostLink{between: func() {
		// The primary's client sees the ticket failed (the handover's
		// verdict) and retries it: acknowledged.
		retried.Store(retryFailed(t, p, shared))
	}}
	healThrough(t, dir, log, p, b, l, link.over, func() bool { return true })
	if !retried.Load() {
		t.Fatal("the test did not retry the ticket between the handover and its redo")
	}
	if _, err := p.st.Get(context.Background(), onB[0]); err != nil {
		t.Fatalf("the backup's own ticket was not handed over: %v", err)
	}
	wantRetryKept(t, p, shared, "retried on the primary by its client after the handover failed it (200, pending again), after the handover was redone: the redo's OpFail undid the acknowledged retry, and the ticket never runs")
}

// The redo also pauses again a service the taker's operator resumed
// between the first handover and its redo: the backup's operator paused
// "echo" during the split, the handover paused it on the primary, the
// primary's operator resumed it (acknowledged), and the redone handover
// paused it again.
func TestHandoverRedoDoesNotUndoTakersResume(t *testing.T) {
	dir := t.TempDir()
	log := testLogger()
	p, b, l := openPairAtVersion(t, dir, log)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l.down()
	if err := b.rep.Reform(ctx); err != nil {
		t.Fatalf("backup reform: %v", err)
	}
	if res, err := b.rep.Apply(ctx, []store.Op{{Kind: store.OpPause, Service: "echo", Time: time.Now()}}); err != nil || res[0].Err != nil {
		t.Fatalf("pause on the backup: %v %v", err, res)
	}
	onB := submitOn(t, b, BackupTag, 1)
	if err := p.rep.Reform(ctx); err != nil {
		t.Fatalf("primary reform: %v", err)
	}
	submitOn(t, p, PrimaryTag, 1)
	l.up()

	var resumed atomic.Bool
	link := &answerLostLink{between: func() {
		paused, err := p.st.Paused(context.Background())
		if _, ok := paused["echo"]; err != nil || !ok {
			t.Errorf("after the first handover batch echo is not paused on the primary (%v)", err)
			return
		}
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer rcancel()
		if res, err := p.rep.Apply(rctx, []store.Op{{Kind: store.OpResume, Service: "echo", Time: time.Now()}}); err != nil || res[0].Err != nil {
			t.Errorf("resume on the primary: %v %v", err, res)
			return
		}
		resumed.Store(true)
	}}
	healThrough(t, dir, log, p, b, l, link.over, func() bool {
		_, err := p.st.Get(context.Background(), onB[0])
		return err == nil
	})
	if !resumed.Load() {
		t.Fatal("the test did not resume the service between the handover and its redo")
	}
	paused, err := p.st.Paused(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := paused["echo"]; ok {
		t.Fatal("service echo, resumed on the primary by its operator after the handover paused it (acknowledged), is paused again after the handover was redone")
	}
}

// splitSharedFailed opens a pair at this build's cluster version with a
// ticket both nodes hold (shared), and splits it: the backup, alone,
// fails that ticket (its last attempt failed there) and takes a ticket
// in (onB); the primary takes one in. The link is up again, the nodes
// still apart.
func splitSharedFailed(t *testing.T, dir string, log *slog.Logger) (p, b *pairNode, l memPairLink, shared store.ID, onB []store.ID) {
	t.Helper()
	p, b, l = openPairAtVersion(t, dir, log)
	shared, onB = splitFailing(t, p, b, l)
	return p, b, l, shared, onB
}

// splitFailing is splitSharedFailed on a pair opened already: it returns
// the shared ticket and the backup's.
func splitFailing(t *testing.T, p, b *pairNode, l memPairLink) (shared store.ID, onB []store.ID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	shared, _ = submitCommon(t, p, b, 0, "shared")
	waitFor(t, "the shared ticket on both", 10*time.Second, func() bool {
		_, errP := p.st.Get(context.Background(), shared)
		_, errB := b.st.Get(context.Background(), shared)
		return errP == nil && errB == nil
	})
	l.down()
	if err := b.rep.Reform(ctx); err != nil {
		t.Fatalf("backup reform: %v", err)
	}
	if res, err := b.rep.Apply(ctx, []store.Op{{Kind: store.OpFail, ID: shared, Time: time.Now(), Reason: "attempt 1 of 1 failed on the backup"}}); err != nil || res[0].Err != nil {
		t.Fatalf("fail on the backup: %v %v", err, res)
	}
	onB = submitOn(t, b, BackupTag, 1)
	if err := p.rep.Reform(ctx); err != nil {
		t.Fatalf("primary reform: %v", err)
	}
	submitOn(t, p, PrimaryTag, 1)
	l.up()
	return shared, onB
}

// retryFailed retries ticket id on node n as its client does, once the
// handover failed it there; it reports whether the retry was acknowledged.
func retryFailed(t *testing.T, n *pairNode, id store.ID) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if tk, err := n.st.Get(ctx, id); err != nil || tk.State != store.StateFailed {
		t.Errorf("after the first handover batch ticket %s is %v (%v) on %s, want failed", id, tk.State, err, n.id)
		return false
	}
	if res, err := n.rep.Apply(ctx, []store.Op{{Kind: store.OpRetry, ID: id, Time: time.Now()}}); err != nil || res[0].Err != nil {
		t.Errorf("retry on %s: %v %v", n.id, err, res)
		return false
	}
	return true
}

// wantRetryKept fails the test unless ticket id, retried by the client
// of node n, is still pending there; what says what the ticket went
// through and what it means if it is not.
func wantRetryKept(t *testing.T, n *pairNode, id store.ID, what string) {
	t.Helper()
	tk, err := n.st.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if tk.State != store.StatePending {
		t.Fatalf("ticket %s is %s (%q) on the %s, want pending: %s", id, tk.State, tk.Reason, n.id, what)
	}
}

// reformAgain has node n, its raft halted for a handover, serve alone
// again (as Pair does once Binary Star makes it active), and reports
// whether it leads.
func reformAgain(t *testing.T, n *pairNode) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.rep.Reform(ctx); err != nil {
		t.Errorf("%s reform after the first try: %v", n.id, err)
		return false
	}
	waitFor(t, n.id+" leads alone again", 10*time.Second, n.rep.IsLeader)
	return true
}

// openPairAtVersion opens a pair whose raft of two is at this build's
// cluster version on both nodes (both run this build: the cluster takes
// retries and marks handovers by key).
func openPairAtVersion(t *testing.T, dir string, log *slog.Logger) (p, b *pairNode, l memPairLink) {
	t.Helper()
	p, b, l = openMemPair(t, dir, log)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	atOpsVersion(t, ctx, p, b)
	return p, b, l
}

// healThrough runs the pair, the primary active, the backup's requests to
// the primary's admin going through the link toPrimary makes of it, until
// the backup is a member of the primary's raft again, the primary serves,
// and done holds.
func healThrough(t *testing.T, dir string, log *slog.Logger, p, b *pairNode, l memPairLink, toPrimary func(adminLink) Requester, done func() bool) {
	t.Helper()
	pairP, pairB := linkedPairs(dir, log, p, b, binarystar.StateActive, binarystar.StatePassive, toPrimary)
	runPairs(t, pairP, pairB)
	waitFor(t, "the backup rejoins the primary's raft", 40*time.Second, func() bool {
		_, member := p.rep.MemberAt("backup", string(l.addrB))
		return member && pairP.Active() && done()
	})
}
