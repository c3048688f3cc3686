package store

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A data file whose newest meta page is not valid opens at the other
// (the previous commit), as bbolt recovers from a meta write torn by a
// power cut, and says so: from the pages alone that cannot be told from
// a disk that damaged the page, whose commit is then lost, and the broker
// opened it without a word (found by a crash tester).
func TestInvalidNewestMetaPageSaid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "titanic.db")
	s, err := Open(path, Options{NoSync: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	op := Op{Kind: OpSubmit, ID: NewID(), Time: time.Now(), Service: "s", Body: [][]byte{[]byte("x")}}
	if _, err := s.Apply(context.Background(), []Op{op}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	m, err := latestMeta(path)
	if err != nil {
		t.Fatal(err)
	}
	if m.alone {
		t.Fatal("a store closed cleanly has one valid meta page only")
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, m.pageSize), int64(m.txid%2*m.pageSize)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	s, err = Open(path, Options{NoSync: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("open with one valid meta page: %v", err)
	}
	defer s.Close()
	if !strings.Contains(logs.String(), "meta pages is not valid") {
		t.Fatalf("opened at the previous commit without a word; log:\n%s", logs.String())
	}
}
