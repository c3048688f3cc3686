package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// backupWait is how long the backup command waits for its answer: the
// broker's own bound on writing a backup.
const backupWait = 30 * time.Minute

// runBackup asks a running broker for an online, consistent snapshot.
func runBackup(e env) error {
	fs := newFlags(e, "backup", "[flags] NAME   (written as BACKUP-DIR/NAME on the broker's host)")
	cf := addClientFlags(fs)
	if err := e.parseFlags(fs, e.args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want one NAME")
	}
	// One try, as long as the broker gives a backup: a try timed out and
	// sent again found the first still writing (busy), and the command
	// failed with the backup written.
	c, err := cf.dial(e, func(cfg *client.Config) {
		cfg.Timeout, cfg.Retries = max(cfg.Timeout, backupWait), 1
	})
	if err != nil {
		return err
	}
	defer c.Close()
	rep, err := c.Request(e.ctx, tsp.SvcBackup, [][]byte{[]byte(fs.Arg(0))})
	if err != nil {
		return err
	}
	if len(rep) != 3 || string(rep[0]) != tsp.CodeOK {
		return adminRefusal(tsp.SvcBackup, rep)
	}
	fmt.Fprintf(e.stdout, "%s\t%s bytes\n", rep[1], rep[2])
	return nil
}

// runCheck verifies a data file offline: the broker must be stopped (the
// file is locked while it runs).
func runCheck(e env) error {
	fs := newFlags(e, "check", "[flags]   (verify the data file of a stopped broker, or a backup)")
	data := fs.String("data", "./titanic-data", "data directory of the broker")
	file := fs.String("file", "", "a data file to check instead (a backup)")
	if err := parseNoArgs(e, fs); err != nil {
		return err
	}
	if err := e.goAhead(); err != nil {
		return err
	}
	path := *file
	if path == "" {
		path = filepath.Join(*data, "titanic.db")
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("check: %w", err)
	}
	// Read before the store opens: a commit at open (an index rebuilt)
	// would write over the page that is not valid.
	validTx, oneMeta := store.InvalidMetaPage(path)
	// The store's own warning of that page is said below, for check.
	st, err := store.Open(path, store.Options{LockTimeout: 2 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		if errors.Is(err, store.ErrCorrupt) || errors.Is(err, store.ErrUnsupported) {
			return fmt.Errorf("check %s: %w", path, err)
		}
		return fmt.Errorf("check %s: %w (is a broker running on it? stop it, or check a backup)", path, err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Minute)
	defer cancel()
	if err := st.Check(ctx); err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	stats, err := st.Stats(ctx)
	if err != nil {
		return err
	}
	total := 0
	for _, c := range stats.Services {
		total += c.Total()
	}
	fmt.Fprintf(e.stdout, "%s: ok, %d tickets in %d services, %d bytes\n", path, total, len(stats.Services), stats.Size)
	if oneMeta {
		// Not damage: from the pages alone it cannot be told from a
		// meta write torn by a power cut, which bbolt is made to survive.
		fmt.Fprintf(e.stderr, "titanic check: warning: one of the two meta pages of %s is not valid: checked at the other (transaction %d), as the broker opens it;"+
			" after a crash or power cut this is expected (a torn meta write: that commit was never acknowledged, nothing is lost),"+
			" otherwise the disk damaged the file and its last commit is lost (restore a backup, or rejoin a replica)\n", path, validTx)
	}
	return nil
}

// runCompact rewrites a stopped broker's data file without the space of
// closed tickets (store.Compact), which bbolt never gives back itself.
func runCompact(e env) error {
	fs := newFlags(e, "compact", "[flags]   (shrink the data file of a stopped broker: in a group one node at a time; a pair stopped whole)")
	data := fs.String("data", "./titanic-data", "data directory of the broker")
	removeOld := fs.Bool("remove-old", false, "delete the old file once the compacted one is in place and checked (default: keep it as titanic.db"+store.CompactSuffix+")")
	if err := parseNoArgs(e, fs); err != nil {
		return err
	}
	if err := e.goAhead(); err != nil {
		return err
	}
	path := filepath.Join(*data, "titanic.db")
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	ctx, cancel := context.WithTimeout(e.ctx, time.Hour)
	defer cancel()
	res, err := store.Compact(ctx, path, store.CompactOptions{RemoveOld: *removeOld})
	if err != nil {
		if errors.Is(err, store.ErrInUse) {
			return fmt.Errorf("%w: a broker holds %s: stop it first (in a group one node at a time; a pair: stop both nodes)", err, path)
		}
		return err
	}
	fmt.Fprintf(e.stdout, "%s: compacted and checked, %d -> %d bytes (%.0f%%)\n", path, res.Before, res.After, 100*float64(res.After)/float64(max(res.Before, 1)))
	if res.Old != "" {
		fmt.Fprintf(e.stdout, "the old file is kept as %s: delete it once the broker serves from the new one\n", res.Old)
	}
	return nil
}
