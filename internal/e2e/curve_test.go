package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

// TestCurveCommands: `titanic keygen`, a broker with CURVE and an
// allowlist, a client and a worker with allowed keys work end to end; a
// client whose key is not allowed gets nothing (exit 6); once its public
// key is added and the broker gets SIGHUP, it gets through.
func TestCurveCommands(t *testing.T) {
	keys, allowed := t.TempDir(), t.TempDir()
	for _, name := range []string{"broker", "alice", "bob", "worker"} {
		if out, code := cli(t, "", "keygen", "--dir", keys, name); code != 0 || !strings.Contains(out, "public key") {
			t.Fatalf("keygen %s: exit %d %q", name, code, out)
		}
	}
	for _, name := range []string{"alice", "worker"} {
		b, err := os.ReadFile(filepath.Join(keys, name+".pub"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(allowed, name+".pub"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ep := harness.FreeEndpoint(t)
	br := harness.Broker(t, "broker", ep, t.TempDir(), append([]string{"--curve",
		"--secret-key-file", filepath.Join(keys, "broker.key"), "--public-keys-dir", allowed}, fastBroker...)...)
	as := func(who string) []string {
		return []string{"--broker", ep, "--timeout", "500ms", "--retries", "2",
			"--curve-server-key", filepath.Join(keys, "broker.pub"), "--curve-key", filepath.Join(keys, who+".key")}
	}
	harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "--heartbeat", "200ms",
		"--curve-server-key", filepath.Join(keys, "broker.pub"), "--curve-key", filepath.Join(keys, "worker.key"), "rev", "--", "rev")
	if out, code := cli(t, "", append(append([]string{"submit", "--wait"}, as("alice")...), "rev", "secret")...); code != 0 || strings.TrimSpace(out) != "terces" {
		t.Fatalf("allowed client: exit %d %q\n%s", code, out, br.Tail())
	}
	if _, code := cli(t, "", append(append([]string{"submit"}, as("bob")...), "rev", "x")...); code != 6 {
		t.Fatalf("client with a key not allowed: exit %d, want 6 (no answer)", code)
	}
	plain := []string{"submit", "--broker", ep, "--timeout", "500ms", "--retries", "1", "rev", "x"}
	if _, code := cli(t, "", plain...); code != 6 {
		t.Fatalf("plain client: exit %d, want 6", code)
	}
	// Allow bob and reload.
	b, _ := os.ReadFile(filepath.Join(keys, "bob.pub"))
	if err := os.WriteFile(filepath.Join(allowed, "bob.pub"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	br.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, code := cli(t, "", append(append([]string{"submit", "--wait"}, as("bob")...), "rev", "ok")...)
		if code == 0 && strings.TrimSpace(out) == "ko" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob still refused after reload: exit %d\n%s", code, br.Tail())
		}
	}
}

// A broker with CURVE and peering or notifications says at start that
// CURVE does not cover those links: an operator who asked for CURVE
// must not believe them covered.
func TestCurveWarnsOfUncoveredLinks(t *testing.T) {
	keys, allowed := t.TempDir(), t.TempDir()
	if out, code := cli(t, "", "keygen", "--dir", keys, "broker"); code != 0 {
		t.Fatalf("keygen: exit %d %q", code, out)
	}
	br := harness.Broker(t, "broker", harness.FreeEndpoint(t), t.TempDir(), "--curve",
		"--secret-key-file", filepath.Join(keys, "broker.key"), "--public-keys-dir", allowed,
		"--peering-name", "A", "--peering-cloud-listen", harness.FreeEndpoint(t), "--peering-state-listen", harness.FreeEndpoint(t),
		"--peering-peers", "B="+harness.FreeEndpoint(t)+"+"+harness.FreeEndpoint(t),
		"--notify-listen", harness.FreeEndpoint(t))
	for _, want := range []string{"security.curve does not cover the peering links", "security.curve does not cover the notification endpoint"} {
		if !strings.Contains(br.Tail(), want) {
			t.Errorf("start-up log lacks %q:\n%s", want, br.Tail())
		}
	}
}
