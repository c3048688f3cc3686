package replica

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// A raft warning or error repeated about one peer is written once, then
// at most every raftLogEvery; another peer's, or another message, is
// written at once; info lines are not limited.
func TestRaftRepeatedWarningsLimited(t *testing.T) {
	var buf bytes.Buffer
	n := &Node{log: slog.New(slog.NewTextHandler(&buf, nil))}
	l := n.hclog()
	for range 100 {
		l.Error("failed to heartbeat to", "peer", "10.0.0.2:7000", "error", "connection refused")
		l.Warn("failed to contact", "server-id", "n2", "time", "1s")
		l.Info("entering follower state", "follower", "n1")
	}
	l.Error("failed to heartbeat to", "peer", "10.0.0.3:7000", "error", "connection refused")
	out := buf.String()
	for _, c := range []struct {
		text string
		want int
	}{
		{`peer=10.0.0.2:7000`, 1},
		{`server-id=n2`, 1},
		{`peer=10.0.0.3:7000`, 1},
		{`entering follower state`, 100},
	} {
		if got := strings.Count(out, c.text); got != c.want {
			t.Errorf("%d lines with %s, want %d", got, c.text, c.want)
		}
	}
}
