package ha

import (
	"context"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// historyOnly answers titanic.cluster.history with a fixed history, as
// Admin does (EncodeHistory), and titanic.cluster.role.
type historyOnly struct{ h PeerHistory }

func (s historyOnly) Serves(string) bool { return true }

func (s historyOnly) ServeMDP(req broker.Request) [][]byte {
	switch req.Service {
	case tsp.SvcHistory:
		return EncodeHistory(s.h)
	case tsp.SvcRole:
		return tsp.EncodeRole(tsp.Role{})
	}
	return [][]byte{[]byte("400"), []byte("unknown")}
}

// TestPeerHistoryOfManyTermsIsRead: a pair node's store keeps an epoch for
// every raft term in which it applied an entry, "kept for every term, not a
// window" (README), and titanic.cluster.history answers one frame per
// epoch. A node that rejoins (after any restart, cut or split) first reads
// its peer's history through a client of the peer's broker (NewPair's
// peerClient), which drops any answer of more than zsock.DefaultMaxFrames
// (1024) frames as not 7/MDP. Every election, takeover, reform and
// leadership transfer of a pair's life adds a term: past about a thousand,
// the history could no longer be read, and a node that restarted never
// rejoined its peer (found by a reviewer of the pair). A long history now
// goes in one frame, a line per epoch.
func TestPeerHistoryOfManyTermsIsRead(t *testing.T) {
	endpoint := harness.FreeEndpoint(t)
	b, err := broker.New(broker.Config{Endpoints: []string{endpoint}, HeartbeatInterval: 100 * time.Millisecond, Logger: testLogger()})
	if err != nil {
		t.Fatalf("broker: %v", err)
	}
	var h PeerHistory
	for i := range uint64(1100) {
		h.Epochs = append(h.Epochs, store.Epoch{Term: 2*i + 1, Start: 10*i + 1, End: 10*i + 9})
	}
	h.Epochs[len(h.Epochs)-1].End = 0
	h.Applied = h.Epochs[len(h.Epochs)-1].Start + 5
	b.Handle(tsp.AdminPrefix, historyOnly{h})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-b.Ready()

	// The peer client of NewPair, with a shorter timeout.
	cc := client.DefaultConfig()
	cc.Brokers = []string{endpoint}
	cc.Timeout, cc.Retries = 3*time.Second, 1
	cc.Direct = true
	cc.Logger = testLogger()
	c, err := client.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	frames, err := c.Request(ctx, tsp.SvcHistory, [][]byte{{}})
	if err != nil {
		t.Fatalf("a peer history of %d epochs (%d frames) cannot be read by the pair's peer client: %v", len(h.Epochs), len(h.Epochs)+2, err)
	}
	got, err := DecodeHistory(frames)
	if err != nil || len(got.Epochs) != len(h.Epochs) {
		t.Fatalf("decoded %d epochs, %v", len(got.Epochs), err)
	}
}
