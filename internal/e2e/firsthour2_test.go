package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

// Found by an outside-in tester of a new user's first hour (second round).

// `titanic backup NAME` writes --backup-dir/NAME. With the backup
// directory set to the data directory and the backup named after the data
// file, the snapshot was renamed over the live store: the broker went on
// committing into the old, unlinked file, answered "backup written", and
// every ticket it acknowledged from then on was gone at the next start. A
// backup never replaces a file now: that one is refused (exit 4).
func TestBackupNeverReplacesTheLiveStore(t *testing.T) {
	ep, dir := harness.FreeEndpoint(t), t.TempDir()
	args := []string{"--backup-dir", dir}
	br := harness.Broker(t, "broker", ep, dir, args...)
	if _, code := cli(t, "", "submit", "--broker", ep, "keep", "before"); code != 0 {
		t.Fatal("submit before the backup failed")
	}
	out, stderr, bcode := cliStderr(t, "", "backup", "--broker", ep, "titanic.db")
	if bcode != 4 || !strings.Contains(stderr, "exists") {
		t.Errorf("backup titanic.db into the data directory: exit %d, %q %q; want 4, refused as existing", bcode, out, stderr)
	}
	after, code := cli(t, "", "submit", "--broker", ep, "keep", "after")
	after = strings.TrimSpace(after)
	if code != 0 {
		t.Fatalf("submit after the backup: exit %d", code)
	}
	if err := br.Stop(20 * time.Second); err != nil {
		t.Logf("stop: %v", err)
	}
	harness.Broker(t, "broker-again", ep, dir, args...)
	if st, code := cli(t, "", "status", "--broker", ep, after); code != 0 {
		t.Errorf("ticket %s, acknowledged after `titanic backup titanic.db`: status after a restart exits %d (%q); want it kept", after, code, strings.TrimSpace(st))
	}
}

// A worker whose one-frame reply is over the broker's
// limits.max_message_size is cut off by ZeroMQ (ZMQ_MAXMSGSIZE closes the
// connection). The ticket failed with a bare "worker unreachable", which
// sent the user looking for a network fault; it now names the limit.
func TestOversizedWorkerReplySaysWhy(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), "--max-message-size", "64KiB", "--heartbeat", "200ms")
	harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "--heartbeat", "200ms", "big", "--", "head", "-c", "200000", "/dev/zero")
	_, stderr, code := cliStderr(t, "", "submit", "--broker", ep, "--attempts", "1", "--wait", "--wait-timeout", "60s", "big", "x")
	if code != 5 || !strings.Contains(stderr, "max_message_size") {
		t.Errorf("a 200000-byte reply, broker --max-message-size 64KiB: exit %d, %q; want 5 and the failure naming limits.max_message_size", code, strings.TrimSpace(stderr))
	}
}

// `titanic cluster join` against a single node said `400 unknown titanic
// service`, which README gives as the answer of an older broker: it now
// says the broker is a single node, with no membership to change (exit 4).
func TestClusterJoinOnSingleNodeSaysSo(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir())
	_, stderr, code := cliStderr(t, "", "cluster", "join", "--broker", ep, "n4", "127.0.0.1:7004")
	if code != 4 || !strings.Contains(stderr, "single node") {
		t.Errorf("cluster join on a single node: exit %d, %q; want 4 saying it is a single node", code, strings.TrimSpace(stderr))
	}
}
