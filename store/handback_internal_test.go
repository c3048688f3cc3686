package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"testing"
	"time"
)

// A handover by position is named as by the build before it while its
// fork holds no op taken from the peer (both hand the same sequence
// over, so a try by one and a redo by the other are one handover), and
// otherwise not: this build leaves those ops out where the older one
// handed them back, so positions counted by one would fall on other ops
// of the other's sequence, and the taker left out ops it never took.
func TestHandoverIDSaysTakenOpsLeftOut(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	apply := func(e Entry) {
		t.Helper()
		if r := s.ApplyLog(ctx, []Entry{e}); r[0].Err != nil {
			t.Fatal(r[0].Err)
		}
	}
	// The name the build before this one gave (ordered by last change).
	olderName := func(last []byte) ID {
		h := sha256.New()
		h.Write([]byte("titanic handover by position, ordered by last change\x00"))
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len("backup"))))
		h.Write([]byte("backup"))
		h.Write(binary.BigEndian.AppendUint64(nil, 1))
		h.Write(last)
		return ID(h.Sum(nil)[:len(ID{})])
	}
	name := func() ID {
		t.Helper()
		id, err := s.HandoverID(ctx, "backup", 1)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	apply(Entry{Index: 1, Term: 2, Shared: true})
	apply(Entry{Index: 2, Term: 3, Solo: true, Ops: []Op{{Kind: OpSubmit, ID: NewID(), Time: time.Unix(1700000000, 0), Service: "s"}}})
	if got, want := name(), olderName(journalKey(2, 0)); got != want {
		t.Fatalf("a fork of its own ops alone is named %s, the build before named it %s: a redo across the upgrade is taken whole again", got, want)
	}
	apply(Entry{Index: 3, Term: 3, Solo: true, Ops: []Op{HandoverMark(NewID(), 0, 1), {Kind: OpAdopt, ID: NewID(), Time: time.Unix(1700000000, 0), Service: "s"}}})
	if got := name(); got == olderName(journalKey(3, 1)) {
		t.Fatalf("a fork holding an op taken from the peer is named %s, as by the build before, which handed that op back: positions differ between the two", got)
	}
}
