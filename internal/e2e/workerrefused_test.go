package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

// TestFirstHourWorkerSaysConnectionRefused: a new user starts the worker
// before the broker, or with a port mistyped. `titanic submit` against the
// same endpoint says within 2 s "connection refused (no broker listens
// there)". The worker logs "connecting to broker" and then nothing for
// 7.5 s, when it says "lost broker: reconnecting ... broker silent for
// 7.5s (nothing answered since connecting: is a broker listening there,
// with the same CURVE keys?)", a guess, and at WARN a broker "lost" that
// it never had, every 7.5 s. The worker could say what the client says, as
// soon: the connection is refused.
func TestFirstHourWorkerSaysConnectionRefused(t *testing.T) {
	ep := harness.FreeEndpoint(t) // reserved, nothing listens
	w := harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "upper", "--", "cat")
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(w.Tail(), "refused") {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("a worker whose broker endpoint refuses connections has not said so within 4 s; its log:\n%s", w.Tail())
}
