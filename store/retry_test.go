package store_test

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/titanicmq/titanic/store"
)

// A failed ticket given another round is pending again, behind what was
// queued meanwhile, with its attempts from zero; the counters and the
// FIFO index follow, and Check finds the store consistent.
func TestRetryFailed(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	id, later := store.NewID(), store.NewID()
	mustApply(t, s, submit(id, "echo", []byte("job")), op(store.OpDispatch, id))
	fail := op(store.OpFail, id)
	fail.Reason = "worker said no"
	mustApply(t, s, fail, submit(later, "echo"))

	res := mustApply(t, s, store.Op{Kind: store.OpRetry, ID: id, Time: at(5)})[0]
	if res.State != store.StatePending || res.Attempts != 0 || res.Service != "echo" || res.Seq <= 2 {
		t.Fatalf("retry result = %+v, want pending, 0 attempts, service echo, a Seq after the later submit's", res)
	}
	tk, err := s.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if tk.State != store.StatePending || tk.Attempts != 0 || tk.Reason != "" || tk.Seq != res.Seq || !tk.Updated.Equal(at(5)) || string(tk.Body[0]) != "job" {
		t.Fatalf("ticket after retry = %+v", tk)
	}
	var order []store.ID
	for _, u := range unfinished(t, s) {
		order = append(order, u.ID)
	}
	if len(order) != 2 || order[0] != later || order[1] != id {
		t.Fatalf("unfinished order = %v, want the later submit first, then the retried ticket", order)
	}
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := st.Services["echo"]; c.Pending != 2 || c.Failed != 0 {
		t.Fatalf("counts = %+v, want 2 pending, 0 failed", c)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatalf("check after retry: %v", err)
	}
	// It runs again and can be answered.
	mustApply(t, s, op(store.OpDispatch, id))
	if r := applyOne(t, s, store.Op{Kind: store.OpReply, ID: id, Time: at(9), Reply: [][]byte{[]byte("ok")}}); r.Err != nil || r.State != store.StateDone || r.Attempts != 1 {
		t.Fatalf("reply after retry = %+v", r)
	}
}

