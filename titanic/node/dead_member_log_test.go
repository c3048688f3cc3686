package node_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/nodetest"
)

type syncLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncLog) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Split(strings.TrimRight(s.buf.String(), "\n"), "\n")
}

// A group member that is down (a host being repaired, a member that will
// be replaced) makes the leader's raft log an ERROR line for every failed
// heartbeat and appendEntries: with the binary's defaults about two lines
// a second for as long as the member is down (85 lines in 30 s measured
// through titanic broker; ~170,000 a day), each wrapping hclog's own
// timestamped line in slog's. The broker bounds its other repeating
// complaints to a line every 10 s; a dead member should be said once and
// then now and then, not flood the log.
func TestDeadMemberDoesNotFloodTheLeadersLog(t *testing.T) {
	cfgs := groupConfigs(t)
	logs := make([]*syncLog, len(cfgs))
	for i := range cfgs {
		logs[i] = &syncLog{}
		l := slog.New(slog.NewTextHandler(logs[i], &slog.HandlerOptions{Level: slog.LevelInfo}))
		cfgs[i].Raft.Logger = l
		cfgs[i].Logger = l
	}
	var nodes []*nodetest.Node
	for _, c := range cfgs {
		nodes = append(nodes, nodetest.Start(t, c))
	}
	leader := -1
	until(t, 10*time.Second, "a leader", func() error {
		for i, n := range nodes {
			if n.Active() {
				leader = i
				return nil
			}
		}
		return errNoLeader
	})
	down := (leader + 1) % len(nodes)
	nodes[down].Stop()
	time.Sleep(5 * time.Second) // raft's backoff reaches its ceiling
	before := len(logs[leader].lines())
	time.Sleep(10 * time.Second)
	all := logs[leader].lines()
	got := all[before:]
	var errs []string
	for _, l := range got {
		if strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
			errs = append(errs, l)
		}
	}
	if len(errs) > 3 {
		t.Errorf("with one member down, the leader logged %d warning and error lines in 10 s (steady state); want a bounded few. First:\n%s",
			len(errs), strings.Join(errs[:min(3, len(errs))], "\n"))
	}
}

var errNoLeader = errorString("no leader yet")

type errorString string

func (e errorString) Error() string { return string(e) }
