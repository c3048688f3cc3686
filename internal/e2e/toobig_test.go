package e2e

import (
	"strings"
	"testing"

	"github.com/titanicmq/titanic/internal/harness"
)

// TestFirstHourBodyTooBigExitCode: a body too big for the broker is one
// mistake, but the CLI reports it two ways. Over limits.max_body the
// broker answers 400 and `titanic submit` exits 4 ("request rejected"),
// with a message that names no setting ("body of 700000 bytes is over the
// limit of 524288"). Over limits.max_message_size the broker closes the
// connection; the client sees that, says "failed at once ... resending
// the same request cannot help", and yet exits 6, which --help calls
// "broker unavailable" and README "no broker answered": a script that
// retries on 6 retries it for ever. Both are a rejected request: exit 4,
// each naming the setting to raise.
func TestFirstHourBodyTooBigExitCode(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), "--max-message-size", "1MiB", "--max-body", "512KiB")
	for _, c := range []struct {
		size    int
		setting string
	}{
		{700_000, "limits.max_body"},
		{2_000_000, "limits.max_message_size"},
	} {
		_, stderr, code := cliStderr(t, strings.Repeat("a", c.size), "submit", "--broker", ep, "upper", "-")
		if code != 4 || !strings.Contains(stderr, c.setting) {
			t.Errorf("submit of a %d-byte body (over %s): exit %d, want 4 naming %s; stderr: %s",
				c.size, c.setting, code, c.setting, strings.TrimSpace(stderr))
		}
	}
}
