package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/titanicmq/titanic/store"
)

// TestCompact: a store that held many large tickets, most of them closed,
// shrinks by at least half; every remaining ticket keeps its body, reply,
// state and idempotency key; the store passes its check and takes writes;
// the old file is kept beside it.
func TestCompact(t *testing.T) {
	ctx := context.Background()
	s, path := newStore(t)
	// Random bodies: the store may compress what repeats.
	big := make([]byte, 64<<10)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(big)
	const n = 300
	var keep []store.ID
	// All submitted first, then most closed: the file grows to hold them
	// all, and the closed ones' pages are left free.
	ids := make([]store.ID, n)
	for i := range n {
		ids[i] = store.NewID()
		o := submit(ids[i], fmt.Sprintf("svc%d", i%3), big, []byte(fmt.Sprint(i)))
		o.IdemKey = fmt.Sprintf("key-%d", i)
		mustApply(t, s, o)
	}
	for i, id := range ids {
		switch {
		case i%10 == 0: // kept, done
			r := op(store.OpReply, id)
			r.Reply = [][]byte{[]byte(fmt.Sprintf("reply-%d", i))}
			mustApply(t, s, r)
			keep = append(keep, id)
		case i%10 == 1: // kept, pending
			keep = append(keep, id)
		case i%10 == 2: // kept, failed
			f := op(store.OpFail, id)
			f.Reason = "boom"
			mustApply(t, s, f)
			keep = append(keep, id)
		default:
			mustApply(t, s, op(store.OpReply, id), op(store.OpClose, id))
		}
	}
	type kept struct {
		t     store.Ticket
		reply [][]byte
	}
	before := map[store.ID]kept{}
	for _, id := range keep {
		tk, rep, err := s.Reply(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		full, err := s.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		tk.Body = full.Body
		before[id] = kept{tk, rep}
	}
	statsBefore, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Compact(ctx, path, store.CompactOptions{}); !errors.Is(err, store.ErrInUse) {
		t.Fatalf("compact of an open store: %v, want ErrInUse", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	res, err := store.Compact(ctx, path, store.CompactOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compacted %d -> %d bytes", res.Before, res.After)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != res.After || res.After*2 > res.Before {
		t.Fatalf("file is %d bytes after compaction (reported %d), before %d: want at most half", fi.Size(), res.After, res.Before)
	}
	if old, err := os.Stat(path + store.CompactSuffix); err != nil || old.Size() != res.Before || res.Old != path+store.CompactSuffix {
		t.Fatalf("old file not kept: %v (%+v)", err, res)
	}

	s = mustOpen(t, path)
	defer s.Close()
	if err := s.Check(ctx); err != nil {
		t.Fatalf("check after compaction: %v", err)
	}
	statsAfter, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(statsBefore.Services, statsAfter.Services) {
		t.Fatalf("counts changed: %+v, was %+v", statsAfter.Services, statsBefore.Services)
	}
	for id, k := range before {
		tk, rep, err := s.Reply(ctx, id)
		if err != nil {
			t.Fatalf("ticket %s after compaction: %v", id, err)
		}
		full, err := s.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		tk.Body = full.Body
		if !reflect.DeepEqual(tk, k.t) || !reflect.DeepEqual(rep, k.reply) {
			t.Fatalf("ticket %s changed:\n%+v %q\nwas\n%+v %q", id, tk, rep, k.t, k.reply)
		}
		// Its idempotency key still names it.
		again := submit(store.NewID(), tk.Service, full.Body...)
		again.IdemKey = tk.IdemKey
		if r := applyOne(t, s, again); !r.Duplicate || r.ID != id {
			t.Fatalf("key %q after compaction: %+v, want the duplicate of %s", tk.IdemKey, r, id)
		}
	}
	// The store takes new tickets after the ones it had.
	id := store.NewID()
	mustApply(t, s, submit(id, "svc0", []byte("new")))
	if _, err := s.Get(ctx, id); err != nil {
		t.Fatal(err)
	}
}

// TestCompactRemoveOld: with RemoveOld the old file is gone once the
// compacted one is in place.
func TestCompactRemoveOld(t *testing.T) {
	s, path := newStore(t)
	mustApply(t, s, submit(store.NewID(), "svc", []byte("x")))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	res, err := store.Compact(context.Background(), path, store.CompactOptions{RemoveOld: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + store.CompactSuffix); !errors.Is(err, os.ErrNotExist) || res.Old != "" {
		t.Fatalf("old file still there: %v %+v", err, res)
	}
	if _, err := os.Stat(path + ".compact"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary file left: %v", err)
	}
	s = mustOpen(t, path)
	defer s.Close()
	if err := s.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A compacted file whose indexes were current has them current still:
// the next open does not rebuild them (the copy's transactions are
// numbered anew, and its index mark named none of them, so every open
// after a compaction rebuilt every index, saying an older binary wrote
// the file).
func TestCompactKeepsIndexesCurrent(t *testing.T) {
	ctx := context.Background()
	s, path := newStore(t)
	for i := range 50 {
		mustApply(t, s, submit(store.NewID(), "svc", []byte(fmt.Sprint(i))))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Compact(ctx, path, store.CompactOptions{}); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	r, err := store.Open(path, store.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if strings.Contains(logs.String(), "indexes rebuilt") {
		t.Fatalf("the open after a compaction rebuilt the indexes:\n%s", logs.String())
	}
	n := 0
	if err := r.Unfinished(ctx, func(store.Ticket) error { n++; return nil }); err != nil || n != 50 {
		t.Fatalf("unfinished after the compaction: %d, %v; want 50", n, err)
	}
}