// Only a failed ticket can be retried: a pending or running one would run
// twice, a done one has its answer.
func TestRetryNotFailed(t *testing.T) {
	s, _ := newStore(t)
	pending, running, done := store.NewID(), store.NewID(), store.NewID()
	mustApply(t, s, submit(pending, "echo"), submit(running, "echo"), submit(done, "echo"),
		op(store.OpDispatch, running), op(store.OpReply, done))
	for _, tc := range []struct {
		id   store.ID
		want error
	}{
		{pending, store.ErrNotFailed},
		{running, store.ErrNotFailed},
		{done, store.ErrNotFailed},
		{store.NewID(), store.ErrNotFound},
	} {
		r := applyOne(t, s, store.Op{Kind: store.OpRetry, ID: tc.id, Time: at(3)})
		if !errors.Is(r.Err, tc.want) {
			t.Errorf("retry of %s: %v, want %v", tc.id, r.Err, tc.want)
		}
	}
	if err := s.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A batch is written in the oldest ops record version that holds its
// kinds, so that a cluster that uses no newer kind stays readable by the
// members of older releases.
func TestOpsRecordVersionPerKind(t *testing.T) {
	id := store.NewID()
	for _, tc := range []struct {
		kinds []store.OpKind
		want  byte
	}{
		{[]store.OpKind{store.OpSubmit, store.OpDispatch, store.OpRequeue, store.OpReply, store.OpFail, store.OpClose}, 1},
		{[]store.OpKind{store.OpSubmit, store.OpAdopt}, 2},
		{[]store.OpKind{store.OpRetry, store.OpClose}, 3},
		{[]store.OpKind{store.OpDispatch, store.OpUndispatch}, 4},
		{nil, 1},
	} {
		var ops []store.Op
		for _, k := range tc.kinds {
			ops = append(ops, store.Op{Kind: k, ID: id, Service: "s"})
		}
		if got := store.EncodeOps(ops)[0]; got != tc.want {
			t.Errorf("kinds %v: record version %d, want %d", tc.kinds, got, tc.want)
		}
	}
}

// The cluster version starts at 1 (none recorded), is raised by a log
// entry that carries a higher one, and never goes down.
func TestClusterVersionRaisedByEntries(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	get := func() int {
		t.Helper()
		v, err := s.ClusterVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := get(); v != 1 {
		t.Fatalf("new store: cluster version %d, want 1", v)
	}
	steps := []struct{ cluster, want int }{{0, 1}, {3, 3}, {2, 3}, {0, 3}, {4, 4}}
	for i, st := range steps {
		res := s.ApplyLog(ctx, []store.Entry{{Index: uint64(i + 1), Term: 1, ClusterVersion: st.cluster}})
		if res[0].Err != nil {
			t.Fatalf("entry %d: %v", i+1, res[0].Err)
		}
		if v := get(); v != st.want {
			t.Fatalf("after an entry with cluster version %d: %d, want %d", st.cluster, v, st.want)
		}
	}
	// A replayed entry (already applied) changes nothing.
	s.ApplyLog(ctx, []store.Entry{{Index: 1, Term: 1, ClusterVersion: 9}})
	if v := get(); v != 4 {
		t.Fatalf("a replayed entry moved the cluster version to %d", v)
	}
}

// The first op of a kind the first release cannot read moves the data file
// to format 2, which that release refuses to open (it reads only format
// 1): a node rolled back to it after its cluster took such ops does not
// start, where it would skip them. Raising the cluster version alone
// keeps format 1 (a rollback still works). This build opens both.
func TestNewerKindMovesFormat(t *testing.T) {
	s, path := newStore(t)
	ctx := context.Background()
	// format closes s, reads the file's format with bbolt, and reopens s.
	format := func() uint32 {
		t.Helper()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		var f uint32
		_ = db.View(func(tx *bolt.Tx) error {
			f = binary.BigEndian.Uint32(tx.Bucket([]byte("meta")).Get([]byte("format")))
			return nil
		})
		db.Close()
		if s, err = store.Open(path, store.Options{}); err != nil {
			t.Fatalf("this build does not reopen a format %d store: %v", f, err)
		}
		t.Cleanup(func() { s.Close() })
		return f
	}
	if f := format(); f != 1 {
		t.Fatalf("new store: format %d, want 1 (what every release reads)", f)
	}
	if res := s.ApplyLog(ctx, []store.Entry{{Index: 1, Term: 1}}); res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	if f := format(); f != 1 {
		t.Fatalf("after an entry that raises nothing: format %d, want 1", f)
	}
	if res := s.ApplyLog(ctx, []store.Entry{{Index: 2, Term: 1, ClusterVersion: 3}}); res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	// Raised, the cluster may write newer kinds: the first release, which
	// skips entries it cannot read, must not start on its stores.
	if f := format(); f != 2 {
		t.Fatalf("after the cluster version was raised: format %d, want 2", f)
	}
	if v, err := s.ClusterVersion(ctx); err != nil || v != 3 {
		t.Fatalf("reopened: cluster version %d %v, want 3", v, err)
	}
	// A store of no cluster moves when it applies a newer kind.
	s2, path2 := newStore(t)
	s, path = s2, path2
	id := store.NewID()
	mustApply(t, s, submit(id, "echo"), op(store.OpFail, id))
	if f := format(); f != 1 {
		t.Fatalf("after first-release ops: format %d, want 1", f)
	}
	mustApply(t, s, store.Op{Kind: store.OpRetry, ID: id, Time: at(4)})
	if f := format(); f != 2 {
		t.Fatalf("after a retry: format %d, want 2", f)
	}
	// A refused op of a newer kind was applied all the same (and failed):
	// the format stays where it is either way, and this build reads it.
	mustApply(t, s, submit(store.NewID(), "echo"))
	if f := format(); f != 2 {
		t.Fatalf("format went back to %d", f)
	}
}

// A purge closes a ticket only if it is failed when the purge is applied:
// a retry applied between the purge's listing and its close keeps the
// ticket (pending, in its FIFO); a failed one is closed; an unknown one
// is no error. The purge is an op of a newer kind (ops record 3).
func TestPurgeOnlyFailed(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	raced, dead := store.NewID(), store.NewID()
	mustApply(t, s, submit(raced, "echo"), op(store.OpFail, raced), submit(dead, "echo"), op(store.OpFail, dead))
	listed, err := s.List(ctx, store.Filter{Service: "echo", State: store.StateFailed, Limit: 10})
	if err != nil || len(listed) != 2 {
		t.Fatalf("failed tickets listed: %d %v, want 2", len(listed), err)
	}
	// The retry lands after the listing, before the purge's close.
	mustApply(t, s, store.Op{Kind: store.OpRetry, ID: raced, Time: at(5)})
	res, err := s.Apply(ctx, []store.Op{{Kind: store.OpPurge, ID: raced, Time: at(6)}, {Kind: store.OpPurge, ID: dead, Time: at(6)},
		{Kind: store.OpPurge, ID: store.NewID(), Time: at(6)}})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[0].Err, store.ErrNotFailed) || res[0].State != store.StatePending {
		t.Fatalf("purge of the retried ticket: %+v, want ErrNotFailed and pending", res[0])
	}
	if res[1].Err != nil || !res[1].Existed || res[1].Closed != store.StateFailed {
		t.Fatalf("purge of the failed ticket: %+v", res[1])
	}
	if res[2].Err != nil || res[2].Existed {
		t.Fatalf("purge of an unknown ticket: %+v, want no error and Existed false", res[2])
	}
	if tk, err := s.Get(ctx, raced); err != nil || tk.State != store.StatePending {
		t.Fatalf("retried ticket after the purge: %+v %v, want pending", tk, err)
	}
	if us := unfinished(t, s); len(us) != 1 || us[0].ID != raced {
		t.Fatalf("unfinished after the purge: %+v, want the retried ticket", us)
	}
	if _, err := s.Get(ctx, dead); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("purged ticket: %v, want ErrNotFound", err)
	}
	if v := (&store.Op{Kind: store.OpPurge}).Version(); v != 3 {
		t.Fatalf("purge needs ops record %d, want 3", v)
	}
	// Applied again (a replayed entry), it changes nothing.
	if r := applyOne(t, s, store.Op{Kind: store.OpPurge, ID: dead, Time: at(7)}); r.Err != nil || r.Existed {
		t.Fatalf("purge replayed: %+v", r)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatalf("check: %v", err)
	}
}

