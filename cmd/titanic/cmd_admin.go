package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

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
	c, err := cf.dial(e)
	if err != nil {
		return err
	}
	defer c.Close()
	rep, err := c.Request(e.ctx, tsp.SvcBackup, [][]byte{[]byte(fs.Arg(0))})
	if err != nil {
		return err
	}
	if len(rep) != 3 || string(rep[0]) != tsp.CodeOK {
		return fmt.Errorf("backup: %q", rep)
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
	if err := e.parseFlags(fs, e.args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	path := *file
	if path == "" {
		path = filepath.Join(*data, "titanic.db")
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("check: %w", err)
	}
	st, err := store.Open(path, store.Options{LockTimeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, store.ErrCorrupt) {
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
	return nil
}
