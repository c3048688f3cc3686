package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/titanicmq/titanic/internal/harness"
)

// When --wait-timeout runs out, `titanic wait` prints TICKET<TAB>pending
// (--json: one object) for every ticket not answered, those never handed
// to one of its --parallel waiters too: a script reading the output to
// learn which tickets are still pending must see them all.
func TestWaitTimeoutPrintsEveryTicket(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir())
	var tickets []string
	for range 4 {
		out, code := cli(t, "", "submit", "--broker", ep, "nobody", "x")
		if code != 0 {
			t.Fatalf("submit: exit %d", code)
		}
		tickets = append(tickets, strings.TrimSpace(out))
	}
	args := append([]string{"wait", "--broker", ep, "--parallel", "1", "--wait-timeout", "1s"}, tickets...)
	out, code := cli(t, "", args...)
	if code != 3 {
		t.Fatalf("wait: exit %d, want 3 (pending)", code)
	}
	for _, tk := range tickets {
		if strings.Count(out, tk+"\tpending\n") != 1 {
			t.Errorf("wait --parallel 1 --wait-timeout 1s of 4 pending tickets: not one line %s<TAB>pending; stdout:\n%s", tk, out)
		}
	}
	out, code = cli(t, "", append(args, "--json")...)
	if code != 3 {
		t.Fatalf("wait --json: exit %d, want 3 (pending)", code)
	}
	seen := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var row struct{ ID, State string }
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatalf("wait --json: line %q: %v", line, err)
		}
		seen[row.ID] = row.State
	}
	for _, tk := range tickets {
		if seen[tk] != "pending" {
			t.Errorf("wait --json --parallel 1 --wait-timeout 1s: %s has state %q, want pending; stdout:\n%s", tk, seen[tk], out)
		}
	}
}
