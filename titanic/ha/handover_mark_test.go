package ha

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// recordingLink records the handover batches sent through it.
type recordingLink struct {
	adminLink
	mu      sync.Mutex
	records [][]byte
}

func (l *recordingLink) Request(ctx context.Context, service string, body [][]byte) ([][]byte, error) {
	if service == tsp.SvcAdopt && len(body) == 1 {
		l.mu.Lock()
		l.records = append(l.records, append([]byte(nil), body[0]...))
		l.mu.Unlock()
	}
	return l.adminLink.Request(ctx, service, body)
}

// A yielding node marks its handover's batches (store.OpHandover, ops
// record version 6) only when its pair's cluster version is at
// store.HandoverMarkVersion: a peer of the previous release, which reads
// up to version 5 and refuses a newer record, is handed the batches
// unmarked, as that release sends them. At the version, every batch is
// marked, at its place in the handover; at store.HandoverKeyVersion, by
// the keys of its ops (a peer of version 6 reads no keyed mark: it is
// marked by position then).
func TestHandoverMarkedOnlyAtItsVersion(t *testing.T) {
	for _, version := range []int{store.HandoverMarkVersion - 1, store.HandoverMarkVersion, store.HandoverKeyVersion} {
		t.Run("cluster version "+strconv.Itoa(version), func(t *testing.T) {
			dir := t.TempDir()
			log := testLogger()
			p, b, onB, addrB := splitPair(t, dir, log, 3)
			// Each side, alone, at the version.
			for _, n := range []*pairNode{p, b} {
				announceVersion(t, n, version)
			}
			link := &recordingLink{}
			pairP, pairB := linkedPairs(dir, log, p, b, binarystar.StateActive, binarystar.StatePassive, func(a adminLink) Requester {
				link.adminLink = a
				return link
			})
			runPairs(t, pairP, pairB)
			waitFor(t, "the backup rejoins the primary's raft", 40*time.Second, func() bool {
				_, member := p.rep.MemberAt("backup", string(addrB))
				return member && pairP.Active()
			})
			for _, id := range onB {
				if _, err := p.st.Get(context.Background(), id); err != nil {
					t.Fatalf("ticket %s not handed over: %v", id, err)
				}
			}
			link.mu.Lock()
			defer link.mu.Unlock()
			if len(link.records) == 0 {
				t.Fatal("no handover batch sent")
			}
			for _, rec := range link.records {
				ops, err := store.DecodeOps(rec)
				if err != nil {
					t.Fatal(err)
				}
				marked := len(ops) > 0 && ops[0].Kind == store.OpHandover
				switch {
				case version < store.HandoverMarkVersion && (int(rec[0]) >= store.HandoverMarkVersion || marked):
					t.Fatalf("at cluster version %d a batch of record version %d (marked %t) was sent: a peer of the previous release refuses it", version, rec[0], marked)
				case version >= store.HandoverMarkVersion && !marked:
					t.Fatalf("at cluster version %d a batch was sent unmarked: %v", version, ops)
				case version < store.HandoverKeyVersion && int(rec[0]) >= store.HandoverKeyVersion:
					t.Fatalf("at cluster version %d a batch of record version %d was sent: a peer of version %d refuses it", version, rec[0], version)
				case version >= store.HandoverKeyVersion:
					if _, count, ok := ops[0].HandoverKeys(); !ok || count != len(ops)-1 {
						t.Fatalf("the keyed mark of a one-batch handover: %d keys (ok %t); the batch has %d", count, ok, len(ops)-1)
					}
				case marked:
					if pos, count, ok := ops[0].HandoverSpan(); !ok || pos != 0 || int(count) != len(ops)-1 {
						t.Fatalf("the mark of a one-batch handover: at %d, %d ops (ok %t); the batch has %d", pos, count, ok, len(ops)-1)
					}
				}
			}
		})
	}
}

// A yielding node restarted between two batches of its handover (killed,
// or its answer lost and the node stopped) names it as before: it leads
// its own raft again and applies what a new leader does (an
// announcement), which hands nothing over, so its redo is the same
// handover and the taker leaves out what it took.
func TestHandoverIDSameAfterRestart(t *testing.T) {
	dir := t.TempDir()
	log := testLogger()
	p, b, _, addrB := splitPair(t, dir, log, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := func(n *pairNode) (fork, applied uint64, id store.ID) {
		t.Helper()
		if err := n.rep.Halt(); err != nil {
			t.Fatal(err)
		}
		ours, err := n.rep.History(ctx)
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := p.rep.History(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fork = ours.ForkPoint(theirs)
		if id, err = n.rep.HandoverID(ctx, n.id, fork); err != nil {
			t.Fatal(err)
		}
		return fork, ours.Applied, id
	}
	fork, applied, id := name(b)
	// The taker goes on meanwhile.
	submitOn(t, p, PrimaryTag, 1)
	_ = b.rep.Close()
	_ = b.st.Close()
	peers := []replica.Peer{{ID: "primary", Addr: string(p.addr)}, {ID: "backup", Addr: string(addrB)}}
	b = openPairNode(t, dir, "backup", 0, addrB, b.tr, peers, log)
	waitFor(t, "the restarted backup leads its own raft", 10*time.Second, b.rep.IsLeader)
	if err := b.rep.Announce(ctx, replica.Announcement{Endpoint: "inproc://backup"}); err != nil {
		t.Fatalf("announce: %v", err)
	}
	fork2, applied2, id2 := name(b)
	if applied2 <= applied {
		t.Fatalf("the restarted backup applied nothing (%d, then %d): the test needs it to", applied, applied2)
	}
	if fork2 != fork || id2 != id {
		t.Fatalf("the handover of the same fork is named %d %s before a restart and %d %s after: the taker would apply its ops again", fork, id, fork2, id2)
	}
}
