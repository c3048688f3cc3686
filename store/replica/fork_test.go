package replica_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
)

// memPair is a Binary Star pair's raft in one process: two nodes over
// raft's in-memory transport, so that the link between them can be cut.
type memPair struct {
	t     *testing.T
	nodes [2]*memNode
}

type memNode struct {
	id    string
	dir   string
	addr  raft.ServerAddress
	trans *raft.InmemTransport
	st    *store.BoltStore
	n     *replica.Node
}

func newMemPair(t *testing.T, fence bool) *memPair {
	t.Helper()
	p := &memPair{t: t}
	var peers []replica.Peer
	for i, id := range []string{"primary", "backup"} {
		addr, trans := raft.NewInmemTransport("")
		p.nodes[i] = &memNode{id: id, dir: t.TempDir(), addr: addr, trans: trans}
		peers = append(peers, replica.Peer{ID: id, Addr: string(addr)})
	}
	p.connect()
	for i, m := range p.nodes {
		st, err := store.Open(filepath.Join(m.dir, "titanic.db"), store.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		cfg := replica.Config{
			ID: m.id, Dir: filepath.Join(m.dir, "raft"), Transport: m.trans,
			Peers: peers, Bootstrap: true,
			HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
			LeaderLeaseTimeout: 50 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
			SnapshotThreshold: 16, TrailingLogs: 8, SnapshotInterval: 100 * time.Millisecond,
			Logger: quiet(),
		}
		if fence {
			cfg.FenceStride, cfg.FenceSlot = 2, uint64(1-i) // as cmd/titanic: primary 1, backup 0
		}
		n, err := replica.Open(st, cfg)
		if err != nil {
			t.Fatal(err)
		}
		m.st, m.n = st, n
	}
	t.Cleanup(func() {
		for _, m := range p.nodes {
			_ = m.n.Close()
			_ = m.st.Close()
		}
	})
	return p
}

// leader waits for a node that leads.
func (p *memPair) leader(t *testing.T) *memNode {
	t.Helper()
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, m := range p.nodes {
			if m.n.IsLeader() {
				return m
			}
		}
	}
	t.Fatalf("no leader within %s", wait)
	return nil
}

func (p *memPair) connect() {
	a, b := p.nodes[0], p.nodes[1]
	a.trans.Connect(b.addr, b.trans)
	b.trans.Connect(a.addr, a.trans)
}

func (p *memPair) cut() {
	p.nodes[0].trans.DisconnectAll()
	p.nodes[1].trans.DisconnectAll()
}

// submit applies n submits on m, which must lead (or lead again soon:
// with this test's 100 ms timings a loaded machine can cost a leader its
// term; a submit whose outcome is unknown is sent again, and "already
// used" means the first one was applied).
func (m *memNode) submit(t *testing.T, n int) []store.ID {
	t.Helper()
	return submitVia(t, n, m.id+": ", func() *memNode { return m })
}

// submit submits n tickets through whichever node leads at each try
// (memNode.submit stays with one node, for tests that need that node).
func (p *memPair) submit(t *testing.T, n int) []store.ID {
	t.Helper()
	return submitVia(t, n, "", func() *memNode { return p.leader(t) })
}

// submitVia submits n tickets, each through the node node returns at
// that try, retrying while it does not lead.
func submitVia(t *testing.T, n int, who string, node func() *memNode) []store.ID {
	t.Helper()
	var ids []store.ID
	for range n {
		op := submitOp("s")
		deadline := time.Now().Add(wait)
		for {
			res, err := node().n.Apply(context.Background(), []store.Op{op})
			if err == nil && (res[0].Err == nil || errors.Is(res[0].Err, store.ErrInvalidOp) && strings.Contains(res[0].Err.Error(), "already used")) {
				break
			}
			if err == nil || !(errors.Is(err, replica.ErrNotLeader) || errors.Is(err, replica.ErrUncertain)) || time.Now().After(deadline) {
				t.Fatalf("%ssubmit: %v %v", who, err, res)
			}
			time.Sleep(10 * time.Millisecond)
		}
		ids = append(ids, op.ID)
	}
	return ids
}

func (m *memNode) reform(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := m.n.Reform(ctx); err != nil {
		t.Fatalf("%s: reform: %v", m.id, err)
	}
}

func (m *memNode) missing(ids []store.ID) int {
	n := 0
	for _, id := range ids {
		if _, err := m.st.Get(context.Background(), id); err != nil {
			n++
		}
	}
	return n
}

