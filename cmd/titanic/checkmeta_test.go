package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
)

// storeWithCommits makes a data directory whose store holds n tickets, one
// commit each, and returns the store file's path.
func storeWithCommits(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), storeFile)
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		op := store.Op{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(), Service: "s", Body: [][]byte{[]byte("x")}}
		if _, err := st.Apply(context.Background(), []store.Op{op}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func zeroPages(t *testing.T, path string, pageSize int64, pages ...int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range pages {
		if _, err := f.WriteAt(make([]byte, pageSize), p*pageSize); err != nil {
			t.Fatal(err)
		}
	}
}

// A store whose newest meta page is not valid opens at the other, as
// bbolt survives a meta write torn by a power cut, and the broker says
// so (store TestInvalidNewestMetaPageSaid); check called it damage (its
// bbolt check stopped at the zeroed page), exit 1 "corrupt", so an
// operator after a power cut was told to restore a backup. It is a
// warning naming both readings, exit 0; with both meta pages invalid the
// file stays damaged.
func TestCheckOneInvalidMetaPageWarns(t *testing.T) {
	pageSize := int64(os.Getpagesize())
	for _, tc := range []struct {
		name    string
		zero    []int64
		tickets string
	}{
		{"newest", []int64{1}, "2 tickets"}, // 3 commits after the 2 of creation: the newest is txid 5, page 1
		{"older", []int64{0}, "3 tickets"},
	} {
		path := storeWithCommits(t, 3)
		zeroPages(t, path, pageSize, tc.zero...)
		code, stdout, stderr := runCLI(t, context.Background(), "check", "--file", path)
		if code != 0 || !strings.Contains(stdout, ": ok, "+tc.tickets) {
			t.Fatalf("%s meta page zeroed: check exit %d, stdout %q, stderr %q: want 0, ok with %s", tc.name, code, stdout, stderr, tc.tickets)
		}
		for _, want := range []string{"warning", "meta pages", "power cut", "disk damaged the file"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("%s meta page zeroed: check's stderr lacks %q:\n%s", tc.name, want, stderr)
			}
		}
		if strings.Contains(stderr, "corrupt") {
			t.Errorf("%s meta page zeroed: check calls it damage:\n%s", tc.name, stderr)
		}
		if code, _, stderr := runCLI(t, context.Background(), "check", "--data", filepath.Dir(path)); code != 0 {
			t.Errorf("%s meta page zeroed: check --data: exit %d, stderr %q", tc.name, code, stderr)
		}
	}

	path := storeWithCommits(t, 1)
	zeroPages(t, path, pageSize, 0, 1)
	if code, _, stderr := runCLI(t, context.Background(), "check", "--file", path); code == 0 || !strings.Contains(stderr, "corrupt") {
		t.Fatalf("both meta pages zeroed: check exit %d, stderr %q: want damage", code, stderr)
	}
}
