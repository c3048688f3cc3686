package store

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// queuedIDs reads a whole dispatch index of a service, window by window
// of size w, checking that keys rise strictly.
func queuedIDs(t *testing.T, s *BoltStore, q Queue, service string, level Priority, w int) []ID {
	t.Helper()
	var (
		out  []ID
		r    = QueueRead{Queue: q, Service: service, Level: level, Limit: w}
		prev Key
	)
	for {
		got, err := s.Queued(t.Context(), r)
		if err != nil {
			t.Fatal(err)
		}
		for i, qt := range got {
			if (r.Started || i > 0) && !prev.Less(qt.Key) {
				t.Fatalf("%v of %s: key %+v after %+v", q, service, qt.Key, prev)
			}
			prev = qt.Key
			out = append(out, qt.ID)
		}
		if len(got) < w {
			return out
		}
		r.After, r.Started = prev, true
	}
}

func openTest(t *testing.T, path string) *BoltStore {
	t.Helper()
	s, err := Open(path, Options{NoSync: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The indexes follow every op: levels in Seq order, delayed tickets by
// due time, deadlines of never-dispatched tickets; a dispatched ticket is
// ready (a restart redelivers it), a finished one is in none.
func TestQueuedIndexes(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "t.db"))
	defer s.Close()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var high, normal, low, delayed, deadline []ID
	var ops []Op
	for i := range 60 {
		id := NewID()
		op := Op{Kind: OpSubmit, ID: id, Time: t0, Service: "s", Body: [][]byte{{byte(i)}}}
		switch i % 4 {
		case 0:
			op.Priority = PriorityHigh
			high = append(high, id)
		case 1:
			normal = append(normal, id)
		case 2:
			op.Priority = PriorityLow
			op.Deadline = t0.Add(time.Duration(60-i) * time.Second)
			low = append(low, id)
			deadline = append([]ID{id}, deadline...)
		case 3:
			op.Due = t0.Add(time.Duration(100-i) * time.Millisecond)
			delayed = append([]ID{id}, delayed...)
		}
		ops = append(ops, op)
	}
	ops = append(ops, Op{Kind: OpSubmit, ID: NewID(), Time: t0, Service: "other"})
	if _, err := s.Apply(ctx, ops); err != nil {
		t.Fatal(err)
	}
	check := func(what string, q Queue, level Priority, want []ID) {
		t.Helper()
		for _, w := range []int{1, 3, 100} {
			if got := queuedIDs(t, s, q, "s", level, w); !slices.Equal(got, want) {
				t.Fatalf("%s (window %d): %d tickets %v, want %d %v", what, w, len(got), got, len(want), want)
			}
		}
	}
	check("high", QueueReady, PriorityHigh, high)
	check("normal", QueueReady, PriorityNormal, normal)
	check("low", QueueReady, PriorityLow, low)
	check("delayed", QueueDelayed, 0, delayed)
	check("deadline", QueueDeadline, 0, deadline)
	c, err := s.Counts(ctx)
	if err != nil || c["s"].Delayed != len(delayed) || c["other"].Delayed != 0 {
		t.Fatalf("counts %+v %v, want %d delayed", c, err, len(delayed))
	}

	// A delayed ticket dispatched is ready (at its Seq) and counted out
	// of the delayed; requeued with a due time it is delayed again;
	// requeued without, ready. A low ticket dispatched leaves the
	// deadline index for good; one closed leaves every index.
	d, l0, l1 := delayed[0], low[0], low[1]
	res, err := s.Apply(ctx, []Op{
		{Kind: OpDispatch, ID: d, Time: t0},
		{Kind: OpDispatch, ID: l0, Time: t0},
		{Kind: OpRequeue, ID: l0, Time: t0},
		{Kind: OpClose, ID: l1, Time: t0},
		{Kind: OpReply, ID: high[0], Time: t0},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res[3].Unqueued != QueueReady || res[3].Service != "s" || res[4].Unqueued != QueueReady || res[0].Unqueued != 0 {
		t.Fatalf("unqueued: close %v %q, reply %v, dispatch %v", res[3].Unqueued, res[3].Service, res[4].Unqueued, res[0].Unqueued)
	}
	normalWithD := append(slices.Clone(normal), d)
	slices.SortFunc(normalWithD, func(a, b ID) int {
		ta, _ := s.Get(ctx, a)
		tb, _ := s.Get(ctx, b)
		return int(ta.Seq) - int(tb.Seq)
	})
	check("normal after dispatch", QueueReady, PriorityNormal, normalWithD)
	check("delayed after dispatch", QueueDelayed, 0, delayed[1:])
	check("low after close", QueueReady, PriorityLow, append([]ID{l0}, low[2:]...))
	check("high after reply", QueueReady, PriorityHigh, high[1:])
	check("deadline after dispatch and close", QueueDeadline, 0, slices.DeleteFunc(slices.Clone(deadline), func(x ID) bool { return x == l0 || x == l1 }))
	if _, err := s.Apply(ctx, []Op{{Kind: OpRequeue, ID: d, Time: t0, Lifecycle: Lifecycle{Due: t0.Add(-time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	check("delayed after requeue", QueueDelayed, 0, append([]ID{d}, delayed[1:]...))
	check("normal after requeue", QueueReady, PriorityNormal, normal)
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// A file last written by a binary that does not keep the indexes (here:
// a write transaction that only adds a ticket's records, as the first
// release's submit would, or drops the indexes) is reindexed at Open.
func TestIndexesRebuiltAfterForeignWrite(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "t.db")
	s := openTest(t, path)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var want []ID
	for range 5 {
		id := NewID()
		want = append(want, id)
		if _, err := s.Apply(ctx, []Op{{Kind: OpSubmit, ID: id, Time: t0, Service: "s"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// "Another binary" writes a ticket: records, FIFO entry, counter,
	// sequence; no index, no mark.
	foreign := NewID()
	want = append(want, foreign)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		tn, err := newTxn(tx, new(txnBufs))
		if err != nil {
			return err
		}
		tk := Ticket{ID: foreign, Service: "s", State: StatePending, Seq: tn.seq, Created: t0, Updated: t0}
		tn.seq++
		tn.seqDirty = true
		if err := tn.putTicket(&tk); err != nil {
			return err
		}
		if err := tn.bodies.Put(foreign[:], encodeFrames(nil)); err != nil {
			return err
		}
		if err := tn.enqueue(&tk); err != nil {
			return err
		}
		tn.deltas[countKey{"s", StatePending}]++
		// finish without the index part: what an older binary writes.
		if err := tn.meta.Put(seqKey, seqKeyOf(tn.seq)); err != nil {
			return err
		}
		return tn.counters.Put(countsKeyOf(countKey{"s", StatePending}), seqKeyOf(6))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	s, err = Open(path, Options{NoSync: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if got := queuedIDs(t, s, QueueReady, "s", PriorityNormal, 2); !slices.Equal(got, want) {
		t.Fatalf("after reopen: %v, want %v", got, want)
	}
	if !bytes.Contains(logs.Bytes(), []byte("dispatch indexes rebuilt")) || !bytes.Contains(logs.Bytes(), []byte("older binary")) {
		t.Fatalf("no rebuild logged: %s", logs.String())
	}
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// A first-release store has no index buckets at all.
	db, err = bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range indexBuckets {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
		return tx.Bucket(metaBucket).Delete(ixTxKey)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	s, err = Open(path, Options{NoSync: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := queuedIDs(t, s, QueueReady, "s", PriorityNormal, 4); !slices.Equal(got, want) {
		t.Fatalf("after reopen without indexes: %v, want %v", got, want)
	}
	if !bytes.Contains(logs.Bytes(), []byte("missing")) {
		t.Fatalf("no rebuild logged: %s", logs.String())
	}

	// A clean close and reopen by this build rebuilds nothing.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	s2, err := Open(path, Options{NoSync: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if bytes.Contains(logs.Bytes(), []byte("rebuilt")) {
		t.Fatalf("rebuilt after a clean reopen: %s", logs.String())
	}
}

// A restore of a snapshot whose indexes are stale leaves them right.
func TestRestoreRebuildsStaleIndexes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := openTest(t, filepath.Join(dir, "src.db"))
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var want []ID
	for range 3 {
		id := NewID()
		want = append(want, id)
		if _, err := src.Apply(ctx, []Op{{Kind: OpSubmit, ID: id, Time: t0, Service: "s", Lifecycle: Lifecycle{Due: t0}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	// Stale: the mark names an older transaction.
	db, err := bolt.Open(filepath.Join(dir, "src.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(delayedBucket); err != nil {
			return err
		}
		_, err := tx.CreateBucket(delayedBucket)
		return err
	})
	if err == nil {
		err = db.View(func(tx *bolt.Tx) error { _, err := tx.WriteTo(&snap); return err })
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	dst := openTest(t, filepath.Join(dir, "dst.db"))
	defer dst.Close()
	if err := dst.Restore(ctx, &snap); err != nil {
		t.Fatal(err)
	}
	if got := queuedIDs(t, dst, QueueDelayed, "s", 0, 2); !slices.Equal(got, want) {
		t.Fatalf("after restore: %v, want %v", got, want)
	}
	if err := dst.Check(ctx); err != nil {
		t.Fatal(err)
	}
}
