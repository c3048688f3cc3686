package store_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
)

// Submits and replies of every size around the write arena's chunks
// (16-64 KiB) are stored whole, each in a transaction of its own after a
// small one: a 40 KB body or reply panicked the writer.
func TestBodiesAroundArenaChunks(t *testing.T) {
	ctx := context.Background()
	for _, n := range []int{16 << 10, 16<<10 + 1, 32<<10 + 1, 40_000, 64<<10 - 100, 64 << 10, 64<<10 + 1} {
		s, _ := newStore(t) // a writer whose transactions were small so far
		if _, err := s.Apply(ctx, []store.Op{submit(store.NewID(), "small", []byte("x"))}); err != nil {
			t.Fatal(err)
		}
		id := store.NewID()
		body := bytes.Repeat([]byte{'b'}, n)
		if _, err := s.Apply(ctx, []store.Op{submit(id, "svc", body)}); err != nil {
			t.Fatalf("submit of %d bytes: %v", n, err)
		}
		reply := bytes.Repeat([]byte{'r'}, n)
		ops := []store.Op{
			{Kind: store.OpDispatch, ID: id, Time: time.Now()},
			{Kind: store.OpReply, ID: id, Time: time.Now(), Reply: [][]byte{reply}},
		}
		if _, err := s.Apply(ctx, ops); err != nil {
			t.Fatalf("reply of %d bytes: %v", n, err)
		}
		tk, err := s.Get(ctx, id)
		if err != nil || !bytes.Equal(bytes.Join(tk.Body, nil), body) {
			t.Fatalf("ticket of %d bytes read back: %v (body %d bytes)", n, err, len(bytes.Join(tk.Body, nil)))
		}
		_, rep, err := s.Reply(ctx, id)
		if err != nil || !bytes.Equal(bytes.Join(rep, nil), reply) {
			t.Fatalf("reply of %d bytes read back: %v (%d bytes)", n, err, len(bytes.Join(rep, nil)))
		}
	}
}
