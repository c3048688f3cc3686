package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

// TestFirstHourWorkerCurveMismatch: README's CURVE steps (keygen for
// the broker and for alice, alice.pub into the allowlist, broker --curve),
// then a worker started the way the quick start showed, without
// --curve-key, or with a key the allowlist lacks (bob). `titanic submit`
// in the same spot says at once "security handshake failed: the broker
// probably uses CURVE and this client does not" or "the broker refused
// this client's CURVE key". The worker instead, 2.5 s after it starts,
// spins logging
//
//	level=WARN msg="send queue full: message dropped" ... command=HEARTBEAT
//
// some 50,000-80,000 times a second (280,000 lines in 6 s here, 2.2
// million in 17 s), until its 7.5 s liveness runs out, then again after
// each reconnect: a full core and a disk filled with logs, and not a word
// about CURVE. It should say once what is wrong, as the client does, and
// wait.
func TestFirstHourWorkerCurveMismatch(t *testing.T) {
	dir := t.TempDir()
	allowed := filepath.Join(dir, "allowed")
	if err := os.Mkdir(allowed, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"broker", "alice", "bob"} {
		if _, code := cli(t, "", "keygen", "--dir", dir, name); code != 0 {
			t.Fatalf("keygen %s: exit %d", name, code)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "alice.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(allowed, "alice.pub"), pub, 0o644); err != nil {
		t.Fatal(err)
	}
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), "--curve",
		"--secret-key-file", filepath.Join(dir, "broker.key"), "--public-keys-dir", allowed)

	for _, c := range []struct {
		name string
		args []string
	}{
		{"no curve", nil},
		{"key not allowed", []string{"--curve-server-key", filepath.Join(dir, "broker.pub"), "--curve-key", filepath.Join(dir, "bob.key")}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"worker", "--broker", ep}, c.args...)
			w := harness.Start(t, "worker", "worker running", append(args, "echo", "--", "cat")...)
			time.Sleep(4 * time.Second)
			data, err := os.ReadFile(w.Log)
			if err != nil {
				t.Fatal(err)
			}
			w.Kill()
			lines := strings.Count(string(data), "\n")
			if lines > 50 {
				t.Errorf("the worker logged %d lines in 4 s (%d of them %q)", lines,
					strings.Count(string(data), "send queue full"), "send queue full: message dropped")
			}
			if !strings.Contains(string(data), "CURVE") {
				t.Errorf("in 4 s the worker did not say that its CURVE setup does not match the broker's; first lines:\n%s",
					firstLines(string(data), 4))
			}
		})
	}
}

func firstLines(s string, n int) string {
	l := strings.SplitN(s, "\n", n+1)
	if len(l) > n {
		l = l[:n]
	}
	return strings.Join(l, "\n")
}
