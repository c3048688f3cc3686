// Package leftovers removes the files a crash left in a directory: the
// store's beside its data file, the backups' in the backup directory.
package leftovers

import (
	"log/slog"
	"os"
	"path/filepath"
)

// Remove removes the regular files of dir whose names match, except those
// held says another process holds (nil: none is), and logs each: removed
// at info, with the file and its size in bytes, or failed at warning, with
// the file and the error. It returns the error of listing dir, if any.
func Remove(dir string, match func(name string) bool, held func(path string) bool, log *slog.Logger, removed, failed string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !match(e.Name()) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		fi, err := os.Lstat(path)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if held != nil && held(path) {
			continue
		}
		if err := os.Remove(path); err != nil {
			log.Warn(failed, "file", path, "err", err)
			continue
		}
		log.Info(removed, "file", path, "bytes", fi.Size())
	}
	return nil
}
