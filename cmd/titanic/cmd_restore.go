package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/titanicmq/titanic/store"
)

// What a restore replaces in a data directory: the store and the raft
// state of the cluster it belonged to. backups/ and forks/ are archives
// the broker only writes to; they stay.
const (
	storeFile = "titanic.db"
	raftDir   = "raft"
)

// runRestore turns a backup into the data directory of a stopped broker
// that starts a new deployment: a single broker, or every node of a new
// pair or group (see the README's "Restore").
func runRestore(e env) error {
	fs := newFlags(e, "restore", "[flags] BACKUP   (make DATA/titanic.db from a backup; the broker must be stopped)")
	data := fs.String("data", "./titanic-data", "data directory of the broker to restore")
	force := fs.Bool("force", false, "replace an existing titanic.db and raft/ (moved aside into DATA/replaced-TIME/, never deleted)")
	if err := e.parseFlags(fs, e.args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want one BACKUP file")
	}
	if err := e.goAhead(); err != nil {
		return err
	}
	backup := fs.Arg(0)
	if fi, err := os.Stat(backup); err != nil {
		return fmt.Errorf("backup: %w", err)
	} else if !fi.Mode().IsRegular() {
		return fmt.Errorf("backup %s: not a regular file", backup)
	}
	if err := os.MkdirAll(*data, 0o750); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	existing, err := restoreTargets(*data)
	if err != nil {
		return err
	}
	if len(existing) > 0 && !*force {
		return fmt.Errorf("%s already holds %v: a restore replaces them; with --force they are moved aside, not deleted", *data, existing)
	}
	if busy, err := store.InUse(filepath.Join(*data, storeFile)); err != nil {
		return err
	} else if busy {
		return fmt.Errorf("%s: a broker is running on it: stop it first", *data)
	}

	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Minute)
	defer cancel()
	tmp, sum, err := prepareRestore(ctx, backup, *data)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // gone once renamed into place
	var aside string
	if len(existing) > 0 {
		if aside, err = moveAside(*data, existing); err != nil {
			return err
		}
	}
	target := filepath.Join(*data, storeFile)
	if err := os.Rename(tmp, target); err != nil {
		return fmt.Errorf("install %s: %w", target, err)
	}
	if err := syncDir(*data); err != nil {
		return err
	}
	printRestore(e.stdout, backup, target, aside, sum)
	return nil
}

// restoreTargets returns what a restore would replace in dir.
func restoreTargets(dir string) ([]string, error) {
	var out []string
	for _, name := range []string{storeFile, raftDir} {
		_, err := os.Lstat(filepath.Join(dir, name))
		switch {
		case err == nil:
			out = append(out, name)
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("data directory: %w", err)
		}
	}
	return out, nil
}

// restoreSummary is what prepareRestore found and did.
type restoreSummary struct {
	tickets, services int
	size              int64
	cleared           store.Replication
}

// prepareRestore copies backup into a temporary file in dir, checks it as
// `titanic check` does, clears the replication bookkeeping of the
// cluster it came from and syncs it. The backup itself is only read. It
// returns the temporary file's path; the caller renames it into place.
func prepareRestore(ctx context.Context, backup, dir string) (tmp string, sum restoreSummary, err error) {
	f, err := os.CreateTemp(dir, "."+storeFile+".restore-*")
	if err != nil {
		return "", sum, fmt.Errorf("restore: %w", err)
	}
	path := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(path) // tmp is "" on this path
		}
	}()
	err = copyFile(f, backup)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", sum, fmt.Errorf("copy %s: %w", backup, err)
	}
	st, err := store.Open(path, store.Options{LockTimeout: 2 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return "", sum, fmt.Errorf("backup %s: %w", backup, err)
	}
	defer func() {
		if cerr := st.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("restore: %w", cerr)
		}
	}()
	if err := st.Check(ctx); err != nil {
		return "", sum, fmt.Errorf("backup %s: %w", backup, err)
	}
	stats, err := st.Stats(ctx)
	if err != nil {
		return "", sum, fmt.Errorf("backup %s: %w", backup, err)
	}
	for _, c := range stats.Services {
		sum.tickets += c.Total()
	}
	sum.services, sum.size = len(stats.Services), stats.Size
	// Each commit is synced (fdatasync) before it returns.
	if sum.cleared, err = st.ResetReplication(ctx); err != nil {
		return "", sum, err
	}
	return path, sum, nil
}

func copyFile(dst *os.File, path string) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	if _, err := io.Copy(dst, src); err != nil {
		return err
	}
	return dst.Sync()
}

// moveAside moves names out of dir into a new dir/replaced-TIME/ and
// returns its path; the store file is only linked there (the restore's
// rename replaces it).
func moveAside(dir string, names []string) (string, error) {
	base := filepath.Join(dir, "replaced-"+time.Now().UTC().Format("20060102-150405"))
	aside := base
	for i := 2; ; i++ {
		err := os.Mkdir(aside, 0o750)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || i > 100 {
			return "", fmt.Errorf("move aside: %w", err)
		}
		aside = base + "-" + strconv.Itoa(i)
	}
	for _, name := range names {
		from, to := filepath.Join(dir, name), filepath.Join(aside, name)
		if name == storeFile {
			// Linked, and replaced in place by the restored copy's
			// rename: at every instant the name holds a whole store,
			// the old or the new. Moved, a restore killed before its
			// copy was in place left no store, and a broker started an
			// empty queue on the directory.
			if err := os.Link(from, to); err == nil {
				continue
			}
		}
		if err := os.Rename(from, to); err != nil {
			return "", fmt.Errorf("move aside: %w", err)
		}
	}
	if err := syncDir(aside); err != nil {
		return "", err
	}
	return aside, syncDir(dir)
}

// syncDir makes renames in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func printRestore(w io.Writer, backup, target, aside string, sum restoreSummary) {
	fmt.Fprintf(w, "restored %s into %s: %d tickets in %d services, %d bytes (checked)\n",
		backup, target, sum.tickets, sum.services, sum.size)
	if c := sum.cleared; c.IsZero() {
		fmt.Fprintln(w, "no replication bookkeeping to clear (a single broker's store, or already reset)")
	} else {
		fmt.Fprintf(w, "cleared the old cluster's replication bookkeeping: applied index %d, %d epoch records, %d solo journal records",
			c.Applied, c.Epochs+c.OldTerms, c.Journal)
		if c.ClusterVersion > 0 {
			// Its members may run other releases: the new cluster
			// raises its own version once every member has reported.
			fmt.Fprintf(w, ", cluster version %d", c.ClusterVersion)
		}
		fmt.Fprintln(w)
	}
	if aside != "" {
		fmt.Fprintf(w, "the previous titanic.db and raft/ are in %s (nothing was deleted)\n", aside)
	}
	fmt.Fprint(w, `next:
  single broker: start it on this data directory.
  pair or group: run this same restore, from this same backup file, on EVERY node
    (each with no raft/ directory), then start them all as a new pair, or as a
    new group with --peers. An empty data directory is not enough: a new raft
    log starts at index 1 and carries only new work, so a node that starts
    empty never receives the restored tickets. A node added to this group
    later needs the same restore first.
  This starts a new deployment; it is not how one node rejoins a running one.
`)
}
