package main

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/titanicmq/titanic/store"
)

// README (Upgrades and releases): a data file of a newer format is
// "refused at start-up as written by a newer titanic ("run a newer titanic
// on it"), never as damage". The offline commands an operator runs on the
// data directory must say the same (check and compact called it damaged,
// found by a reviewer of upgrades): not that the file is corrupt, not to
// restore a backup, not that a broker may hold it.
func TestNewerFormatNotReportedAsDamage(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "titanic.db")
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	// What a later release writes: the next format (same layout).
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("format"), binary.BigEndian.AppendUint32(nil, store.FormatVersion+1))
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"check", "--data", dir},
		{"check", "--file", path},
		{"compact", "--data", dir},
	} {
		code, _, stderr := runCLI(t, context.Background(), args...)
		if code == 0 || !strings.Contains(stderr, "run a newer titanic on it") {
			t.Errorf("titanic %s: exit %d, stderr %q: want a refusal saying to run a newer titanic", strings.Join(args, " "), code, stderr)
			continue
		}
		for _, misleading := range []string{"corrupt", "restore a backup", "is a broker running on it"} {
			if strings.Contains(stderr, misleading) {
				t.Errorf("titanic %s on a newer titanic's data file says %q (the file is not damaged, and no broker holds it):\n%s",
					strings.Join(args, " "), misleading, stderr)
			}
		}
	}
}
