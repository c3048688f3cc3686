package store_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/titanicmq/titanic/store"
)

// What a crash in the middle of a snapshot install (the incoming store
// being copied beside the data file) or of a reset leaves is removed at
// the next open: nothing else removed it, and each such crash kept a copy
// of up to the whole store on disk for good (found by a review). Other
// files beside the store stay.
func TestOpenRemovesWhatACrashLeftBeside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "titanic.db")
	st, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	left := []string{path + ".restore-1234567890", path + ".reset-42", path + ".reset-42.init-7"}
	kept := []string{path + ".precompact", filepath.Join(dir, "other.restore-1")}
	for _, f := range append(left, kept...) {
		if err := os.WriteFile(f, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	st, err = store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, f := range left {
		if _, err := os.Stat(f); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s, left by a crash, is still there after open (stat: %v)", filepath.Base(f), err)
		}
	}
	for _, f := range kept {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("%s, not the store's leftover, was removed: %v", filepath.Base(f), err)
		}
	}
}
