package store

import (
	"bytes"
	"testing"
)

// Values cut from the arena never share bytes, whatever their sizes and
// however far an encoder appends past what it asked for, and a reset
// arena holds the previous transaction's total in one chunk.
func TestTxnBufsValuesStayApart(t *testing.T) {
	var b txnBufs
	for round := range 3 {
		last := b.used
		b.reset()
		if cap(b.vals) < min(last, arenaMax) {
			t.Fatalf("round %d: chunk of %d bytes after a reset, the last transaction took %d", round, cap(b.vals), last)
		}
		var vals [][]byte
		want := 0
		for i, n := range []int{8, 100, arenaChunk - 50, 3, arenaOwn + 1, 16, 2 * arenaChunk} {
			v := b.value(n)
			if len(v) != 0 || cap(v) != n {
				t.Fatalf("round %d: value(%d) has len %d cap %d", round, n, len(v), cap(v))
			}
			// One byte more than asked: the append must reallocate,
			// not write into the next value.
			v = append(v, bytes.Repeat([]byte{byte(i + 1)}, n+1)...)
			vals = append(vals, v)
			want += n
		}
		for i, v := range vals {
			if !bytes.Equal(v, bytes.Repeat([]byte{byte(i + 1)}, len(v))) {
				t.Fatalf("round %d: value %d was overwritten", round, i)
			}
		}
		if k := b.keep([]byte("kept")); string(k) != "kept" {
			t.Fatalf("keep = %q", k)
		}
		if b.used != want+len("kept") {
			t.Fatalf("round %d: used %d, want %d", round, b.used, want+len("kept"))
		}
	}
}

func TestNamesInterns(t *testing.T) {
	var n names
	a := n.of([]byte("svc"))
	if b := n.of([]byte("svc")); a != "svc" || b != "svc" || len(n.m) != 1 {
		t.Fatalf("of: %q %q, %d names", a, b, len(n.m))
	}
	for i := range maxNames + 10 {
		n.of([]byte{byte(i), byte(i >> 8)})
	}
	if len(n.m) > maxNames {
		t.Fatalf("%d names, bound %d", len(n.m), maxNames)
	}
}

// A value up to arenaOwn larger than the next chunk would be gets a chunk
// of its size: value(40 KB) after a 16 KB chunk sliced past a 32 KB one
// and panicked the writer (any submit or reply of 32-64 KB did).
func TestTxnBufsValueLargerThanNextChunk(t *testing.T) {
	for _, n := range []int{arenaChunk + 1, 2*arenaChunk + 1, 40_005, arenaOwn} {
		var b txnBufs
		b.reset()
		_ = b.value(10) // the first chunk, arenaChunk
		v := b.value(n)
		if len(v) != 0 || cap(v) != n {
			t.Fatalf("value(%d) after a small one: len %d cap %d", n, len(v), cap(v))
		}
	}
}
