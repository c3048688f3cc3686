package titanic

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
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
	entries, err := os.ReadDir(s.cfg.BackupDir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("backup directory not read for leftovers", "dir", s.cfg.BackupDir, "err", err)
		}
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !backupTemp.MatchString(name) {
			continue
		}
		path := filepath.Join(s.cfg.BackupDir, name)
		size, held := lockedElsewhere(path)
		if held {
			continue
		}
		if err := os.Remove(path); err != nil {
			s.log.Warn("a partial backup a crash left not removed", "file", path, "err", err)
			continue
		}
		s.log.Info("removed a partial backup a crash left", "file", path, "bytes", size)
	}
}

// lockedElsewhere says whether another process holds path's lock (a
// backup being written), with the file's size.
func lockedElsewhere(path string) (int64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, true // gone, or not ours to judge
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return 0, true
	}
	var size int64
	if fi, err := f.Stat(); err == nil {
		size = fi.Size()
	}
	return size, false
}
