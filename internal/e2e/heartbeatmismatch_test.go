package e2e

import (
	"os"
	"strings"
	"testing"

	"github.com/titanicmq/titanic/internal/harness"
)

// TestFirstHourHeartbeatMismatchSaysSo: the broker table shows
// `--heartbeat` (2.5s) among the broker's flags; a new user who lowers it
// (`titanic broker --heartbeat 500ms`, to notice dead workers sooner) and
// starts workers as README shows, on their default 2.5 s, gets:
//
//   - an idle worker dropped and re-registered every 2.5 s, logging only
//     `lost broker: reconnecting ... reason="broker sent DISCONNECT"`;
//   - every job that outlives the worker's first heartbeat (2.5 s) by more than the broker's expiry (3 x 500 ms) failed each
//     attempt with "worker expired: silent for 1.5s", run again and again
//     (its side effects too), and failed for good after max_attempts.
//
// Neither process says that the two heartbeat intervals differ, though the
// worker hears the broker's heartbeat every 500 ms and the broker could
// tell the worker's. --help says "(match the broker's)"; a mismatch should
// be said where it bites: in the worker's log or the broker's, naming
// --heartbeat.
func TestFirstHourHeartbeatMismatchSaysSo(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	br := harness.Broker(t, "broker", ep, t.TempDir(), "--heartbeat", "500ms")
	w := harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "slow", "--", "sh", "-c", "sleep 6; cat")
	out, stderr, code := cliStderr(t, "", "submit", "--broker", ep, "--attempts", "2", "--wait", "--wait-timeout", "40s", "slow", "hi")
	if code == 0 && out == "hi" {
		return // the job ran through: no harm
	}
	for _, p := range []*harness.Process{w, br} {
		data, _ := os.ReadFile(p.Log)
		if strings.Contains(string(data), "--heartbeat") {
			return
		}
	}
	t.Errorf("a 6 s job under a broker at --heartbeat 500ms and a worker on its default: exit %d (%s), and neither log names --heartbeat; worker log:\n%s",
		code, strings.TrimSpace(stderr), w.Tail())
}
