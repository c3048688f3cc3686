package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/titanicmq/titanic/store"
)

// fill puts tickets in every state, with replies and idempotency keys,
// into s and returns their IDs.
func fill(tb testing.TB, s store.Store, n int) []store.ID {
	tb.Helper()
	var out []store.ID
	for i := range n {
		id := store.NewID()
		o := submit(id, fmt.Sprintf("svc%d", i%3), []byte(fmt.Sprint("body ", i)), nil)
		if i%2 == 0 {
			o.IdemKey = "idem-" + id.String()
		}
		mustApply(tb, s, o)
		switch i % 4 {
		case 1:
			mustApply(tb, s, op(store.OpDispatch, id))
		case 2:
			mustApply(tb, s, store.Op{Kind: store.OpReply, ID: id, Time: t0, Reply: [][]byte{[]byte("r"), {}}})
		case 3:
			mustApply(tb, s, store.Op{Kind: store.OpFail, ID: id, Time: t0, Reason: "gave up"})
		}
		out = append(out, id)
	}
	return out
}

// dump renders everything readable through the Store interface, to
// compare two stores.
func dump(tb testing.TB, s *store.BoltStore) string {
	tb.Helper()
	ctx := context.Background()
	var b bytes.Buffer
	all, err := s.List(ctx, store.Filter{Limit: 1 << 20})
	if err != nil {
		tb.Fatal(err)
	}
	for _, t := range all {
		full, err := s.Get(ctx, t.ID)
		if err != nil {
			tb.Fatal(err)
		}
		_, reply, err := s.Reply(ctx, t.ID)
		if err != nil {
			tb.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %q %s %d %d %q %q %s %s %q %q\n", t.ID, t.Service, t.State, t.Seq, t.Attempts,
			t.IdemKey, t.Reason, t.Created.Format(time.RFC3339Nano), t.Updated.Format(time.RFC3339Nano), full.Body, reply)
	}
	fmt.Fprintf(&b, "unfinished %v\n", ids(unfinished(tb, s)))
	st, err := s.Stats(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	fmt.Fprintf(&b, "next %d counts %v\n", st.NextSeq, st.Services)
	return b.String()
}

func TestSnapshotRestore(t *testing.T) {
	ctx := context.Background()
	src, _ := newStore(t)
	fill(t, src, 40)
	var snap bytes.Buffer
	n, err := src.Snapshot(ctx, &snap)
	if err != nil || n != int64(snap.Len()) {
		t.Fatalf("snapshot: %d bytes (wrote %d), %v", n, snap.Len(), err)
	}
	want := dump(t, src)

	dst, dstPath := newStore(t)
	fill(t, dst, 5) // to be replaced
	if err := dst.Restore(ctx, bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, dst); got != want {
		t.Fatalf("restored content differs:\n got: %s\nwant: %s", got, want)
	}
	if err := dst.Check(ctx); err != nil {
		t.Fatal(err)
	}
	// The restored store carries on where the source was.
	res := mustApply(t, dst, submit(store.NewID(), "svc0"))[0]
	if res.Seq != 41 {
		t.Fatalf("seq after restore = %d, want 41", res.Seq)
	}
	// A snapshot is a store file in its own right.
	copyPath := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(copyPath, snap.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, mustOpen(t, copyPath)); got != want {
		t.Fatal("snapshot opened as a file differs")
	}
	if left, _ := filepath.Glob(dstPath + ".*"); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func TestRestoreRejectsDamage(t *testing.T) {
	ctx := context.Background()
	src, _ := newStore(t)
	fill(t, src, 10)
	var snap bytes.Buffer
	if _, err := src.Snapshot(ctx, &snap); err != nil {
		t.Fatal(err)
	}
	dst, dstPath := newStore(t)
	fill(t, dst, 3)
	before := dump(t, dst)
	for name, data := range map[string][]byte{
		"empty":         nil,
		"garbage":       bytes.Repeat([]byte("garbage!"), 4096),
		"truncated":     snap.Bytes()[:snap.Len()/2],
		"foreign":       foreignBolt(t, false),
		"newer version": foreignBolt(t, true),
	} {
		t.Run(name, func(t *testing.T) {
			err := dst.Restore(ctx, bytes.NewReader(data))
			// A newer data format is refused as a newer titanic's file,
			// not as damage.
			if want := store.ErrCorrupt; name == "newer version" && !errors.Is(err, store.ErrUnsupported) || name != "newer version" && !errors.Is(err, want) {
				t.Fatalf("restore err = %v, want ErrCorrupt (ErrUnsupported for a newer version)", err)
			}
			if got := dump(t, dst); got != before {
				t.Fatal("failed restore changed the store")
			}
		})
	}
	if left, _ := filepath.Glob(dstPath + ".*"); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// TestRestoreUnderLoad swaps the file while other goroutines write and
// read, for the race detector and for the writer's hand-over.
func TestRestoreUnderLoad(t *testing.T) {
	ctx := context.Background()
	src, _ := newStore(t)
	fill(t, src, 20)
	var snap bytes.Buffer
	if _, err := src.Snapshot(ctx, &snap); err != nil {
		t.Fatal(err)
	}
	dst := mustOpenWith(t, t.TempDir()+"/dst.db", store.Options{NoSync: true})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := store.NewID()
				if _, err := dst.Apply(ctx, []store.Op{submit(id, "load")}); err != nil {
					errs <- err
					return
				}
				if _, err := dst.Get(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
					errs <- err
					return
				}
			}
		})
	}
	for range 3 {
		if err := dst.Restore(ctx, bytes.NewReader(snap.Bytes())); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestClose(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "close.db")
	s, err := store.Open(path, store.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	// Apply calls racing with Close either finish (and are durable) or
	// fail with ErrClosed.
	var (
		mu    sync.Mutex
		acked []store.ID
		wg    sync.WaitGroup
	)
	started := make(chan struct{}, 32)
	for range 32 {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := store.NewID()
				_, err := s.Apply(ctx, []store.Op{submit(id, "svc")})
				if i == 0 {
					started <- struct{}{}
				}
				if errors.Is(err, store.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("apply: %v", err)
					return
				}
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
			}
		})
	}
	for range 32 {
		<-started
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	var sink bytes.Buffer
	for name, err := range map[string]error{
		"close":    s.Close(),
		"apply":    second(s.Apply(ctx, []store.Op{submit(store.NewID(), "x")})),
		"empty":    second(s.Apply(ctx, nil)),
		"get":      second(s.Get(ctx, store.NewID())),
		"list":     second(s.List(ctx, store.Filter{})),
		"stats":    second(s.Stats(ctx)),
		"snapshot": second(s.Snapshot(ctx, &sink)),
		"restore":  s.Restore(ctx, bytes.NewReader(nil)),
		"check":    s.Check(ctx),
		"unfinished": s.Unfinished(ctx, func(store.Ticket) error {
			return nil
		}),
	} {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after close: err = %v, want ErrClosed", name, err)
		}
	}
	if _, _, err := s.Reply(ctx, store.NewID()); !errors.Is(err, store.ErrClosed) {
		t.Errorf("reply after close: err = %v", err)
	}
	s2 := mustOpen(t, path)
	for _, id := range acked {
		if _, err := s2.Get(ctx, id); err != nil {
			t.Fatalf("acknowledged ticket %s lost: %v", id, err)
		}
	}
	t.Logf("%d applies acknowledged before close", len(acked))
}

