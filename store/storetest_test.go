package store_test

import (
	"path/filepath"
	"testing"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/storetest"
)

// TestConformance runs the store contract's suite against BoltStore.
// NoSync: the suite is about semantics; durability across crashes is
// crash_test.go's.
func TestConformance(t *testing.T) {
	opts := store.Options{NoSync: true}
	paths := map[store.Store]string{}
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) store.Store {
			path := filepath.Join(t.TempDir(), "titanic.db")
			s := mustOpenWith(t, path, opts)
			paths[s] = path
			return s
		},
		Reopen: func(t *testing.T, s store.Store) store.Store {
			path := paths[s]
			if err := s.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			r := mustOpenWith(t, path, opts)
			paths[r] = path
			return r
		},
	})
}
