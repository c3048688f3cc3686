package store

import (
	"context"
	"encoding/binary"
	"errors"
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

// The first release recorded the terms of command entries only: the
// configuration entry that opens a new leader's term (index 8 here, term 3)
// has no record. Its index must read as unknown, not as the earlier term:
// replayed from the log after an upgrade, it is not a divergence (it was,
// and the upgraded node of a pair stopped at every rejoin).
func TestFirstReleaseConfigurationEntryGap(t *testing.T) {
	ctx := context.Background()
	s, err := Open(filepath.Join(t.TempDir(), "t.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(metaBucket)
		for i := uint64(1); i <= 10; i++ {
			if i == 8 {
				continue // the new leader's AddVoter: no record
			}
			term := uint64(2)
			if i > 8 {
				term = 3
			}
			if err := meta.Put(binary.BigEndian.AppendUint64([]byte("term/"), i), binary.AppendUvarint(nil, term)); err != nil {
				return err
			}
		}
		return meta.Put(appliedKey, binary.BigEndian.AppendUint64(nil, 10))
	})
	if err != nil {
		t.Fatal(err)
	}
	h, err := s.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.TermAt(7) != 2 || h.TermAt(8) != 0 || h.TermAt(9) != 3 {
		t.Fatalf("terms at 7, 8, 9 = %d, %d, %d; want 2, 0 (unknown), 3", h.TermAt(7), h.TermAt(8), h.TermAt(9))
	}
	// Replaying the log from the start (a rejoin keeps the store): entry 8
	// in term 3 is no divergence, and neither are the others.
	var entries []Entry
	for i := uint64(1); i <= 11; i++ {
		term := uint64(2)
		if i >= 8 {
			term = 3
		}
		entries = append(entries, Entry{Index: i, Term: term})
	}
	for i, r := range s.ApplyLog(ctx, entries) {
		if r.Err != nil && !errors.Is(r.Err, ErrApplied) {
			t.Fatalf("replay of entry %d: %v", i+1, r.Err)
		}
	}
	h2, err := s.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h2.Applied != 11 || h2.TermAt(8) != 0 || h2.TermAt(11) != 3 {
		t.Fatalf("history after the replay: %+v", h2)
	}
}
