package store

import (
	"context"

	bolt "go.etcd.io/bbolt"
)

// HandoversKept counts the handovers s keeps as taken (for tests of the
// package store_test).
func HandoversKept(s *BoltStore) (int, error) {
	n := 0
	err := s.view(context.Background(), func(tx *bolt.Tx) error {
		if b := tx.Bucket(handoversBucket); b != nil {
			n = b.Stats().KeyN
		}
		return nil
	})
	return n, err
}
