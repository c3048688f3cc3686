package ha

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/titanic/tsp"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// A stranger (an address outside security.admin_from) asking for cluster
// changes in a loop gets one WARN line per request ("cluster change
// refused"): the refusal costs it nothing, and every one is logged. The
// broker's other per-client complaints are logged at most every 10 s.
// (The refusal never reaches the raft node, which stays nil here.)
func TestRefusedClusterChangesDoNotFloodTheLog(t *testing.T) {
	var out lockedBuf
	log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	r := make(chanReplier, 1)
	a := NewAdmin(nil, r, log)
	a.Sources = &AdminSources{Hosts: func() []string { return []string{"10.1.2.3:7000"} }}
	const n = 200
	for i := range n {
		req := broker.Request{Service: tsp.SvcJoin, From: "192.0.2.9", Body: [][]byte{[]byte("evil"), []byte("192.0.2.9:7000")}}
		res := a.ServeMDP(req)
		if res == nil {
			select {
			case res = <-r:
			case <-time.After(5 * time.Second):
				t.Fatalf("request %d: no answer", i)
			}
		}
		if !tsp.Is(res, tsp.CodeUnknown, tsp.Forbidden) {
			t.Fatalf("join from a stranger = %q, want 400 forbidden", res)
		}
	}
	out.mu.Lock()
	lines := strings.Count(out.b.String(), "cluster change refused")
	out.mu.Unlock()
	if lines > 10 {
		t.Errorf("%d refused joins from one address wrote %d \"cluster change refused\" lines; want a bounded few", n, lines)
	}
}
