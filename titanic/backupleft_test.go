package titanic

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// removeBackupLeftovers removed every hidden regular file ending ".tmp"
// in the backup directory, which an operator may point anywhere
// (store.backup_dir, --backup-dir: a shared backup volume): another
// program's temporary file that nothing holds locked was deleted at the
// broker's start, though titanic's copies are only ".NAME.N.tmp" with
// NAME a backup name and N CreateTemp's digits.
func TestBackupLeftoversRemovesOnlyTitanicsCopies(t *testing.T) {
	dir := t.TempDir()
	ours := filepath.Join(dir, ".nightly.123456789.tmp")
	other := filepath.Join(dir, ".pg_dump-in-progress.tmp")
	for _, f := range []string{ours, other} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s := &Service{cfg: Config{BackupDir: dir}, log: slog.New(slog.DiscardHandler)}
	s.removeBackupLeftovers()
	if _, err := os.Stat(ours); err == nil {
		t.Fatalf("titanic's own partial copy %s stayed (the test is wrong)", ours)
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatalf("another program's file in the backup directory was removed at start: %v", err)
	}
}
