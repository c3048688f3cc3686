package failover

import (
	"strings"
	"testing"

	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/internal/netns"
)

// Through the binary on three hosts: a broker on a with --admin-from b.
// titanic backup from b is taken, from c (a stranger) refused forbidden,
// exit 4, as README says, whatever name c asks for: a stranger who names
// a backup that exists is refused as for any other name, so whoever
// reaches the client endpoint cannot probe the broker host's backup file
// names (nor, by "backup refused: disk full ...", its disk state).
func TestAdminFromBackupStrangerLearnsNothing(t *testing.T) {
	n := netns.New(t)
	a, b, c := n.Host("a"), n.Host("b"), n.Host("c")
	a.Broker(t, "a", t.TempDir(), "--http-listen=", "--admin-from", b.Addr+"/32")
	bin := harness.Binary(t)
	if out, err := b.Run(t, bin, "backup", "--broker", a.Endpoint(5555), "nightly.db"); err != nil {
		t.Fatalf("backup from an admin_from address: %v %s", err, out)
	}
	out, err := c.Run(t, bin, "backup", "--broker", a.Endpoint(5555), "other.db")
	if err == nil || !strings.Contains(string(out), "forbidden") {
		t.Fatalf("backup from a stranger: %v %s; want forbidden", err, out)
	}
	out, _ = c.Run(t, bin, "backup", "--broker", a.Endpoint(5555), "nightly.db")
	if !strings.Contains(string(out), "forbidden") {
		t.Errorf("backup of an existing name from a stranger: %s; want forbidden, as for any other name", out)
	}
}
