package broker

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker/mdp"
)

// lineCounter counts the log lines written at the level the operator runs
// (info, the default).
type lineCounter struct{ buf bytes.Buffer }

func (l *lineCounter) Write(p []byte) (int, error) { return l.buf.Write(p) }
func (l *lineCounter) lines() int                  { return strings.Count(l.buf.String(), "\n") }
func (l *lineCounter) first(n int) string {
	ls := strings.SplitN(l.buf.String(), "\n", n+1)
	return strings.Join(ls[:min(n, len(ls))], "\n")
}

// One misbehaving peer, on one connection, sending the same bad worker
// command in a loop for 10 s of broker time, must not write a log line per
// message: the broker bounds its other per-message complaints (oversized
// and too many frames, clients not reading) to one line every 10 s, and an
// operator at the default level gets the same from these. Each of these
// loops wrote one line (or two) per message.
func TestOneBadWorkerDoesNotFloodTheLog(t *testing.T) {
	loops := []struct {
		name string
		msgs [][][]byte
	}{
		{"READY for a reserved service", [][][]byte{ready("mmi.service")}},
		{"READY with an over-long service name", [][][]byte{ready(strings.Repeat("s", mdp.MaxServiceName+1))}},
		{"READY twice", [][][]byte{ready("svc"), ready("svc")}},
		{"REPLY for a request it does not hold", [][][]byte{ready("svc"), workerReply("nobody", "x")}},
	}
	for _, lp := range loops {
		t.Run(lp.name, func(t *testing.T) {
			var out lineCounter
			log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}))
			s := newState(testConfig(), log, (&recorder{fail: map[string]error{}}).send, nil, nil)
			const rounds = 1000
			for i := range rounds {
				now := t0.Add(time.Duration(i) * 10 * time.Millisecond) // 10 s in all
				for _, m := range lp.msgs {
					s.receive(now, in("W", m))
				}
			}
			if n := out.lines(); n > 10 {
				t.Errorf("%d rounds from one peer over 10 s wrote %d log lines at info; want a bounded few. First lines:\n%s",
					rounds, n, out.first(3))
			}
		})
	}
}