func second[T any](_ T, err error) error { return err }

// foreignBolt returns a bbolt file that is not a titanic store of this
// build: without our buckets, or with a newer format version (99).
func foreignBolt(tb testing.TB, withMeta bool) []byte {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "foreign.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		tb.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		name := "other"
		if withMeta {
			name = "meta"
		}
		b, err := tx.CreateBucket([]byte(name))
		if err != nil {
			return err
		}
		return b.Put([]byte("format"), []byte{0, 0, 0, 99})
	})
	if err := errors.Join(err, db.Close()); err != nil {
		tb.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

func TestOpenGuard(t *testing.T) {
	good, goodPath := newStore(t)
	fill(t, good, 30)
	var snap bytes.Buffer
	if _, err := good.Snapshot(context.Background(), &snap); err != nil {
		t.Fatal(err)
	}
	valid := snap.Bytes()
	pageSize := os.Getpagesize()
	rng := rand.New(rand.NewPCG(3, 4))
	random := make([]byte, 1<<16)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	cases := map[string][]byte{
		"empty":             {},
		"one byte":          {0},
		"garbage":           random,
		"text":              []byte("this is not a database\n"),
		"first page only":   valid[:pageSize],
		"meta pages only":   valid[:2*pageSize],
		"truncated":         valid[:len(valid)-pageSize],
		"foreign bbolt":     foreignBolt(t, false),
		"newer version":     foreignBolt(t, true),
		"zeroed meta pages": append(make([]byte, 2*pageSize), valid[2*pageSize:]...),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.db")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := store.Open(path, store.Options{Logger: testLogger(t)})
			if err == nil {
				s.Close()
				t.Fatal("Open accepted the file")
			}
			// A data format newer than this build's is a newer titanic's
			// file, not damage: the error says to run a newer binary.
			if want := store.ErrCorrupt; name == "newer version" && !errors.Is(err, store.ErrUnsupported) || name != "newer version" && !errors.Is(err, want) {
				t.Fatalf("err = %v, want ErrCorrupt (ErrUnsupported for a newer version)", err)
			}
			after, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(after, data) {
				t.Fatalf("Open modified the rejected file (%v)", err)
			}
		})
	}
	t.Run("new path", func(t *testing.T) {
		dir := t.TempDir()
		s := mustOpen(t, filepath.Join(dir, "new.db"))
		if st, err := s.Stats(context.Background()); err != nil || st.NextSeq != 1 {
			t.Fatalf("fresh store stats = %+v, %v", st, err)
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Fatalf("directory holds %d entries, want only the store", len(entries))
		}
	})
	t.Run("missing directory", func(t *testing.T) {
		_, err := store.Open(filepath.Join(t.TempDir(), "no", "such.db"), store.Options{})
		if err == nil || errors.Is(err, store.ErrCorrupt) {
			t.Fatalf("err = %v, want a plain error", err)
		}
	})
	t.Run("locked", func(t *testing.T) {
		start := time.Now()
		_, err := store.Open(goodPath, store.Options{LockTimeout: 50 * time.Millisecond})
		if err == nil || errors.Is(err, store.ErrCorrupt) {
			t.Fatalf("second open of a locked store: err = %v", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("lock wait took %v", d)
		}
	})
	if !slices.Equal(valid, snap.Bytes()) {
		t.Fatal("test mutated the snapshot")
	}
}
