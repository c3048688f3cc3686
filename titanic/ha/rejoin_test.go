package ha

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// legacyJoins is the admin link of a peer on a release that knows no
// nonvoter join: it answers one 400, as that release's admin did.
type legacyJoins struct{ adminLink }

func (l legacyJoins) Request(ctx context.Context, service string, body [][]byte) ([][]byte, error) {
	if service == tsp.SvcJoin && len(body) != 2 {
		return [][]byte{[]byte("400"), []byte("want [node id | raft address]")}, nil
	}
	return l.adminLink.Request(ctx, service, body)
}

// A pair node that returns after its peer went on alone joins the peer's
// raft without a vote: while it catches up, the active commits alone (a
// voter that lags would hold every commit of a raft of two; half a minute
// at 10,000,000 pending), and the returning node does not count as caught
// up, so it does not take over. Once close behind, it gets a vote and
// counts. Against a peer on a release without the nonvoter join, it joins
// as a voter, as before.
func TestPairRejoinsWithoutVoteFirst(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%v", legacy), func(t *testing.T) { testRejoin(t, legacy) })
	}
}

func testRejoin(t *testing.T, legacy bool) {
	dir := t.TempDir()
	var logs io.Writer = io.Discard
	if testing.Verbose() {
		logs = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(logs, nil))
	addrP, trP := raft.NewInmemTransport("")
	addrB, trB := raft.NewInmemTransport("")
	link := func(up bool) {
		if up {
			trP.Connect(addrB, trB)
			trB.Connect(addrP, trP)
			return
		}
		trP.DisconnectAll()
		trB.DisconnectAll()
	}
	link(true)
	peers := []replica.Peer{{ID: "primary", Addr: string(addrP)}, {ID: "backup", Addr: string(addrB)}}
	p := openPairNode(t, dir, "primary", 1, addrP, trP, peers, log)
	b := openPairNode(t, dir, "backup", 0, addrB, trB, peers, log)
	waitFor(t, "a raft leader of two", 10*time.Second, func() bool { return p.rep.IsLeader() || b.rep.IsLeader() })

	// The primary is lost; the backup goes on alone and takes work in,
	// more than a member without a vote may lag by.
	link(false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.rep.Reform(ctx); err != nil {
		t.Fatalf("backup reform: %v", err)
	}
	alone := submitOn(t, b, BackupTag, promoteSlack+100)

	// The primary returns, passive beside the active backup.
	link(true)
	adminP, adminB := NewAdmin(p.rep, nil, log), NewAdmin(b.rep, nil, log)
	adminP.Merge, adminB.Merge = p.disp.merge, b.disp.merge
	var toB Requester = adminLink{adminB}
	if legacy {
		toB = legacyJoins{adminLink{adminB}}
	}
	cfg := func(peer *pairNode, id string, tag byte) PairConfig {
		return PairConfig{PeerID: peer.id, PeerAddr: string(peer.addr), PeerEndpoint: "inproc://" + peer.id, PeerTag: tag,
			ForkDir: filepath.Join(dir, id, "forks"), Logger: log.With("node", id)}
	}
	pairP := NewPairWith(p.rep, p.disp, cfg(b, "primary", BackupTag), func(func()) Star { return fixedStar{binarystar.StatePassive} },
		func() (Requester, error) { return toB, nil })
	pairB := NewPairWith(b.rep, b.disp, cfg(p, "backup", PrimaryTag), func(func()) Star { return fixedStar{binarystar.StateActive} },
		func() (Requester, error) { return adminLink{adminP}, nil })
	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- pairP.Run(rctx) }()
	go func() { done <- pairB.Run(rctx) }()
	defer func() {
		rcancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}()

	member := func() (in, voter bool) {
		ms, err := b.rep.Members()
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
	waitFor(t, "the backup adds the primary", 10*time.Second, func() bool { in, _ := member(); return in })
	if _, voter := member(); voter != legacy {
		t.Fatalf("the primary first joined with voter=%v, want %v", voter, legacy)
	}
	if !legacy {
		if pairP.caughtUp.Load() {
			t.Fatal("the primary counts as caught up while it has no vote: it could take over without the backup's latest work")
		}
		// Cut off while it has no vote: the backup still commits.
		link(false)
		more := submitOn(t, b, BackupTag, 3)
		alone = append(alone, more...)
		link(true)
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
