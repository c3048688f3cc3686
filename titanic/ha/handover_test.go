package ha

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// lossyAdopt is the yielding node's link to its peer's admin services whose
// first handover batch reaches the peer and is applied there, but whose
// answer is lost (a cut, a timeout of the 15 s try, the peer slow to
// commit): the yielding node sees an error and redoes the handover at its
// next round. Before the answer is lost, hold lets the test act on the
// winner (a client reads the adopted ticket's reply and closes it).
type lossyAdopt struct {
	adminLink
	once sync.Once
	hold func()
}

func (l *lossyAdopt) Request(ctx context.Context, service string, body [][]byte) ([][]byte, error) {
	out, err := l.adminLink.Request(ctx, service, body)
	if service != tsp.SvcAdopt || err != nil {
		return out, err
	}
	lost := false
	l.once.Do(func() {
		l.hold()
		lost = true
	})
	if lost {
		return nil, errors.New("test: the answer to the first handover batch is lost")
	}
	return out, nil
}

// TestRedoneHandoverDoesNotResurrectClosedTicket: README, split brain:
// "A handover cut short is redone", and the active applies it so that "a
// ticket the active's clients closed stays closed". Here the backup takes
// a ticket in alone during a split; when it yields, its first handover
// batch is applied by the primary but the answer is lost. Meanwhile the
// ticket, adopted by the primary, is closed there by its client (done and
// read). The backup redoes the handover from its journal: the primary
// adopted the closed ticket again, pending, and dispatched it again (found
// by a reviewer of the pair); a store now takes an adoption once.
func TestRedoneHandoverDoesNotResurrectClosedTicket(t *testing.T) {
	dir := t.TempDir()
	log := testLogger()
	// The split: each side goes on alone and takes work in.
	p, b, onB, addrB := splitPair(t, dir, log, 1)

	id := onB[0]
	closed := make(chan error, 1)
	var link *lossyAdopt
	hold := func() {
		// The primary now holds the adopted ticket: it runs, its client
		// reads the reply and closes it.
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		_, err := p.rep.Apply(cctx, []store.Op{
			{Kind: store.OpDispatch, ID: id, Time: time.Now()},
			{Kind: store.OpReply, ID: id, Time: time.Now(), Reply: [][]byte{[]byte("done")}},
			{Kind: store.OpClose, ID: id, Time: time.Now()},
		})
		closed <- err
	}
	pairP, pairB := linkedPairs(dir, log, p, b, binarystar.StateActive, binarystar.StatePassive, func(l adminLink) Requester {
		link = &lossyAdopt{adminLink: l, hold: hold}
		return link
	})
	runPairs(t, pairP, pairB)

	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("closing the adopted ticket on the primary: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the backup never handed its split over")
	}
	if _, err := p.st.Get(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after the close on the primary: %v, want not found", err)
	}
	// The pair converges: the backup redoes its handover, resyncs and
	// rejoins the primary's raft.
	waitFor(t, "the backup rejoins the primary's raft", 30*time.Second, func() bool {
		_, member := p.rep.MemberAt("backup", string(addrB))
		return member && pairP.Active()
	})
	if tk, err := p.st.Get(context.Background(), id); err == nil {
		t.Fatalf("ticket %s, closed on the active primary by its client after the first (cut short) handover, is back after the redone handover: %s",
			id, fmt.Sprintf("state %s, attempts %d", tk.State, tk.Attempts))
	}
}
