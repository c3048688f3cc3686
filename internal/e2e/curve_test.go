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

// keygen makes a key pair for each of names with `titanic keygen` in a
// directory, and copies the public keys of allow to an allowlist
// directory; it returns both.
func keygen(t *testing.T, names []string, allow ...string) (keys, allowed string) {
	t.Helper()
	keys, allowed = t.TempDir(), t.TempDir()
	for _, name := range names {
		if out, code := cli(t, "", "keygen", "--dir", keys, name); code != 0 || !strings.Contains(out, "public key") {
			t.Fatalf("keygen %s: exit %d %q", name, code, out)
		}
	}
	for _, name := range allow {
		b, err := os.ReadFile(filepath.Join(keys, name+".pub"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(allowed, name+".pub"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return keys, allowed
}

// TestCurveCommands: `titanic keygen`, a broker with CURVE and an
// allowlist, a client and a worker with allowed keys work end to end; a
// client whose key is not allowed gets nothing (exit 6); once its public
// key is added and the broker gets SIGHUP, it gets through.
func TestCurveCommands(t *testing.T) {
	keys, allowed := keygen(t, []string{"broker", "alice", "bob", "worker"}, "alice", "worker")
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

// Two clusters peered over CURVE through the command line: each peer's
// key file in --peering-peers (NAME=CLOUD+STATE+KEYFILE). A job submitted
// to A, which has no worker, runs on B's worker and its reply comes back
// through A; neither broker warns that the peering links are plain.
func TestCurvePeeringCommands(t *testing.T) {
	keys, allowed := keygen(t, []string{"a", "b", "alice", "worker"}, "alice", "worker")
	epA, epB := harness.FreeEndpoint(t), harness.FreeEndpoint(t)
	cloudA, stateA, cloudB, stateB := harness.FreeEndpoint(t), harness.FreeEndpoint(t), harness.FreeEndpoint(t), harness.FreeEndpoint(t)
	node := func(self, ep, cloud, state, peer, peerCloud, peerState string) *harness.Process {
		return harness.Broker(t, "broker-"+self, ep, t.TempDir(), append([]string{"--curve",
			"--secret-key-file", filepath.Join(keys, self+".key"), "--public-keys-dir", allowed,
			"--peering-name", self, "--peering-cloud-listen", cloud, "--peering-state-listen", state,
			"--peering-peers", peer + "=" + peerCloud + "+" + peerState + "+" + filepath.Join(keys, peer+".pub")}, fastBroker...)...)
	}
	brA := node("a", epA, cloudA, stateA, "b", cloudB, stateB)
	brB := node("b", epB, cloudB, stateB, "a", cloudA, stateA)
	harness.Start(t, "worker", "worker running", "worker", "--broker", epB, "--heartbeat", "200ms",
		"--curve-server-key", filepath.Join(keys, "b.pub"), "--curve-key", filepath.Join(keys, "worker.key"), "rev", "--", "rev")
	out, code := cli(t, "", "submit", "--wait", "--broker", epA, "--timeout", "20s",
		"--curve-server-key", filepath.Join(keys, "a.pub"), "--curve-key", filepath.Join(keys, "alice.key"), "rev", "peered")
	if code != 0 || strings.TrimSpace(out) != "dereep" {
		t.Fatalf("submit to A, served by B's worker over CURVE peering: exit %d %q\nA:\n%s\nB:\n%s", code, out, brA.Tail(), brB.Tail())
	}
	for _, br := range []*harness.Process{brA, brB} {
		if strings.Contains(br.Tail(), "does not cover the peering links") {
			t.Errorf("a broker peered over CURVE warns the links are plain:\n%s", br.Tail())
		}
	}
}
