package titanic

import (
	"errors"
	"os"
	"regexp"
	"syscall"

	"github.com/titanicmq/titanic/internal/leftovers"
)

// backupTemp is the name writeBackup's CreateTemp gives a copy in the
// making (".NAME.DIGITS.tmp"): the backup directory may be shared, and
// other programs' temporary files there are not ours to remove.
var backupTemp = regexp.MustCompile(`^\.[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.[0-9]+\.tmp$`)

// removeBackupLeftovers removes the partial copies (".NAME.N.tmp") that
// backups cut short by a crash left in the backup directory: each as
// large as the store at most, hidden, for good, on the disk whose reserve
// gates submits. A copy being written holds a lock on its file (see
// writeBackup), also when another broker shares the directory: those are
// left alone.
func (s *Service) removeBackupLeftovers() {
	if s.cfg.BackupDir == "" {
		return
	}
	err := leftovers.Remove(s.cfg.BackupDir, backupTemp.MatchString, lockedElsewhere, s.log,
		"removed a partial backup a crash left", "a partial backup a crash left not removed")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("backup directory not read for leftovers", "dir", s.cfg.BackupDir, "err", err)
	}
}

// lockedElsewhere says whether another process holds path's lock (a
// backup being written).
func lockedElsewhere(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return true // gone, or not ours to judge
	}
	defer f.Close()
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil
}
