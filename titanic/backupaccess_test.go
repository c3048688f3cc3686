package titanic

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// README (Security, "Who may change the cluster"): titanic.backup is taken
// only from this host, the members' hosts and security.admin_from; anyone
// else is answered 400 forbidden, before anything else is looked at: a
// caller outside admin_from is not told which backup files exist on the
// broker's host ("backup NAME exists in the backup directory"), nor how
// full its disk is, and holds no backup slot while it is checked.
func TestBackupForbiddenBeforeAnythingElse(t *testing.T) {
	dir := t.TempDir()
	allow := func(from string) error {
		if from == "192.0.2.9" {
			return errors.New("192.0.2.9 is not this host, a member's host, or in security.admin_from")
		}
		return nil
	}
	h := newHarness(t, Config{BackupDir: dir, AllowBackup: allow}, "")
	h.submit("echo", "x")
	if err := os.WriteFile(filepath.Join(dir, "nightly.db"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := h.callFrom("192.0.2.9", tsp.SvcBackup, "nightly.db")
	if !tsp.Is(r, tsp.CodeUnknown, tsp.Forbidden) {
		t.Fatalf("backup of an existing name from an address outside admin_from = %q, want 400 forbidden (it tells an outsider the file exists)", r)
	}
}
