package ha

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// slowAdopt is the yielding node's link to its peer whose first handover
// batch is answered (200) only when the reconcile round's context (30 s,
// 3 s in the test) has ended: a long handover (many batches of 1 MiB, a peer slow to
// commit them) followed by the resync's copy of the whole store into the
// fork directory, which shares that context. At depth the copy alone
// takes that long (README: a 5.7 GB snapshot copy took 14 s; a pair at
// 10,000,000 pending holds 13 GB).
type slowAdopt struct {
	adminLink
	once sync.Once
}

func (l *slowAdopt) Request(ctx context.Context, service string, body [][]byte) ([][]byte, error) {
	out, err := l.adminLink.Request(ctx, service, body)
	if service == tsp.SvcAdopt && err == nil {
		l.once.Do(func() {
			if d, ok := ctx.Deadline(); ok {
				time.Sleep(time.Until(d) + 10*time.Millisecond)
			}
		})
	}
	return out, err
}

// TestPairRejoinsAfterResyncCutShort: a split brain's loser hands its work
// over, then resyncs (replica.Node.Resync). It stopped raft, renamed its
// raft directory into the fork directory, then copied the whole store
// there under the round's context. When the copy did not finish in time
// the resync failed with raft stopped and its directory already moved; at
// every later round the node handed its whole fork over again and failed
// the resync at once ("move raft state aside: ... no such file or
// directory"): it never rejoined (found by a reviewer of the pair). The
// copy now comes first, without the round's deadline.
func TestPairRejoinsAfterResyncCutShort(t *testing.T) {
	dir := t.TempDir()
	log := testLogger()
	p, b, onB, addrB := splitPair(t, dir, log, 3)

	pairP, pairB := linkedPairs(dir, log, p, b, binarystar.StateActive, binarystar.StatePassive,
		func(l adminLink) Requester { return &slowAdopt{adminLink: l} })
	pairP.round, pairB.round = 3*time.Second, 3*time.Second
	runPairs(t, pairP, pairB)

	// The handover itself arrives (the backup's tickets are on the
	// primary), then the resync fails; the pair must still become whole.
	waitFor(t, "the backup's tickets adopted by the primary", 40*time.Second, func() bool {
		_, err := p.st.Get(context.Background(), onB[0])
		return err == nil
	})
	// The slow answer takes the round's 3 s, then 30 s more to rejoin.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, member := p.rep.MemberAt("backup", string(addrB))
		if member && strings.Contains(b.rep.Status().State, "Follower") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after its handover and resync the backup has not rejoined the primary's raft (backup raft state %q, member of the primary's raft: %v); its raft directory: %v",
				b.rep.Status().State, member, dirState(filepath.Join(dir, "backup", "raft")))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func dirState(path string) string {
	if _, err := filepath.Glob(path); err != nil {
		return err.Error()
	}
	m, _ := filepath.Glob(filepath.Join(path, "*"))
	if len(m) == 0 {
		return "missing or empty"
	}
	return strings.Join(m, ", ")
}
