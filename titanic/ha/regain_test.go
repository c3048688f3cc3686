package ha

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic"
)

type nopBroker struct{}

func (nopBroker) Reply(broker.Client, string, [][]byte) {}
func (nopBroker) Release(uint64)                        {}
func (nopBroker) Wake(string)                           {}

// heldDispatcher is the real titanic service whose Activate returns only
// when the test lets it (a Recover that takes a while: a big store, a
// slow disk).
type heldDispatcher struct {
	svc          *titanic.Service
	entered      chan struct{}
	hold         chan struct{}
	activations  atomic.Int32
	deactivation atomic.Int32
}

func (h *heldDispatcher) Activate(ctx context.Context) error {
	err := h.svc.Activate(ctx)
	if h.activations.Add(1) == 1 {
		close(h.entered)
		<-h.hold
	}
	return err
}

func (h *heldDispatcher) Deactivate() { h.deactivation.Add(1); h.svc.Deactivate() }

// A leader whose Activate is still rebuilding the queues loses its
// leadership, another leader acknowledges a ticket, and the leadership
// comes back before Activate returns. The node must not serve with the
// queues it rebuilt before that ticket: Group.sync activates again when
// the term changed meanwhile. Without that check the ticket was never
// dispatched until the next leadership change.
func TestGroupRegainDuringActivate(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nodes, _, peers := memGroup(t, 3)
	leaderOf := func() int {
		for i, n := range nodes {
			if n.IsLeader() {
				return i
			}
		}
		return -1
	}
	becomeLeader := func(i int) {
		deadline := time.Now().Add(15 * time.Second)
		for !nodes[i].IsLeader() {
			if time.Now().After(deadline) {
				t.Fatalf("%s not leader", peers[i].ID)
			}
			if l := leaderOf(); l >= 0 && l != i {
				_ = nodes[l].TransferLeadership(peers[i].ID, peers[i].Addr)
			}
			time.Sleep(30 * time.Millisecond)
		}
	}
	becomeLeader(0)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc := titanic.New(nodes[0], nopBroker{}, titanic.Config{Logger: log})
	go func() { _ = svc.Run(ctx) }()
	h := &heldDispatcher{svc: svc, entered: make(chan struct{}), hold: make(chan struct{})}
	g := NewGroup(nodes[0], h, log)
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() { cancel(); <-done }()

	<-h.entered // the queues are rebuilt (empty store); Activate not returned yet
	becomeLeader(1)
	id := store.NewID()
	actx, acancel := context.WithTimeout(context.Background(), 5*time.Second)
	res, err := nodes[1].Apply(actx, []store.Op{{Kind: store.OpSubmit, ID: id, Time: time.Now(), Service: "echo", Body: [][]byte{[]byte("job")}}})
	acancel()
	if err != nil || res[0].Err != nil {
		t.Fatalf("submit on b: %v %v", err, res)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := nodes[0].Get(context.Background(), id); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a never applied the ticket")
		}
		time.Sleep(10 * time.Millisecond)
	}
	becomeLeader(0)
	close(h.hold)
	for !g.Active() {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatal("a does not serve")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("a serves: activations %d, deactivations %d, term %d", h.activations.Load(), h.deactivation.Load(), nodes[0].Status().Term)
	// A worker asks for work for a while.
	deadline = time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if job, ok := svc.Next("echo", "w1"); ok {
			t.Logf("dispatched %s", job.Token)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("ticket %s, acknowledged by b while a was a follower, is in a's store but a serves and never dispatches it (activations %d, deactivations %d)",
		id, h.activations.Load(), h.deactivation.Load())
}