// A backoff's due time alone does not move a store of no cluster to
// format 2: its requeue is refused as at cluster version 1 (the service
// keeps the backoff in memory), so one failed attempt no longer ends a
// rollback to the first release. Once a newer kind has moved the file,
// due times are recorded (found by a reviewer of upgrades).
func TestRequeueDueWaitsForFormat2(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	id := store.NewID()
	mustApply(t, s, submit(id, "echo"), op(store.OpDispatch, id))
	res, err := s.Apply(ctx, []store.Op{{Kind: store.OpRequeue, ID: id, Time: at(3), Reason: "exit 1", Lifecycle: store.Lifecycle{Due: at(1000)}}})
	if err != nil || !errors.Is(res[0].Err, store.ErrClusterVersion) {
		t.Fatalf("requeue with a due time on a format 1 store: %v %+v, want ErrClusterVersion", err, res)
	}
	if s.NewerFormat() {
		t.Fatal("the refused requeue moved the store to format 2")
	}
	mustApply(t, s, store.Op{Kind: store.OpRequeue, ID: id, Time: at(4), Reason: "exit 1"})
	other := store.NewID()
	mustApply(t, s, store.Op{Kind: store.OpSubmit, ID: other, Service: "echo", Body: [][]byte{[]byte("x")}, Time: at(5), Lifecycle: store.Lifecycle{Priority: store.PriorityHigh}})
	if !s.NewerFormat() {
		t.Fatal("a submit with a priority left the store at format 1")
	}
	mustApply(t, s, op(store.OpDispatch, id))
	mustApply(t, s, store.Op{Kind: store.OpRequeue, ID: id, Time: at(6), Reason: "exit 1", Lifecycle: store.Lifecycle{Due: at(1000)}})
}
