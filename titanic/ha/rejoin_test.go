package ha

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// cuttableLink is the admin link to a peer that a test can cut (down
// answers every request with an error, as a cut network does) and that,
// if legacy, is on a release that knows no nonvoter join: it answers one
// 400, as that release's admin did; if first, also on the first release,
// which has no titanic.cluster.history either.
type cuttableLink struct {
	Requester     // the peer's admin
	down          *atomic.Bool
	legacy, first bool
}

func (l cuttableLink) Request(ctx context.Context, service string, body [][]byte) ([][]byte, error) {
	if l.down.Load() {
		return nil, errors.New("link cut")
	}
	if (l.legacy || l.first) && service == tsp.SvcJoin && len(body) != 2 {
		return [][]byte{[]byte("400"), []byte("want [node id | raft address]")}, nil
	}
	if l.first && service == tsp.SvcHistory {
		return [][]byte{[]byte("400"), []byte("unknown admin service " + service)}, nil
	}
	return l.Requester.Request(ctx, service, body)
}

// swappedAdmin is the admin link to a node that may be restarted: to its
// current Admin.
type swappedAdmin struct{ cur *atomic.Pointer[Admin] }

func (s swappedAdmin) Request(ctx context.Context, service string, body [][]byte) ([][]byte, error) {
	return adminLink{s.cur.Load()}.Request(ctx, service, body)
}

func (swappedAdmin) Close() error { return nil }

// bareStandDown is the admin link to a node whose titanic.cluster.standdown
// answers, while bare is set, as builds before the stand-down term did:
// the first frame alone.
type bareStandDown struct {
	Requester
	bare *atomic.Bool
}

func (b bareStandDown) Request(ctx context.Context, service string, body [][]byte) ([][]byte, error) {
	rep, err := b.Requester.Request(ctx, service, body)
	if err == nil && service == tsp.SvcStandDown && b.bare.Load() && len(rep) > 1 {
		rep = rep[:1]
	}
	return rep, err
}

// A pair node that returns after its peer went on alone joins the peer's
// raft without a vote: while it catches up, the active commits alone (a
// voter that lags would hold every commit of a raft of two; half a minute
// at 10,000,000 pending), and the returning node does not count as caught
// up, so it does not take over. Once close behind, it gets a vote and
// counts. Against a peer on a release without the nonvoter join, it joins
// as a voter, as before.
// Close behind (promoteSlack entries at most), it joins as a voter at
// once: the pair is whole a round sooner, and the commits that wait for
// it are few.
func TestPairRejoinsWithoutVoteFirst(t *testing.T) {
	for _, tc := range []struct {
		legacy bool
		alone  int // submits the backup takes in alone
	}{{false, promoteSlack + 100}, {true, promoteSlack + 100}, {false, 10}} {
		t.Run(fmt.Sprintf("legacy=%v,behind=%d", tc.legacy, tc.alone), func(t *testing.T) { testRejoin(t, tc.legacy, tc.alone) })
	}
}

// rejoinRig is a pair on in-memory transports: the primary passive, the
// backup active (fixed Binary Star states), each with the admin link to
// the other, which a test can cut, as raft's link.
type rejoinRig struct {
	p, b         *pairNode
	pairP, pairB *Pair
	adminDown    *atomic.Bool
	// bareStandDown makes the primary's admin answer a stand-down as
	// builds before the stand-down term did: [200] alone.
	bareStandDown *atomic.Bool
	// link cuts or heals raft's link and, unless raftOnly, the admin
	// link too.
	link func(up, raftOnly bool)
	// restartPrimary stops the primary (its pair loop, raft, store) and
	// opens it again on the same data and transport.
	restartPrimary func()
}

// newRejoinRig starts the rig; legacy makes the backup's admin a release
// without the nonvoter join; primary and backup, if set, adjust each
// node's replica config (tr: its in-memory transport).
func newRejoinRig(t *testing.T, legacy bool, primary, backup func(tr *raft.InmemTransport, c *replica.Config)) *rejoinRig {
	return newRejoinRigOf(t, cuttableLink{legacy: legacy}, primary, backup)
}

// newRejoinRigOf is newRejoinRig with the backup's admin as release says
// (its legacy and first fields).
func newRejoinRigOf(t *testing.T, release cuttableLink, primary, backup func(tr *raft.InmemTransport, c *replica.Config)) *rejoinRig {
	return newRejoinRigWith(t, release, primary, backup, false)
}

