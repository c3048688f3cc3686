package e2e

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

// With --log-format json every line a broker writes is a JSON object: no
// part of it logs through Go's default logger (the service's config
// default once did: "recovered dispatch queues" came out as plain text).
func TestBrokerLogsAreAllJSON(t *testing.T) {
	p := harness.Broker(t, "broker", harness.FreeEndpoint(t), t.TempDir(), "--log-format", "json")
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p.Log)
	if err != nil {
		t.Fatal(err)
	}
	lines := 0
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		lines++
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Errorf("log line is not JSON: %q", line)
		}
	}
	if lines < 3 || !strings.Contains(string(data), `"recovered dispatch queues"`) {
		t.Fatalf("%d log lines, want the start-up and stop lines, the service's among them:\n%s", lines, data)
	}
}
