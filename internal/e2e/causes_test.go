package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

// Issue 12 item 5: when no broker serves a command, its message names the
// endpoint and what was seen of it (nothing listens, a body over the
// broker's limits.max_message_size, a CURVE key the broker refuses), with
// exit 6, within 10 s on the default flags.
func TestUnavailableCauses(t *testing.T) {
	const ticket = "0123456789abcdef0123456789abcdef"
	check := func(t *testing.T, stdin string, want []string, args ...string) {
		t.Helper()
		start := time.Now()
		_, stderr, code := cliErr(t, stdin, args...)
		el := time.Since(start)
		if code != 6 || el > 10*time.Second {
			t.Fatalf("titanic %s: exit %d after %s (stderr %q), want 6 within 10s", args[0], code, el, stderr)
		}
		for _, w := range want {
			if !strings.Contains(stderr, w) {
				t.Errorf("titanic %s: message %q does not say %q", args[0], stderr, w)
			}
		}
	}

	t.Run("dead broker", func(t *testing.T) {
		ep := harness.FreeEndpoint(t)
		check(t, "", []string{ep + ": connection refused (no broker listens there)", "--broker"}, "status", "--broker", ep, ticket)
	})

	t.Run("body over the broker's limit", func(t *testing.T) {
		ep := harness.FreeEndpoint(t)
		br := harness.Broker(t, "broker", ep, t.TempDir(), append([]string{"--max-message-size", "4KiB"}, fastBroker...)...)
		check(t, strings.Repeat("x", 64<<10), []string{ep + ": the broker closed the connection right after this request",
			"largest frame 65536 bytes", "limits.max_message_size"}, "submit", "--broker", ep, "echo", "-")
		if out, code := cli(t, "", "submit", "--broker", ep, "echo", "small"); code != 0 || len(strings.TrimSpace(out)) != 32 {
			t.Fatalf("a body within the limit: exit %d %q\n%s", code, out, br.Tail())
		}
	})

	t.Run("CURVE key refused", func(t *testing.T) {
		keys, allowed := t.TempDir(), t.TempDir()
		for _, name := range []string{"broker", "alice", "bob"} {
			if out, code := cli(t, "", "keygen", "--dir", keys, name); code != 0 {
				t.Fatalf("keygen %s: exit %d %q", name, code, out)
			}
		}
		b, err := os.ReadFile(filepath.Join(keys, "alice.pub"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(allowed, "alice.pub"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		ep := harness.FreeEndpoint(t)
		harness.Broker(t, "broker", ep, t.TempDir(), append([]string{"--curve",
			"--secret-key-file", filepath.Join(keys, "broker.key"), "--public-keys-dir", allowed}, fastBroker...)...)
		check(t, "", []string{ep + ": the broker refused this client's CURVE key", "security.public_keys_dir"},
			"submit", "--broker", ep, "--curve-server-key", filepath.Join(keys, "broker.pub"),
			"--curve-key", filepath.Join(keys, "bob.key"), "echo", "hi")
		check(t, "", []string{ep + ": security handshake failed", "uses CURVE and this client does not"},
			"submit", "--broker", ep, "echo", "hi")
	})
}