// newRejoinRigWith is newRejoinRigOf; withPair gives each node's admin
// its pair role (Admin.Pair, as a broker does: titanic.cluster.standdown
// and the withheld vote), which the other rig tests go without.
func newRejoinRigWith(t *testing.T, release cuttableLink, primary, backup func(tr *raft.InmemTransport, c *replica.Config), withPair bool) *rejoinRig {
	dir := t.TempDir()
	log := testLogger()
	addrP, trP := raft.NewInmemTransport("")
	addrB, trB := raft.NewInmemTransport("")
	r := &rejoinRig{adminDown: new(atomic.Bool), bareStandDown: new(atomic.Bool)}
	r.link = func(up, raftOnly bool) {
		if !raftOnly {
			r.adminDown.Store(!up)
		}
		if up {
			trP.Connect(addrB, trB)
			trB.Connect(addrP, trP)
			return
		}
		trP.DisconnectAll()
		trB.DisconnectAll()
	}
	r.link(true, false)
	opt := func(tr *raft.InmemTransport, f func(*raft.InmemTransport, *replica.Config)) []func(*replica.Config) {
		if f == nil {
			return nil
		}
		return []func(*replica.Config){func(c *replica.Config) { f(tr, c) }}
	}
	peers := []replica.Peer{{ID: "primary", Addr: string(addrP)}, {ID: "backup", Addr: string(addrB)}}
	r.p = openPairNode(t, dir, "primary", 1, addrP, trP, peers, log, opt(trP, primary)...)
	r.b = openPairNode(t, dir, "backup", 0, addrB, trB, peers, log, opt(trB, backup)...)
	adminP, adminB := NewAdmin(r.p.rep, nil, log), NewAdmin(r.b.rep, nil, log)
	adminP.Merge, adminB.Merge = r.p.disp.merge, r.b.disp.merge
	var curP atomic.Pointer[Admin]
	curP.Store(adminP)
	toB := cuttableLink{adminLink{adminB}, r.adminDown, release.legacy, release.first}
	toP := cuttableLink{Requester: bareStandDown{swappedAdmin{&curP}, r.bareStandDown}, down: r.adminDown}
	cfg := func(peer *pairNode, id string, tag byte) PairConfig {
		return PairConfig{PeerID: peer.id, PeerAddr: string(peer.addr), PeerEndpoint: "inproc://" + peer.id, PeerTag: tag,
			ForkDir: filepath.Join(dir, id, "forks"), Logger: log.With("node", id)}
	}
	newPrimary := func() *Pair {
		return NewPairWith(r.p.rep, r.p.disp, cfg(r.b, "primary", BackupTag), func(func()) Star { return fixedStar{binarystar.StatePassive} },
			func() (Requester, error) { return toB, nil })
	}
	r.pairP = newPrimary()
	r.pairB = NewPairWith(r.b.rep, r.b.disp, cfg(r.p, "backup", PrimaryTag), func(func()) Star { return fixedStar{binarystar.StateActive} },
		func() (Requester, error) { return toP, nil })
	if withPair {
		adminP.Pair, adminB.Pair = r.pairP, r.pairB
	}
	runPairs(t, r.pairB)
	stopP := runPair(r.pairP)
	r.restartPrimary = func() {
		if err := stopP(); err != nil {
			t.Errorf("primary's Run: %v", err)
		}
		_ = r.p.rep.Close()
		_ = r.p.st.Close()
		r.p = openPairNode(t, dir, "primary", 1, addrP, trP, peers, log, opt(trP, primary)...)
		a := NewAdmin(r.p.rep, nil, log)
		a.Merge = r.p.disp.merge
		r.pairP = newPrimary()
		if withPair {
			a.Pair = r.pairP
		}
		curP.Store(a)
		stopP = runPair(r.pairP)
	}
	t.Cleanup(func() {
		if err := stopP(); err != nil {
			t.Errorf("primary's Run: %v", err)
		}
	})
	return r
}

// runPair runs p's loop until the returned stop is called (once), which
// returns Run's error.
func runPair(p *Pair) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
}

// primaryMember reports whether the backup's configuration has the
// primary, and as a voter.
func (r *rejoinRig) primaryMember() (in, voter bool) {
	ms, err := r.b.rep.Members()
	if err != nil {
		return false, false
	}
	for _, m := range ms {
		if m.ID == "primary" {
			return true, m.Voter
		}
	}
	return false, false
}

func testRejoin(t *testing.T, legacy bool, behind int) {
	// A voter join from the start (legacy peer, or close behind) cannot
	// be tested with raft's link cut: it would stop the backup's
	// commits; the link heals first.
	voterJoin := legacy || behind <= promoteSlack
	r := newRejoinRig(t, legacy, nil, nil)
	p, b, pairP, pairB, link, adminDown, member := r.p, r.b, r.pairP, r.pairB, r.link, r.adminDown, r.primaryMember
	// In sync first: the primary has applied a configuration of a later
	// term than its start that makes it a voter, so it counts as caught
	// up; that configuration stays its last until the backup's entries
	// reach it again.
	waitFor(t, "the pair in sync, the backup serving", 20*time.Second, func() bool { return pairP.caughtUp.Load() && pairB.Active() })

	// The primary is cut off; the backup goes on alone and takes work
	// in, more than a member without a vote may lag by.
	// Both links cut while the backup takes its work in (the primary,
	// asking to join sooner, would be close behind and join as a voter).
	// Then, without a voter join ahead, only the admin link heals: the
	// primary asks to join and is added without a vote, which the backup
	// commits alone; the primary cannot receive it. (Added as a voter,
	// it would stop the backup's commits until raft's link heals.)
	link(false, false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.rep.Reform(ctx); err != nil {
		t.Fatalf("backup reform: %v", err)
	}
	alone := submitOn(t, b, BackupTag, behind)
	if voterJoin {
		link(true, false)
	} else {
		adminDown.Store(false)
	}

	waitFor(t, "the backup adds the primary", 10*time.Second, func() bool { in, _ := member(); return in })
	if _, voter := member(); voter != voterJoin {
		t.Fatalf("the primary first joined with voter=%v, want %v", voter, voterJoin)
	}
	if !voterJoin {
		// A member without a vote, cut off: it lacks the backup's work
		// and must not count as caught up (it would take over without
		// it), though the last configuration it applied, before the
		// cut, says voter. The backup still commits.
		for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if pairP.caughtUp.Load() {
				t.Fatal("the primary counts as caught up while it has no vote and lacks the backup's work: it could take over without it")
			}
		}
		alone = append(alone, submitOn(t, b, BackupTag, 3)...)
		link(true, true)
	}
	waitFor(t, "the primary gets a vote and counts as caught up", 20*time.Second, func() bool {
		_, voter := member()
		return voter && pairP.caughtUp.Load()
	})
	waitFor(t, "the primary holds the backup's work", 10*time.Second, func() bool {
		for _, id := range alone {
			if _, err := p.st.Get(context.Background(), id); err != nil {
				return false
			}
		}
		return true
	})
}
