package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/titanicmq/titanic/internal/harness"
)

// TestSubmitFromAndWait: `titanic submit --from FILE` makes one ticket per
// line (a rerun with the same --key gives the same tickets), `titanic wait`
// waits for them all and reports each; `titanic completion bash` knows the
// commands and their flags.
func TestSubmitFromAndWait(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), fastBroker...)
	harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "--heartbeat", "200ms", "up", "--", "tr", "a-z", "A-Z")
	file := filepath.Join(t.TempDir(), "lines")
	var lines []string
	for i := range 50 {
		lines = append(lines, strings.Repeat("x", i%7)+"line")
	}
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := cli(t, "", "submit", "--broker", ep, "--from", file, "--key", "run1", "up")
	got := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(got) != 50 {
		t.Fatalf("submit --from: exit %d, %d lines", code, len(got))
	}
	again, _ := cli(t, "", "submit", "--broker", ep, "--from", file, "--key", "run1", "up")
	if again != out {
		t.Fatal("a rerun with the same --key made other tickets")
	}
	res, code := cli(t, out, "wait", "--broker", ep, "-")
	if code != 0 || strings.Count(res, "\tdone\n") != 50 {
		t.Fatalf("wait: exit %d\n%s", code, res)
	}
	comp, code := cli(t, "", "completion", "bash")
	if code != 0 || !strings.Contains(comp, "complete -F _titanic titanic") || !strings.Contains(comp, "--from") {
		t.Fatalf("completion: exit %d", code)
	}
}
