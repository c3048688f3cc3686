package store

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// A store written by the first release kept a window of entry terms in
// the meta bucket; its history is read from them, and the first apply
// turns them into epochs.
func TestHistoryFromFirstRelease(t *testing.T) {
	ctx := context.Background()
	s, err := Open(filepath.Join(t.TempDir(), "t.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(metaBucket)
		for i := uint64(5); i <= 9; i++ {
			term := uint64(2)
			if i >= 8 {
				term = 3
			}
			if err := meta.Put(binary.BigEndian.AppendUint64([]byte("term/"), i), binary.AppendUvarint(nil, term)); err != nil {
				return err
			}
		}
		return meta.Put(appliedKey, binary.BigEndian.AppendUint64(nil, 9))
	})
	if err != nil {
		t.Fatal(err)
	}
	h, err := s.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.Applied != 9 || h.TermAt(6) != 2 || h.TermAt(8) != 3 || h.TermAt(4) != 0 {
		t.Fatalf("history of a first-release store: %+v", h)
	}
	if r := s.ApplyLog(ctx, []Entry{{Index: 10, Term: 3}}); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	h2, err := s.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h2.Applied != 10 || h2.TermAt(6) != 2 || h2.TermAt(10) != 3 || len(h2.Epochs) != 2 {
		t.Fatalf("history after conversion: %+v", h2)
	}
	_ = s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(metaBucket).Cursor().Seek([]byte("term/")); k != nil && string(k[:5]) == "term/" {
			t.Errorf("first-release term records left behind: %q", k)
		}
		return nil
	})
}
