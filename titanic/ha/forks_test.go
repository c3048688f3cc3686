package ha

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestPruneForks(t *testing.T) {
	base := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	// Created out of order: the prune goes by the time in the name.
	forks := []string{forkName(base.Add(3 * time.Second)), forkName(base), forkName(base.Add(2 * time.Second)), forkName(base.Add(time.Second))}
	others := []string{"notes", "20261206"}
	cases := []struct {
		keep        int
		wantRemoved []string
	}{
		{keep: -1},
		{keep: 4},
		{keep: 9},
		{keep: 3, wantRemoved: []string{forks[1]}},
		{keep: 1, wantRemoved: []string{forks[1], forks[3], forks[2]}},
	}
	for _, c := range cases {
		dir := t.TempDir()
		for _, name := range append(slices.Clone(forks), others...) {
			if err := os.MkdirAll(filepath.Join(dir, name, "snapshots"), 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name, "titanic.db"), []byte("store"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		// A file named as a fork is not one.
		stray := forkName(base.Add(-time.Hour))
		if err := os.WriteFile(filepath.Join(dir, stray), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		removed := pruneForks(dir, c.keep, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if !slices.Equal(removed, c.wantRemoved) {
			t.Errorf("keep %d: removed %v, want %v", c.keep, removed, c.wantRemoved)
		}
		for _, name := range append(append(slices.Clone(forks), others...), stray) {
			_, err := os.Stat(filepath.Join(dir, name))
			if gone := slices.Contains(c.wantRemoved, name); gone != os.IsNotExist(err) {
				t.Errorf("keep %d: %s: removed %v, stat error %v", c.keep, name, gone, err)
			}
		}
	}
}

func TestPruneForksMissingDir(t *testing.T) {
	if got := pruneForks(filepath.Join(t.TempDir(), "forks"), 1, slog.New(slog.NewTextHandler(io.Discard, nil))); got != nil {
		t.Fatalf("removed %v from a directory that does not exist", got)
	}
}
