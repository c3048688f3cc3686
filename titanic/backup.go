package titanic

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// titanic.backup [name] writes a consistent snapshot of the store, taken
// online, to BackupDir/name on the broker's host and answers
// 200 | path | bytes. Names are plain file names, so a client cannot
// write anywhere else; without BackupDir the service answers 400.

var backupName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func (s *Service) backup(req broker.Request) [][]byte {
	// The access check comes before anything else: an address that may
	// not ask learns nothing of the backup directory, the disk or a
	// backup being written, and holds nothing meanwhile. It runs off the
	// broker's loop (it may resolve names), a bounded number at once.
	select {
	case s.backupChecks <- struct{}{}:
	default:
		return replyText(tsp.CodeError, tsp.Busy.Text(fmt.Sprintf("%d backup requests being checked", backupChecksInFlight)))
	}
	go func() {
		if s.cfg.AllowBackup != nil {
			err := s.cfg.AllowBackup(req.From)
			<-s.backupChecks
			if err != nil {
				// At most once every lograte.Every, with the count left
				// out since: the refusal costs its caller nothing.
				if n, ok := s.refusals.Allow(time.Now(), "backup refused"); ok {
					s.log.Warn("backup refused", "from", req.From, "err", err, "suppressed", n)
				}
				s.answer(req.Client, req.Service, replyText(tsp.CodeUnknown, tsp.Forbidden.Text(err.Error())))
				return
			}
		} else {
			<-s.backupChecks
		}
		s.answer(req.Client, req.Service, s.serveBackup(req))
	}()
	return nil
}

// backupChecksInFlight bounds the backup requests whose access is being
// checked at once; more are answered busy.
const backupChecksInFlight = 16

// serveBackup serves a backup request from an address that may ask it,
// on the goroutine of its access check, and returns the answer: a
// refusal, or once the backup is written (one at a time), its path and
// size.
func (s *Service) serveBackup(req broker.Request) [][]byte {
	if s.cfg.BackupDir == "" {
		return replyText(tsp.CodeUnknown, "backups are disabled on this broker (no backup directory)")
	}
	if len(req.Body) != 1 || !backupName.Match(req.Body[0]) {
		return replyText(tsp.CodeUnknown, "want one frame: a file name of letters, digits, '.', '_' or '-'")
	}
	name := string(req.Body[0])
	exists := replyText(tsp.CodeUnknown, "backup "+name+" exists in the backup directory: choose another name, or delete it first")
	if _, err := os.Lstat(filepath.Join(s.cfg.BackupDir, name)); err == nil {
		return exists
	}
	// A whole copy of the store: not while the disk is under its reserve
	// or the store over its quota (the reserve is what keeps the store
	// from ENOSPC), and one at a time. Not counted as submits refused.
	if why := cmp.Or(s.adm.quotaShort(), s.adm.diskShort()); why != "" {
		return replyText(tsp.CodeError, "backup refused: "+why)
	}
	if !s.backingUp.CompareAndSwap(false, true) {
		return replyText(tsp.CodeError, tsp.Busy.Text("a backup is being written"))
	}
	defer s.backingUp.Store(false)
	if s.backupStarted != nil {
		s.backupStarted()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	path, n, err := s.writeBackup(ctx, name)
	switch {
	case errors.Is(err, fs.ErrExist):
		return exists
	case err != nil:
		s.log.Error("backup failed", "name", name, "err", err)
		return replyText(tsp.CodeError, "backup failed: "+err.Error())
	}
	s.log.Info("backup written", "path", path, "bytes", n)
	return reply(tsp.CodeOK, []byte(path), []byte(strconv.FormatInt(n, 10)))
}

// writeBackup writes the snapshot to a temporary file, syncs it, and only
// then gives it its name, so a backup file is always complete.
func (s *Service) writeBackup(ctx context.Context, name string) (string, int64, error) {
	if err := os.MkdirAll(s.cfg.BackupDir, 0o750); err != nil {
		return "", 0, fmt.Errorf("backup directory: %w", err)
	}
	path := filepath.Join(s.cfg.BackupDir, name)
	f, err := os.CreateTemp(s.cfg.BackupDir, "."+name+".*.tmp")
	if err != nil {
		return "", 0, fmt.Errorf("create: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the link, only the temporary name goes
	// Held while the copy is written: a broker that starts while this
	// one (sharing the directory) writes leaves it alone, and a copy a
	// crash cut short, which nothing holds, is removed (removeBackupLeftovers).
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return "", 0, fmt.Errorf("lock %s: %w", tmp, err)
	}
	n, err := s.st.Snapshot(ctx, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, fmt.Errorf("write snapshot: %w", err)
	}
	// A link, not a rename: it never replaces a backup of that name
	// written meanwhile (the check before the copy is only the early
	// answer).
	if err := os.Link(tmp, path); err != nil {
		switch {
		case errors.Is(err, fs.ErrExist):
			return "", 0, fmt.Errorf("backup %s exists in the backup directory: %w", name, err)
		case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.ENOTSUP), errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.EMLINK):
			// A file system without hard links (CIFS, exFAT, FUSE
			// object stores): the check and the rename, which leave
			// a moment in which another backup of the name could be
			// replaced (backups run one at a time, so only one that
			// is not this broker's).
			if _, serr := os.Lstat(path); serr == nil {
				return "", 0, fmt.Errorf("backup %s exists in the backup directory: %w", name, fs.ErrExist)
			}
			if err := os.Rename(tmp, path); err != nil {
				return "", 0, fmt.Errorf("rename: %w", err)
			}
		default:
			return "", 0, fmt.Errorf("link: %w", err)
		}
	}
	if d, err := os.Open(s.cfg.BackupDir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return path, n, nil
}
