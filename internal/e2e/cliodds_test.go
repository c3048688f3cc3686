package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/titanicmq/titanic/internal/harness"
)

// TestFirstHourCLIOdds: small inconsistencies a new user meets in the
// quick start's commands.
//
//   - `titanic tickets --state pending` with nothing pending prints
//     nothing at all, exit 0, where `titanic dead` says "no failed ticket"
//     and `titanic clients` explains its empty list on stderr.
//   - `titanic tickets --state finished` (a state the CLI could check,
//     as it checks --limit: "--limit 0: want 1 to 1000", exit 2) goes to
//     the broker and exits 4, "request rejected: bad request".
//   - `titanic submit SVC < /dev/null` (cron, systemd, nohup: no body
//     given, standard input not a terminal) says "reading the request body
//     from standard input; end it with Ctrl-D", which README promises
//     only on a terminal.
func TestFirstHourCLIOdds(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir())

	out, stderr, code := cliStderr(t, "", "tickets", "--broker", ep, "--state", "pending")
	if code == 0 && out == "" && strings.TrimSpace(stderr) == "" {
		t.Errorf("tickets --state pending with none pending: no output at all (dead and clients say their list is empty)")
	}

	if _, stderr, code := cliStderr(t, "", "tickets", "--broker", ep, "--state", "finished"); code != 2 {
		t.Errorf("tickets --state finished: exit %d, want 2 (a usage error, as --limit 0 is); stderr: %s", code, strings.TrimSpace(stderr))
	}

	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	cmd := exec.Command(harness.Binary(t), "submit", "--broker", ep, "upper")
	cmd.Stdin = devnull
	var errb strings.Builder
	cmd.Stderr = &errb
	_ = cmd.Run()
	if strings.Contains(errb.String(), "Ctrl-D") {
		t.Errorf("submit with standard input /dev/null (not a terminal) says: %s", strings.TrimSpace(errb.String()))
	}
}