// Both nodes of a pair go on alone (a split brain), then the link heals
// and one adds the other back. Their solo terms are fenced apart, so the
// added node sees that raft would overwrite entries it applied: it stops
// with ErrDiverged, raft stopped, its own tickets still in its store. It
// then hands its fork over, resyncs, and both hold everything.
// (Without fences both solo histories can lead the same term and raft's
// log matching cannot tell them apart; the loser then silently keeps its
// own entries and skips the survivor's.)
func TestSplitBrainForkMerged(t *testing.T) {
	p := newMemPair(t, true)
	var l *memNode
	deadline := time.Now().Add(wait)
	for l == nil {
		for _, m := range p.nodes {
			if m.n.IsLeader() {
				l = m
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(5 * time.Millisecond)
	}
	shared := l.submit(t, 10)
	for _, m := range p.nodes {
		waitHas(t, m, shared)
	}
	p.cut()
	loser, winner := p.nodes[0], p.nodes[1]
	loser.reform(t)
	winner.reform(t)
	// Both solo terms are fenced: different slots, never equal.
	for winner.n.Status().Term < loser.n.Status().Term {
		winner.reform(t)
	}
	lt, wt := loser.n.Status().Term, winner.n.Status().Term
	if lt%2 != 1 || wt%2 != 0 {
		t.Fatalf("solo terms %d (primary) and %d (backup) are not in their fences", lt, wt)
	}
	lost := loser.submit(t, 10)
	won := winner.submit(t, 30)

	p.connect()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	// The add itself may or may not complete (the loser refuses the
	// log); what matters is what the loser does.
	go func() { _ = winner.n.AddVoter(ctx, loser.id, string(loser.addr)) }()
	select {
	case err := <-loser.n.Fatal():
		if !errors.Is(err, store.ErrDiverged) {
			t.Fatalf("loser stopped with %v, want ErrDiverged", err)
		}
	case <-time.After(wait):
		t.Fatalf("the fork was not seen within %s (loser missing %d of the winner's %d tickets)", wait, loser.missing(won), len(won))
	}
	if n := loser.missing(append(shared, lost...)); n != 0 {
		t.Fatalf("the loser's store lost %d of its tickets", n)
	}
	if n := loser.missing(won); n != len(won) {
		t.Fatalf("the loser applied %d of the winner's entries over its fork", len(won)-n)
	}
	// History tells where the two forked: after the shared entries.
	lh, err := loser.st.History(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	wh, err := winner.st.History(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	fork := lh.ForkPoint(wh)
	if fork >= lh.Applied || fork >= wh.Applied || fork == 0 {
		t.Fatalf("fork point %d (loser applied %d, winner %d)", fork, lh.Applied, wh.Applied)
	}
	if wh.TermAt(fork) != lh.TermAt(fork) || wh.TermAt(fork+1) == lh.TermAt(fork+1) && wh.TermAt(fork+1) != 0 {
		t.Fatalf("fork point %d is not where the histories part: %+v / %+v", fork, lh, wh)
	}

	// The add made the winner's configuration two voters, one of which
	// stopped: it goes on alone again, as a pair's active does.
	winner.reform(t)
	// The merge: the loser hands its fork over, drops it and rejoins.
	var handed int
	err = loser.n.ForkOps(ctx, fork, 1<<20, func(ops []store.Op) error {
		handed += len(ops)
		_, err := winner.n.Apply(ctx, ops)
		return err
	})
	if err != nil || handed != len(lost) {
		t.Fatalf("handover of %d ops (want %d): %v", handed, len(lost), err)
	}
	if err := loser.n.Resync(ctx, false, filepath.Join(loser.dir, "fork")); err != nil {
		t.Fatal(err)
	}
	p.connect() // raft's shutdown closed the in-memory transport's links
	if err := winner.n.AddVoter(ctx, loser.id, string(loser.addr)); err != nil {
		t.Fatal(err)
	}
	all := append(append(append([]store.ID{}, shared...), lost...), won...)
	waitHas(t, winner, all)
	waitHas(t, loser, all)
	more := p.leader(t).submit(t, 5) // two voters again: committed on both
	waitHas(t, loser, more)
	if err := loser.st.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(loser.dir, "fork", "titanic.db")); err != nil {
		t.Fatalf("the dropped fork was not kept aside: %v", err)
	}
}

func waitHas(t *testing.T, m *memNode, ids []store.ID) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for m.missing(ids) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s lacks %d tickets after %s", m.id, m.missing(ids), wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A replica whose store cannot write stops (Fatal) instead of letting raft
// move past entries it did not apply; a leader that does steps down at
// once, and the others go on.
func TestStoreFailureStopsNode(t *testing.T) {
	ms, _ := cluster(t, 3)
	ids := applySome(t, ms, 5)
	l := leader(t, ms)
	f := follower(ms, l)
	hasAll(t, f, ids)
	_ = f.st.Close() // every later write fails with ErrClosed
	applySome(t, ms, 5)
	select {
	case err := <-f.n.Fatal():
		if !errors.Is(err, store.ErrClosed) {
			t.Fatalf("follower stopped with %v, want ErrClosed", err)
		}
	case <-time.After(wait):
		t.Fatal("a follower whose store failed did not stop")
	}
	// Now the leader's store fails: it stops, a new leader takes over.
	_ = l.st.Close()
	op := submitOp("s")
	if _, err := l.n.Apply(context.Background(), []store.Op{op}); err == nil {
		t.Fatal("apply on a leader whose store is closed succeeded")
	}
	select {
	case err := <-l.n.Fatal():
		if !errors.Is(err, store.ErrClosed) {
			t.Fatalf("leader stopped with %v, want ErrClosed", err)
		}
	case <-time.After(wait):
		t.Fatal("a leader whose store failed did not stop")
	}
	deadline := time.Now().Add(wait)
	for l.n.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("the failed leader did not step down")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A node that left its raft but kept its store (it held nothing its peer
// lacked) rejoins a leader whose log was compacted: the leader sends a
// snapshot older than the node's store. The node keeps its store (the
// snapshot is a prefix of its history: not a fork), skips the entries it
// already applied, and follows on.
func TestRejoinAheadOfSnapshot(t *testing.T) {
	p := newMemPair(t, true)
	ids := p.submit(t, 60)
	l := p.leader(t) // the follower is chosen after the submits: leadership may move on a loaded host
	var f *memNode
	for _, m := range p.nodes {
		if m != l {
			f = m
		}
	}
	waitHas(t, f, ids)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := f.n.Resync(ctx, true, filepath.Join(f.dir, "aside")); err != nil {
		t.Fatal(err)
	}
	p.connect()
	ids = append(ids, p.leader(t).submit(t, 40)...) // the leader's log moves on and is compacted
	waitHas(t, f, ids)
	select {
	case err := <-f.n.Fatal():
		t.Fatalf("the rejoining node stopped: %v", err)
	default:
	}
	if err := f.st.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// A store restored from a backup holds tickets no log entry made; a node
// that joins with an empty store must catch up from a snapshot, not by
// replaying the log from its start (PrepareJoin).
func TestJoinGetsSnapshotOfRestoredStore(t *testing.T) {
	p := newMemPair(t, true)
	l := p.leader(t)
	var f *memNode
	for _, m := range p.nodes {
		if m != l {
			f = m
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	// As if restored: in the leader's store, not in any log entry.
	restored := store.Op{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(), Service: "s", Body: [][]byte{[]byte("restored")}}
	if res, err := l.st.Apply(ctx, []store.Op{restored}); err != nil || res[0].Err != nil {
		t.Fatalf("restore a ticket: %v %v", err, res)
	}
	ids := l.submit(t, 3)
	waitHas(t, f, ids)
	// f leaves, then comes back empty as a new member, as a node does
	// whose store was reset (a pair's loser of a split brain, which joins
	// a raft whose only voter is the winner). Reset while still a member,
	// f took the log from its start before it could be removed, and
	// lacked the restored ticket for good: a race of this test's, not a
	// path of the product's (it failed now and then on a loaded machine).
	if err := l.n.RemoveServer(ctx, f.id); err != nil {
		t.Fatal(err)
	}
	if err := f.n.Resync(ctx, false, filepath.Join(f.dir, "aside")); err != nil {
		t.Fatal(err)
	}
	p.connect()
	if p.leader(t) != l {
		t.Fatalf("the resynced node %s, no member, leads", f.id)
	}
	if err := l.n.PrepareJoin(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.n.AddVoter(ctx, f.id, string(f.addr)); err != nil {
		t.Fatal(err)
	}
	waitHas(t, f, append(ids, restored.ID))
}

// Raft commits the entry that adds a voter under the configuration before
// it: a node alone that adds its unreachable peer commits that entry by
// itself. Its solo journal must survive it (it is pruned only by a command
// both nodes committed), or its fork would be dropped unhanded.
func TestJournalSurvivesAddOfUnreachablePeer(t *testing.T) {
	p := newMemPair(t, true)
	shared := p.leader(t).submit(t, 5)
	for _, m := range p.nodes {
		waitHas(t, m, shared)
	}
	p.cut()
	alone, peer := p.nodes[0], p.nodes[1]
	alone.reform(t)
	solo := alone.submit(t, 10)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_ = alone.n.AddVoter(ctx, peer.id, string(peer.addr)) // commits alone; the peer never hears of it
	lh, err := alone.st.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ph, err := peer.st.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fork := lh.ForkPoint(ph)
	var adopted []store.ID
	err = alone.n.ForkOps(ctx, fork, 1<<20, func(ops []store.Op) error {
		for _, op := range ops {
			if op.Kind == store.OpAdopt {
				adopted = append(adopted, op.ID)
			}
		}
		return nil
	})
	if err != nil || len(adopted) != len(solo) {
		t.Fatalf("after the add, the fork hands over %d of the %d tickets taken alone (%v)", len(adopted), len(solo), err)
	}
}

// A node that leads a raft of its own (a pair member that went on alone)
// refuses a TimeoutNow from its peer: raft would make it elect itself,
// alone, in its term plus one, outside its fence, and here the very term
// its peer leads (two leaders of one term: entries raft takes for the
// same, tickets lost). A transfer between the members of one raft still
// works.
func TestTransferToSoloNodeRefused(t *testing.T) {
	p := newMemPair(t, true)
	l := p.leader(t)
	other := p.nodes[0]
	if other == l {
		other = p.nodes[1]
	}
	waitHas(t, other, l.submit(t, 3))
	if err := l.n.TransferLeadership(other.id, string(other.addr)); err != nil {
		t.Fatalf("a transfer within the pair: %v", err)
	}
	if got := p.leader(t); got != other {
		t.Fatalf("after the transfer %s leads, want %s", got.id, other.id)
	}

	p.cut()
	loser, winner := p.nodes[0], p.nodes[1] // fences: odd and even terms
	loser.reform(t)
	winner.reform(t)
	// The loser's next term is the winner's: the case of the simulation.
	for try := 0; ; try++ {
		lt, wt := loser.n.Status().Term, winner.n.Status().Term
		if lt+1 == wt {
			break
		}
		if try > 10 {
			t.Fatalf("terms %d and %d not aligned", lt, wt)
		}
		if lt+1 < wt {
			loser.reform(t)
		} else {
			winner.reform(t)
		}
	}
	before := loser.n.Status()
	p.connect()
	req := &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{
		ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(winner.id), Addr: []byte(winner.addr)}}
	var resp raft.TimeoutNowResponse
	err := winner.trans.TimeoutNow(raft.ServerID(loser.id), loser.addr, req, &resp)
	if err == nil || !strings.Contains(err.Error(), "transfer refused") {
		t.Fatalf("TimeoutNow to a node leading alone in term %d (its peer leads %d): %v, want refused", before.Term, winner.n.Status().Term, err)
	}
	// Refused before raft saw it: the loser leads on, in its fence.
	if st := loser.n.Status(); st.State != "Leader" || st.Term != before.Term {
		t.Fatalf("after the refused TimeoutNow the loser is %s in term %d, was Leader in %d", st.State, st.Term, before.Term)
	}
}

// A node reforms again and again before it ever took a real snapshot (an
// idle pair whose active goes on alone more than once): an earlier
// reform's placeholder is the newest snapshot, its index past the last
// command (the no-op of the reformed raft's election), and it must not be
// restored.
func TestReformAgainBeforeAnySnapshot(t *testing.T) {
	p := newMemPair(t, true)
	l := p.leader(t)
	ids := l.submit(t, 3)
	p.cut()
	for range 3 {
		l.reform(t)
	}
	ids = append(ids, l.submit(t, 2)...)
	if n := l.missing(ids); n != 0 {
		t.Fatalf("after two reforms the store lacks %d of %d tickets", n, len(ids))
	}
}

// A snapshot level with the store, on its history, is not restored over
// it: the same content would only be copied in, the sender's free pages
// included (a file titanic compact had shrunk grew back). The store file
// stays the one it was.
func TestRestoreKeepsStoreLevelWithSnapshot(t *testing.T) {
	p := newMemPair(t, true)
	l := p.leader(t)
	ids := l.submit(t, 5)
	p.cut() // nothing more reaches l's store
	var snap bytes.Buffer
	if _, err := l.n.Snapshot(context.Background(), &snap); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(l.dir, "titanic.db")
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := replica.RestoreSnapshot(l.n, &snap); err != nil {
		t.Fatalf("restore of a level snapshot: %v", err)
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Fatal("a snapshot level with the store replaced its file")
	}
	if n := l.missing(ids); n != 0 {
		t.Fatalf("the store lacks %d tickets", n)
	}
}
