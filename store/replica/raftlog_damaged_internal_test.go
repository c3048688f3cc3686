package replica

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/titanicmq/titanic/store"
)

// A truncated or damaged raft log (raft/raft.db) crashed the node that
// opened it: bbolt maps the file and trusts its pages, so a truncated one
// raised SIGBUS and a zeroed page an assertion's panic, each a Go trace
// and exit 2. The log store now fails to open with an error naming the
// file and wrapping store.ErrCorrupt; an intact log still opens.
func TestDamagedRaftLogIsAnError(t *testing.T) {
	base := t.TempDir()
	logs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(base, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	var entries []*raft.Log
	for i := range 200 {
		entries = append(entries, &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: make([]byte, 300)})
	}
	if err := logs.StoreLogs(entries); err != nil {
		t.Fatal(err)
	}
	if err := logs.Close(); err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(filepath.Join(base, "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	for _, tc := range []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"intact", func(b []byte) []byte { return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
		{"zeroed pages", func(b []byte) []byte { clear(b[2*page : 6*page]); return b }},
	} {
		dir := t.TempDir()
		path := filepath.Join(dir, "raft.db")
		if err := os.WriteFile(path, tc.damage(append([]byte(nil), orig...)), 0o600); err != nil {
			t.Fatal(err)
		}
		logs, err := openLogStore(dir)
		if tc.name == "intact" {
			if err != nil {
				t.Fatalf("intact raft log: %v", err)
			}
			_ = logs.Close()
			continue
		}
		if err == nil {
			_ = logs.Close()
			t.Fatalf("%s raft log opened", tc.name)
		}
		if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s raft log: %v: want store.ErrCorrupt naming %s", tc.name, err, path)
		}
	}
}
