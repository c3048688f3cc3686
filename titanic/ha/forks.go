package ha

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// forkLayout names a fork's directory under PairConfig.ForkDir: the UTC
// time it was set aside, fixed width, so that names sort as times do.
const forkLayout = "20060102T150405.000000000Z"

// forkName is the directory name of a fork set aside at t.
func forkName(t time.Time) string { return t.UTC().Format(forkLayout) }

// pruneForks removes all but the newest keep forks under dir (keep < 0:
// none is removed). A fork is only ever set aside once everything in it
// is held by the peer too (reconcile hands it over first, or it held
// nothing the peer lacked), so removing it loses nothing acknowledged;
// what goes is the operator's copy for inspection, which otherwise grows
// by a whole store per split brain. Entries whose names are not fork
// names are left alone. It returns the forks removed.
func pruneForks(dir string, keep int, log *slog.Logger) []string {
	if keep < 0 || dir == "" {
		return nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		if !os.IsNotExist(err) {
			log.Warn("reading the forks directory", "dir", dir, "err", err)
		}
		return nil
	}
	var forks []string
	for _, e := range entries {
		if _, err := time.Parse(forkLayout, e.Name()); err == nil && e.IsDir() {
			forks = append(forks, e.Name())
		}
	}
	if len(forks) <= keep {
		return nil
	}
	slices.Sort(forks)
	var removed []string
	for _, name := range forks[:len(forks)-keep] {
		path := filepath.Join(dir, name)
		size := dirSize(path)
		if err := os.RemoveAll(path); err != nil {
			log.Warn("removing an old fork", "dir", path, "err", err)
			continue
		}
		log.Info("removed an old fork (handed over before it was set aside; pair.keep_forks)", "dir", path, "bytes", size, "kept", keep)
		removed = append(removed, name)
	}
	return removed
}

// dirSize is the bytes of the regular files under path (0 on error), for
// the log.
func dirSize(path string) int64 {
	var n int64
	_ = filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if info, err := d.Info(); err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
		return nil
	})
	return n
}
