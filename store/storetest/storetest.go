// Package storetest is store.Store's contract as tests: Run checks that a
// Store behaves as the titanic service relies on (op transitions, first
// reply wins, idempotency keys, batches, ApplyAsync order, recovery after
// a restart, listing, retention, usage, snapshots, leadership, close). The
// store package runs it against BoltStore, store/replica against a
// one-node raft and a three-node group, so that both implementations keep
// one contract. A semantic promised by store's doc comments belongs here.
//
// The suite checks outcomes, never timing or internals (commit counts,
// fsyncs): those are each implementation's own tests.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
)

// Harness opens the stores the suite runs against.
type Harness struct {
	// Open returns a new, empty store that serves (for a replicated
	// store: the leader, able to Apply) and registers, with t.Cleanup,
	// whatever closes and removes it. The suite may Close the store
	// first: the cleanup must accept a store already closed.
	Open func(t *testing.T) store.Store
	// Reopen, when set, closes s (a store that Open or Reopen returned for
	// the same test) and opens its data again, as a restart does, and
	// returns the new store once it serves (the suite itself calls
	// Leadership's Barrier before it reads, as the service does). nil
	// skips the recovery tests.
	Reopen func(t *testing.T, s store.Store) store.Store
}

// Run runs the conformance suite as subtests of t. Most subtests share
// one store (each uses its own services and tickets); those that need the
// whole store to themselves (listing everything, retention, close,
// recovery) open their own.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.Open == nil {
		t.Fatal("storetest: Harness.Open is nil")
	}
	shared := h.Open(t)
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"Submit", testSubmit},
		{"Transitions", testTransitions},
		{"FirstReplyWins", testFirstReplyWins},
		{"Idempotency", testIdempotency},
		{"KeyConflict", testKeyConflict},
		{"Adopt", testAdopt},
		{"UnknownIDs", testUnknownIDs},
		{"InvalidOps", testInvalidOps},
		{"Batch", testBatch},
		{"ApplyAsyncOrder", testApplyAsyncOrder},
		{"ConcurrentApply", testConcurrentApply},
		{"Unfinished", testUnfinished},
		{"Usage", testUsage},
		{"Snapshot", testSnapshot},
		{"Leadership", testLeadership},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, shared) })
	}
	fresh := func(fn func(*testing.T, store.Store)) func(*testing.T) {
		return func(t *testing.T) { fn(t, h.Open(t)) }
	}
	t.Run("List", fresh(testList))
	t.Run("Expired", fresh(testExpired))
	t.Run("Close", fresh(testClose))
	t.Run("Recovery", func(t *testing.T) {
		if h.Reopen == nil {
			t.Skip("the harness cannot reopen a store")
		}
		testRecovery(t, h)
	})
}

// t0 is the base of the ops' times; at(i) is a distinct later one.
var t0 = time.Date(2025, 11, 23, 3, 0, 0, 0, time.UTC)

func at(i int) time.Time { return t0.Add(time.Duration(i) * time.Millisecond) }

// svcName returns a service name of t's own, so that subtests sharing a
// store do not see each other's tickets.
func svcName(t *testing.T, suffix string) string {
	return strings.ReplaceAll(t.Name(), "/", ".") + "." + suffix
}

func frames(ss ...string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

func submitOp(id store.ID, service string, body ...[]byte) store.Op {
	return store.Op{Kind: store.OpSubmit, ID: id, Time: t0, Service: service, Body: body}
}

// keyedOp is a keyed submit whose body depends on the key alone, so that
// two keyedOps with one key and service are a resend of one request.
func keyedOp(id store.ID, service, key string) store.Op {
	o := submitOp(id, service, []byte("body of "+key))
	o.IdemKey = key
	return o
}

func op(kind store.OpKind, id store.ID, i int) store.Op {
	return store.Op{Kind: kind, ID: id, Time: at(i)}
}

func replyOp(id store.ID, i int, reply ...string) store.Op {
	return store.Op{Kind: store.OpReply, ID: id, Time: at(i), Reply: frames(reply...)}
}

// apply applies ops and fails the test on a batch error or a result
// count that does not match.
func apply(t *testing.T, s store.Store, ops ...store.Op) []store.Result {
	t.Helper()
	res, err := s.Apply(t.Context(), ops)
	if err != nil {
		t.Fatalf("apply %d ops: %v", len(ops), err)
	}
	if len(res) != len(ops) {
		t.Fatalf("apply: %d results for %d ops", len(res), len(ops))
	}
	return res
}

// mustApply is apply that also fails on any op's own error.
func mustApply(t *testing.T, s store.Store, ops ...store.Op) []store.Result {
	t.Helper()
	res := apply(t, s, ops...)
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("apply op %d (%s %s): %v", i, ops[i].Kind, ops[i].ID, r.Err)
		}
	}
	return res
}

func get(t *testing.T, s store.Store, id store.ID) store.Ticket {
	t.Helper()
	tk, err := s.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	return tk
}

func replyOf(t *testing.T, s store.Store, id store.ID) (store.Ticket, [][]byte) {
	t.Helper()
	tk, rep, err := s.Reply(t.Context(), id)
	if err != nil {
		t.Fatalf("reply %s: %v", id, err)
	}
	return tk, rep
}

// unfinished returns Unfinished's tickets whose service is in services
// (all of them when services is empty), in the order given.
func unfinished(t *testing.T, s store.Store, services ...string) []store.Ticket {
	t.Helper()
	var out []store.Ticket
	err := s.Unfinished(t.Context(), func(tk store.Ticket) error {
		if len(services) == 0 || slices.Contains(services, tk.Service) {
			out = append(out, tk)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("unfinished: %v", err)
	}
	return out
}

func ids(ts []store.Ticket) []store.ID {
	out := make([]store.ID, len(ts))
	for i, tk := range ts {
		out[i] = tk.ID
	}
	return out
}

func sameFrames(a, b [][]byte) bool { return slices.EqualFunc(a, b, bytes.Equal) }

func testSubmit(t *testing.T, s store.Store) {
	svc := svcName(t, "a")
	id := store.NewID()
	o := submitOp(id, svc, []byte("hello"), []byte("world"))
	o.IdemKey = svcName(t, "key")
	res := mustApply(t, s, o)[0]
	if res.ID != id || res.Duplicate || res.Seq == 0 || res.State != store.StatePending || res.Attempts != 0 {
		t.Fatalf("submit result = %+v", res)
	}
	got := get(t, s, id)
	if got.ID != id || got.Service != svc || got.State != store.StatePending || got.Seq != res.Seq ||
		got.Attempts != 0 || got.IdemKey != o.IdemKey || got.Reason != "" ||
		!got.Created.Equal(t0) || !got.Updated.Equal(t0) {
		t.Fatalf("ticket = %+v", got)
	}
	if !sameFrames(got.Body, o.Body) {
		t.Fatalf("body = %q, want %q", got.Body, o.Body)
	}
	// Seq is one counter for all services, increasing within a batch and
	// across batches.
	r2 := mustApply(t, s, submitOp(store.NewID(), svcName(t, "b")), submitOp(store.NewID(), svc))
	r3 := mustApply(t, s, submitOp(store.NewID(), svcName(t, "b")))
	if !(res.Seq < r2[0].Seq && r2[0].Seq < r2[1].Seq && r2[1].Seq < r3[0].Seq) {
		t.Fatalf("seqs %d, %d, %d, %d: want increasing", res.Seq, r2[0].Seq, r2[1].Seq, r3[0].Seq)
	}

	// Bodies and replies are binary-safe frames, empty ones included, and
	// an empty body is not a missing one.
	big := bytes.Repeat([]byte{0, 0xff, '\n'}, 100_000)
	for _, body := range [][][]byte{nil, {{}}, {{}, {}, {}}, {[]byte("\x00\xff\x00"), {}, []byte("\n")}, {big, {0}}} {
		t.Run(fmt.Sprintf("%dframes", len(body)), func(t *testing.T) {
			id := store.NewID()
			mustApply(t, s, submitOp(id, svc, body...))
			if got := get(t, s, id).Body; got == nil || !sameFrames(got, body) {
				t.Fatalf("body round trip: got %d frames, want %d", len(got), len(body))
			}
			if _, rep := replyOf(t, s, id); rep != nil {
				t.Fatalf("reply before done = %q", rep)
			}
			mustApply(t, s, store.Op{Kind: store.OpReply, ID: id, Time: at(1), Reply: body})
			if _, rep := replyOf(t, s, id); rep == nil || !sameFrames(rep, body) {
				t.Fatalf("reply round trip: got %d frames, want %d", len(rep), len(body))
			}
		})
	}
}

// testTransitions applies every op to a ticket in every state.
func testTransitions(t *testing.T, s store.Store) {
	const unknown = "unknown"
	type want struct {
		state    store.State // 0 after a close
		attempts int
		err      error
	}
	// setup brings a fresh ticket to a state; attempts follow from it.
	setup := map[string][]store.OpKind{
		"pending":    nil,
		"dispatched": {store.OpDispatch},
		"done":       {store.OpDispatch, store.OpReply},
		"failed":     {store.OpFail},
	}
	P, D, Done, F := store.StatePending, store.StateDispatched, store.StateDone, store.StateFailed
	tests := []struct {
		from string
		kind store.OpKind
		want want
	}{
		{"pending", store.OpDispatch, want{D, 1, nil}},
		{"pending", store.OpRequeue, want{P, 0, nil}},
		{"pending", store.OpReply, want{Done, 0, nil}},
		{"pending", store.OpFail, want{F, 0, nil}},
		{"pending", store.OpClose, want{0, 0, nil}},
		{"dispatched", store.OpDispatch, want{D, 2, nil}},
		{"dispatched", store.OpRequeue, want{P, 1, nil}},
		{"dispatched", store.OpReply, want{Done, 1, nil}},
		{"dispatched", store.OpFail, want{F, 1, nil}},
		{"dispatched", store.OpClose, want{0, 1, nil}},
		{"done", store.OpDispatch, want{Done, 1, store.ErrFinal}},
		{"done", store.OpRequeue, want{Done, 1, store.ErrFinal}},
		{"done", store.OpReply, want{Done, 1, store.ErrFinal}},
		{"done", store.OpFail, want{Done, 1, store.ErrFinal}},
		{"done", store.OpClose, want{0, 1, nil}},
		{"failed", store.OpDispatch, want{F, 0, store.ErrFinal}},
		{"failed", store.OpRequeue, want{F, 0, store.ErrFinal}},
		{"failed", store.OpReply, want{F, 0, store.ErrFinal}},
		{"failed", store.OpFail, want{F, 0, store.ErrFinal}},
		{"failed", store.OpClose, want{0, 0, nil}},
		{unknown, store.OpDispatch, want{0, 0, store.ErrNotFound}},
		{unknown, store.OpRequeue, want{0, 0, store.ErrNotFound}},
		{unknown, store.OpReply, want{0, 0, store.ErrNotFound}},
		{unknown, store.OpFail, want{0, 0, store.ErrNotFound}},
		{unknown, store.OpClose, want{0, 0, nil}},
		{"pending", store.OpUndispatch, want{P, 0, store.ErrNotDispatched}},
		{"dispatched", store.OpUndispatch, want{P, 0, nil}},
		{"done", store.OpUndispatch, want{Done, 1, store.ErrFinal}},
		{"failed", store.OpUndispatch, want{F, 0, store.ErrFinal}},
		{unknown, store.OpUndispatch, want{0, 0, store.ErrNotFound}},
	}
	ctx := t.Context()
	for _, tc := range tests {
		t.Run(tc.from+"/"+tc.kind.String(), func(t *testing.T) {
			svc := svcName(t, "svc")
			id := store.NewID()
			if tc.from != unknown {
				mustApply(t, s, submitOp(id, svc, []byte("req")))
				for i, k := range setup[tc.from] {
					mustApply(t, s, store.Op{Kind: k, ID: id, Time: at(i + 1), Reply: frames("first"), Reason: "setup"})
				}
			}
			o := store.Op{Kind: tc.kind, ID: id, Time: at(100), Reason: "why", Reply: frames("second")}
			res := apply(t, s, o)[0]
			if !errors.Is(res.Err, tc.want.err) || (tc.want.err == nil && res.Err != nil) {
				t.Fatalf("err = %v, want %v", res.Err, tc.want.err)
			}
			if res.ID != id || res.State != tc.want.state || res.Attempts != tc.want.attempts {
				t.Fatalf("result = %+v, want state %v attempts %d", res, tc.want.state, tc.want.attempts)
			}
			if tc.kind == store.OpClose && res.Existed != (tc.from != unknown) {
				t.Fatalf("close: Existed = %v", res.Existed)
			}
			tk, reply, err := s.Reply(ctx, id)
			if tc.from == unknown || tc.kind == store.OpClose {
				if !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("after %s: Reply err = %v, want ErrNotFound", tc.kind, err)
				}
				if _, err := s.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("after %s: Get err = %v, want ErrNotFound", tc.kind, err)
				}
				if l := unfinished(t, s, svc); len(l) != 0 {
					t.Fatalf("after %s: %d unfinished tickets, want none", tc.kind, len(l))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tk.State != tc.want.state || tk.Attempts != tc.want.attempts || tk.Body != nil {
				t.Fatalf("stored ticket = %+v", tk)
			}
			changed := tc.want.err == nil
			if changed != tk.Updated.Equal(at(100)) {
				t.Fatalf("Updated = %v, op changed the ticket: %v", tk.Updated, changed)
			}
			if changed && (tc.kind == store.OpRequeue || tc.kind == store.OpFail) && tk.Reason != "why" {
				t.Fatalf("Reason = %q, want %q", tk.Reason, "why")
			}
			switch {
			case tk.State != store.StateDone && reply != nil:
				t.Fatalf("%s ticket has reply %q", tk.State, reply)
			case tc.from == "done" && fmt.Sprintf("%s", reply) != "[first]":
				t.Fatalf("reply = %q, want the first one", reply)
			case tc.from != "done" && tk.State == store.StateDone && fmt.Sprintf("%s", reply) != "[second]":
				t.Fatalf("reply = %q, want [second]", reply)
			}
			if inFIFO := len(unfinished(t, s, svc)) == 1; inFIFO == tk.State.Final() {
				t.Fatalf("%s ticket among the unfinished: %v", tk.State, inFIFO)
			}
		})
	}
}

// testFirstReplyWins: a ticket is answered once, whoever answers second
// (in the same batch, a later batch, a failure, or a racing goroutine)
// gets ErrFinal and the first answer stays.
func testFirstReplyWins(t *testing.T, s store.Store) {
	svc := svcName(t, "svc")
	a, b, c := store.NewID(), store.NewID(), store.NewID()
	mustApply(t, s, submitOp(a, svc), submitOp(b, svc), submitOp(c, svc))
	mustApply(t, s, op(store.OpDispatch, a, 1), op(store.OpDispatch, b, 1))

	res := apply(t, s, replyOp(a, 2, "one"), replyOp(a, 3, "two"), op(store.OpFail, a, 4))
	if res[0].Err != nil || !errors.Is(res[1].Err, store.ErrFinal) || !errors.Is(res[2].Err, store.ErrFinal) {
		t.Fatalf("same batch: %+v", res)
	}
	mustApply(t, s, replyOp(b, 2, "one"))
	if r := apply(t, s, replyOp(b, 3, "two"))[0]; !errors.Is(r.Err, store.ErrFinal) || r.State != store.StateDone {
		t.Fatalf("second reply in a later batch: %+v", r)
	}
	for _, id := range []store.ID{a, b} {
		tk, rep := replyOf(t, s, id)
		if tk.State != store.StateDone || fmt.Sprintf("%s", rep) != "[one]" || !tk.Updated.Equal(at(2)) {
			t.Fatalf("%s: state %s, reply %q, updated %v: want done, [one], %v", id, tk.State, rep, tk.Updated, at(2))
		}
	}
	// A failure is an answer too.
	mustApply(t, s, op(store.OpFail, c, 1))
	if r := apply(t, s, replyOp(c, 2, "late"))[0]; !errors.Is(r.Err, store.ErrFinal) || r.State != store.StateFailed {
		t.Fatalf("reply after failure: %+v", r)
	}
	if _, rep := replyOf(t, s, c); rep != nil {
		t.Fatalf("failed ticket has reply %q", rep)
	}

	// Racing replies from many goroutines: exactly one wins.
	d := store.NewID()
	mustApply(t, s, submitOp(d, svc))
	const racers = 8
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins []string
		errs []error
	)
	for i := range racers {
		wg.Go(func() {
			who := fmt.Sprint("racer", i)
			res, err := s.Apply(t.Context(), []store.Op{replyOp(d, 10+i, who)})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				errs = append(errs, err)
			case res[0].Err == nil:
				wins = append(wins, who)
			case !errors.Is(res[0].Err, store.ErrFinal):
				errs = append(errs, res[0].Err)
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 || len(wins) != 1 {
		t.Fatalf("racing replies: winners %q, errors %v: want exactly one winner", wins, errs)
	}
	if _, rep := replyOf(t, s, d); fmt.Sprintf("%s", rep) != "["+wins[0]+"]" {
		t.Fatalf("reply = %q, want the winner's %q", rep, wins[0])
	}
}

func testIdempotency(t *testing.T, s store.Store) {
	ctx := t.Context()
	svc := svcName(t, "svc")
	key := func(k string) string { return svcName(t, k) }
	a, b, c := store.NewID(), store.NewID(), store.NewID()
	first := mustApply(t, s, keyedOp(a, svc, key("k")))[0]
	mustApply(t, s, op(store.OpDispatch, a, 1))

	// A resend gets the original ticket, as it is now, and makes none.
	dup := mustApply(t, s, keyedOp(b, svc, key("k")))[0]
	want := store.Result{ID: a, Duplicate: true, Seq: first.Seq, State: store.StateDispatched, Attempts: 1, Existed: true}
	if dup != want {
		t.Fatalf("duplicate result = %+v, want %+v", dup, want)
	}
	if _, err := s.Get(ctx, b); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("duplicate created a ticket: err = %v", err)
	}
	if got := get(t, s, a); !sameFrames(got.Body, frames("body of "+key("k"))) {
		t.Fatalf("duplicate changed the original's body: %q", got.Body)
	}
	// Within one batch the second submit sees the first.
	res := mustApply(t, s, keyedOp(b, svc, key("k2")), keyedOp(c, svc, key("k2")))
	if res[0].Duplicate || !res[1].Duplicate || res[1].ID != b {
		t.Fatalf("same-batch results = %+v", res)
	}
	// A finished ticket keeps its key.
	mustApply(t, s, replyOp(a, 2, "r"))
	if r := mustApply(t, s, keyedOp(store.NewID(), svc, key("k")))[0]; !r.Duplicate || r.ID != a || r.State != store.StateDone {
		t.Fatalf("resend after reply = %+v", r)
	}
	// A different key is a different ticket; no key never deduplicates.
	res = mustApply(t, s, keyedOp(c, svc, key("k3")), submitOp(store.NewID(), svc), submitOp(store.NewID(), svc))
	if res[0].Duplicate || res[1].Duplicate || res[2].Duplicate || res[1].ID == res[2].ID {
		t.Fatalf("results = %+v", res)
	}
	// Closing the ticket frees its key.
	mustApply(t, s, op(store.OpClose, a, 3))
	again := mustApply(t, s, keyedOp(store.NewID(), svc, key("k")))[0]
	if again.Duplicate || again.ID == a {
		t.Fatalf("after close: %+v", again)
	}
}

// testKeyConflict: a known key with another service or other body frames
// is refused (ErrKeyConflict, naming the ticket that holds the key) and
// creates nothing; a resend with the same service and frames is still a
// duplicate, whatever state the original is in, until it is closed.
func testKeyConflict(t *testing.T, s store.Store) {
	ctx := t.Context()
	svc, other := svcName(t, "svc"), svcName(t, "other")
	key := svcName(t, "k")
	body := frames("part one", "", "part two")
	keyed := func(id store.ID, service string, body [][]byte) store.Op {
		o := submitOp(id, service, body...)
		o.IdemKey = key
		return o
	}
	a := store.NewID()
	first := mustApply(t, s, keyed(a, svc, body))[0]
	mustApply(t, s, op(store.OpDispatch, a, 1))

	conflicts := []struct {
		name    string
		op      store.Op
		field   string
		service string
	}{
		{"other body", keyed(store.NewID(), svc, frames("part one", "", "part 2")), "body", svc},
		{"a frame more", keyed(store.NewID(), svc, append(frames("part one", "", "part two"), nil)), "body", svc},
		{"a frame less", keyed(store.NewID(), svc, frames("part one", "")), "body", svc},
		{"the same bytes split otherwise", keyed(store.NewID(), svc, frames("part on", "e", "part two")), "body", svc},
		{"no body", keyed(store.NewID(), svc, nil), "body", svc},
		{"other service", keyed(store.NewID(), other, body), "service", svc},
		{"other service and body", keyed(store.NewID(), other, frames("x")), "service", svc},
	}
	check := func(when string) {
		t.Helper()
		for _, tc := range conflicts {
			r := apply(t, s, tc.op)[0]
			var kc *store.KeyConflictError
			if !errors.Is(r.Err, store.ErrKeyConflict) || !errors.As(r.Err, &kc) || r.ID != a || r.Duplicate {
				t.Fatalf("%s, %s: result %+v, want ErrKeyConflict naming %s", when, tc.name, r, a)
			}
			if kc.Key != key || kc.Ticket != a || kc.Field != tc.field || kc.Service != tc.service {
				t.Fatalf("%s, %s: %+v, want key %q ticket %s field %s service %q", when, tc.name, kc, key, a, tc.field, tc.service)
			}
			if _, err := s.Get(ctx, tc.op.ID); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("%s, %s: the refused submit made a ticket: err = %v", when, tc.name, err)
			}
		}
		got := get(t, s, a)
		if !sameFrames(got.Body, body) || got.Service != svc || got.IdemKey != key {
			t.Fatalf("%s: the original changed: %+v", when, got)
		}
	}
	resend := func(when string, state store.State, attempts int) {
		t.Helper()
		r := mustApply(t, s, keyed(store.NewID(), svc, frames("part one", "", "part two")))[0]
		want := store.Result{ID: a, Duplicate: true, Seq: first.Seq, State: state, Attempts: attempts, Existed: true}
		if r != want {
			t.Fatalf("%s: resend = %+v, want %+v", when, r, want)
		}
	}
	check("dispatched")
	resend("dispatched", store.StateDispatched, 1)

	// In one batch: the resend is a duplicate, the other body a conflict,
	// and a new key beside them a new ticket.
	fresh := submitOp(store.NewID(), svc, body...)
	fresh.IdemKey = key + ".fresh"
	res := apply(t, s, keyed(store.NewID(), svc, body), conflicts[0].op, fresh)
	if !res[0].Duplicate || res[0].ID != a || !errors.Is(res[1].Err, store.ErrKeyConflict) || res[2].Err != nil || res[2].Duplicate {
		t.Fatalf("batch results = %+v", res)
	}
	// A submit and a conflicting one in the same batch: the first sets
	// the key, the second sees it.
	k2 := key + ".batch"
	b1, b2 := submitOp(store.NewID(), svc, frames("one")...), submitOp(store.NewID(), svc, frames("two")...)
	b1.IdemKey, b2.IdemKey = k2, k2
	res = apply(t, s, b1, b2)
	if res[0].Err != nil || res[0].Duplicate || !errors.Is(res[1].Err, store.ErrKeyConflict) || res[1].ID != b1.ID {
		t.Fatalf("same-batch submit and conflict = %+v", res)
	}

	// A failed original keeps its key: resends get it, failed; other
	// bodies still conflict.
	fail := op(store.OpFail, a, 2)
	fail.Reason = "gave up"
	mustApply(t, s, fail)
	check("failed")
	resend("failed", store.StateFailed, 1)

	// Closing the original frees the key: any body makes a new ticket.
	mustApply(t, s, op(store.OpClose, a, 3))
	r := mustApply(t, s, conflicts[0].op)[0]
	if r.Duplicate || r.ID != conflicts[0].op.ID {
		t.Fatalf("after close, another body = %+v, want a new ticket", r)
	}
	if got := get(t, s, r.ID); !sameFrames(got.Body, conflicts[0].op.Body) || got.IdemKey != key {
		t.Fatalf("new ticket after close = %+v", got)
	}
	// ... which now holds the key: the first body conflicts with it.
	if r := apply(t, s, keyed(store.NewID(), svc, body))[0]; !errors.Is(r.Err, store.ErrKeyConflict) || r.ID != conflicts[0].op.ID {
		t.Fatalf("the first body after the key moved = %+v, want a conflict naming %s", r, conflicts[0].op.ID)
	}
}

// testAdopt: a ticket handed over from another history (a split brain's
// other side) is taken in once, under its own ID and time.
func testAdopt(t *testing.T, s store.Store) {
	svc := svcName(t, "svc")
	key := svcName(t, "k")
	// Ours, minted here with the key, is newer than the one adopted.
	ours := store.NewID()
	o := keyedOp(ours, svc, key)
	o.Time = at(50)
	mustApply(t, s, o)

	// Theirs is the same keyed request (a resend that reached both
	// sides of a split), minted there earlier.
	theirs := store.NewID()
	body := o.Body
	adopt := store.Op{Kind: store.OpAdopt, ID: theirs, Time: at(10), Service: svc, Body: body, IdemKey: key}
	r := mustApply(t, s, adopt)[0]
	if r.Duplicate || r.ID != theirs || r.State != store.StatePending {
		t.Fatalf("adopt = %+v", r)
	}
	got := get(t, s, theirs)
	if !got.Created.Equal(at(10)) || !sameFrames(got.Body, body) || got.State != store.StatePending {
		t.Fatalf("adopted ticket = %+v", got)
	}
	// Both tickets stay; the key names the older.
	get(t, s, ours)
	if r := mustApply(t, s, keyedOp(store.NewID(), svc, key))[0]; !r.Duplicate || r.ID != theirs {
		t.Fatalf("resend after adopt = %+v, want the adopted (older) ticket", r)
	}
	// Adopting again changes nothing.
	adopt.Body = frames("other")
	if r := mustApply(t, s, adopt)[0]; !r.Duplicate || r.ID != theirs {
		t.Fatalf("second adopt = %+v", r)
	}
	if got := get(t, s, theirs); !sameFrames(got.Body, body) {
		t.Fatalf("second adopt changed the body: %q", got.Body)
	}
	if n := len(unfinished(t, s, svc)); n != 2 {
		t.Fatalf("%d unfinished, want 2", n)
	}
}

func testUnknownIDs(t *testing.T, s store.Store) {
	ctx := t.Context()
	id := store.NewID()
	if _, err := s.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get err = %v, want ErrNotFound", err)
	}
	if _, _, err := s.Reply(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Reply err = %v, want ErrNotFound", err)
	}
	// A closed ticket is as unknown as one never submitted.
	gone := store.NewID()
	mustApply(t, s, submitOp(gone, svcName(t, "svc")), op(store.OpClose, gone, 1))
	if _, err := s.Get(ctx, gone); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get of a closed ticket err = %v, want ErrNotFound", err)
	}
	if r := mustApply(t, s, op(store.OpClose, gone, 2))[0]; r.Existed || r.ID != gone {
		t.Fatalf("second close = %+v, want Existed false", r)
	}
	if r := apply(t, s, replyOp(gone, 3, "late"))[0]; !errors.Is(r.Err, store.ErrNotFound) {
		t.Fatalf("reply to a closed ticket: %+v, want ErrNotFound", r)
	}
	// Listing from an unknown ID pages from where it would be.
	if _, err := s.List(ctx, store.Filter{After: id, Service: svcName(t, "svc")}); err != nil {
		t.Fatalf("List after an unknown ID: %v", err)
	}
}

func testInvalidOps(t *testing.T, s store.Store) {
	svc := svcName(t, "svc")
	existing := store.NewID()
	mustApply(t, s, submitOp(existing, svc))
	long := strings.Repeat("x", store.MaxServiceLen+1)
	longKey := keyedOp(store.NewID(), svc, long)
	for _, tc := range []struct {
		name string
		op   store.Op
	}{
		{"submit zero id", submitOp(store.ID{}, svc)},
		{"submit empty service", submitOp(store.NewID(), "")},
		{"submit long service", submitOp(store.NewID(), long)},
		{"submit long idempotency key", longKey},
		{"submit existing id", submitOp(existing, svc)},
		{"dispatch zero id", op(store.OpDispatch, store.ID{}, 1)},
		{"close zero id", op(store.OpClose, store.ID{}, 1)},
		{"unknown kind", op(store.OpKind(99), store.NewID(), 1)},
		{"zero kind", op(0, store.NewID(), 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := apply(t, s, tc.op)[0]; !errors.Is(r.Err, store.ErrInvalidOp) {
				t.Fatalf("err = %v, want ErrInvalidOp", r.Err)
			}
		})
	}
	if l := unfinished(t, s, svc, ""); len(l) != 1 || l[0].ID != existing {
		t.Fatalf("unfinished after invalid ops = %v, want only %s", ids(l), existing)
	}
}

// testBatch: a batch applies in order, each op seeing those before it,
// and one op's failure does not stop the others.
func testBatch(t *testing.T, s store.Store) {
	svc := svcName(t, "svc")
	a, b := store.NewID(), store.NewID()
	res := apply(t, s,
		submitOp(a, svc),
		op(store.OpDispatch, store.NewID(), 1), // unknown
		op(store.OpDispatch, a, 2),             // sees the submit above
		submitOp(b, ""),                        // invalid
		replyOp(a, 3, "r"),
		op(store.OpDispatch, a, 4), // sees the reply: final
	)
	if res[0].Err != nil || !errors.Is(res[1].Err, store.ErrNotFound) || res[2].Err != nil ||
		!errors.Is(res[3].Err, store.ErrInvalidOp) || res[4].Err != nil || !errors.Is(res[5].Err, store.ErrFinal) {
		t.Fatalf("results = %+v", res)
	}
	if res[2].Attempts != 1 || res[4].State != store.StateDone {
		t.Fatalf("results = %+v", res)
	}
	if _, rep := replyOf(t, s, a); fmt.Sprintf("%s", rep) != "[r]" {
		t.Fatalf("reply = %q", rep)
	}
	if got := unfinished(t, s, svc); len(got) != 0 {
		t.Fatalf("unfinished = %v", ids(got))
	}

	// A submit and its close in one batch leave nothing.
	c := store.NewID()
	if r := mustApply(t, s, submitOp(c, svc), op(store.OpClose, c, 1)); !r[1].Existed {
		t.Fatalf("close in the submit's batch = %+v", r[1])
	}
	if _, err := s.Get(t.Context(), c); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after submit+close err = %v", err)
	}

	if res, err := s.Apply(t.Context(), nil); err != nil || len(res) != 0 {
		t.Fatalf("empty apply = %v, %v", res, err)
	}
	// A batch whose ctx ended before Apply is not applied.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	d := store.NewID()
	if _, err := s.Apply(ctx, []store.Op{submitOp(d, svc)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled apply err = %v, want context.Canceled", err)
	}
	if _, err := s.Get(t.Context(), d); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("cancelled apply was applied: %v", err)
	}
}

// applyAsync hands ops to s.ApplyAsync and returns a function that waits
// (boundedly) for their done. order, when set, receives seq when done is
// called, so that the order of the dones can be checked.
func applyAsync(s store.Store, ops []store.Op, order chan<- int, seq int) func(context.Context) ([]store.Result, error) {
	ch := make(chan store.Done, 1)
	s.ApplyAsync(ops, func(d store.Done) {
		if order != nil {
			order <- seq
		}
		ch <- d
	})
	return func(ctx context.Context) ([]store.Result, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		select {
		case d := <-ch:
			return d.Results, d.Err
		case <-ctx.Done():
			return nil, fmt.Errorf("ApplyAsync's done never called: %w", ctx.Err())
		}
	}
}

// testApplyAsyncOrder: batches handed to ApplyAsync apply in the order
// given, their dones are called in that order, and each reports what
// Apply would.
func testApplyAsyncOrder(t *testing.T, s store.Store) {
	ctx := t.Context()
	svc := svcName(t, "svc")
	id := store.NewID()
	order := make(chan int, 100)
	waits := []func(context.Context) ([]store.Result, error){
		applyAsync(s, []store.Op{submitOp(id, svc, []byte("b"))}, order, 0),
		applyAsync(s, []store.Op{op(store.OpDispatch, id, 1)}, order, 1),
		applyAsync(s, []store.Op{op(store.OpDispatch, id, 2), op(store.OpRequeue, id, 3)}, order, 2),
		applyAsync(s, []store.Op{replyOp(id, 4, "first")}, order, 3),
		applyAsync(s, []store.Op{replyOp(id, 5, "second")}, order, 4),
	}
	results := make([][]store.Result, len(waits))
	for i := len(waits) - 1; i >= 0; i-- {
		res, err := waits[i](ctx)
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		results[i] = res
	}
	for i := range waits {
		if got := <-order; got != i {
			t.Fatalf("done of batch %d called in place %d", got, i)
		}
	}
	type got struct {
		state    store.State
		attempts int
		final    bool
	}
	want := []got{{store.StatePending, 0, false}, {store.StateDispatched, 1, false}, {store.StatePending, 2, false}, {store.StateDone, 2, false}, {store.StateDone, 2, true}}
	last := func(rs []store.Result) store.Result { return rs[len(rs)-1] }
	for i, w := range want {
		r := last(results[i])
		if r.State != w.state || r.Attempts != w.attempts || errors.Is(r.Err, store.ErrFinal) != w.final || (!w.final && r.Err != nil) {
			t.Fatalf("batch %d: %+v, want %+v", i, r, w)
		}
	}
	if _, rep := replyOf(t, s, id); fmt.Sprintf("%s", rep) != "[first]" {
		t.Fatalf("reply = %q, want [first]", rep)
	}

	// Submits handed over in turn get Seqs in that order, whether or not
	// anyone waits; a later Apply sees them all.
	const n = 50
	subs := make([]store.ID, n)
	waits = waits[:0]
	for i := range subs {
		subs[i] = store.NewID()
		w := applyAsync(s, []store.Op{submitOp(subs[i], svc)}, nil, i)
		if i%2 == 0 {
			waits = append(waits, w)
		}
	}
	for _, w := range waits {
		if res, err := w(ctx); err != nil || res[0].Err != nil {
			t.Fatalf("async submit: %v %+v", err, res)
		}
	}
	mustApply(t, s, submitOp(store.NewID(), svc)) // after all of them
	if got := ids(unfinished(t, s, svc)); len(got) != n+1 || !slices.Equal(got[:n], subs) {
		t.Fatalf("unfinished: %d tickets, or not in hand-over order", len(got))
	}
	if res, err := applyAsync(s, nil, nil, 0)(ctx); err != nil || len(res) != 0 {
		t.Fatalf("empty async batch = %v, %v", res, err)
	}
}

// testConcurrentApply: concurrent Apply calls each get their own results
// (group commit must not mix them up) and every op applies once.
func testConcurrentApply(t *testing.T, s store.Store) {
	svc := svcName(t, "svc")
	const callers, each = 8, 12
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seqs = map[uint64]store.ID{}
		bad  []string
	)
	for range callers {
		wg.Go(func() {
			for range each {
				id := store.NewID()
				res, err := s.Apply(t.Context(), []store.Op{submitOp(id, svc), op(store.OpDispatch, id, 1)})
				mu.Lock()
				switch {
				case err != nil:
					bad = append(bad, err.Error())
				case len(res) != 2 || res[0].ID != id || res[0].Err != nil || res[1].ID != id || res[1].Attempts != 1:
					bad = append(bad, fmt.Sprintf("results for %s: %+v", id, res))
				default:
					if other, dup := seqs[res[0].Seq]; dup {
						bad = append(bad, fmt.Sprintf("seq %d given to %s and %s", res[0].Seq, other, id))
					}
					seqs[res[0].Seq] = id
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d failures, first: %s", len(bad), bad[0])
	}
	got := unfinished(t, s, svc)
	if len(got) != callers*each {
		t.Fatalf("%d unfinished, want %d", len(got), callers*each)
	}
	for _, tk := range got {
		if seqs[tk.Seq] != tk.ID || tk.State != store.StateDispatched {
			t.Fatalf("ticket %+v: seq or state differs from its result", tk)
		}
	}
}

// testUnfinished: every pending or dispatched ticket, grouped by service
// in name order, in FIFO order within a service, requeued ones at their
// place, without bodies; fn may Apply, and its error stops the walk.
func testUnfinished(t *testing.T, s store.Store) {
	services := []string{svcName(t, "b"), svcName(t, "a"), svcName(t, "a\x00b"), svcName(t, "c")}
	want := map[string][]store.ID{}
	var ops []store.Op
	for i := range 60 {
		svc := services[i%len(services)]
		id := store.NewID()
		ops = append(ops, submitOp(id, svc, []byte("body")))
		switch i % 5 {
		case 1:
			ops = append(ops, op(store.OpDispatch, id, i))
		case 2:
			ops = append(ops, op(store.OpDispatch, id, i), op(store.OpRequeue, id, i))
		case 3:
			ops = append(ops, op(store.OpFail, id, i))
			continue
		case 4:
			ops = append(ops, replyOp(id, i, "r"))
			continue
		}
		want[svc] = append(want[svc], id)
	}
	// In a few batches, each op seeing those before it.
	for b := range slices.Chunk(ops, 40) {
		mustApply(t, s, b...)
	}
	var wantAll []store.ID
	for _, svc := range slices.Sorted(slices.Values(services)) {
		wantAll = append(wantAll, want[svc]...)
	}
	got := unfinished(t, s, services...)
	if !slices.Equal(ids(got), wantAll) {
		t.Fatalf("unfinished: %d tickets, want %d, or another order", len(got), len(wantAll))
	}
	for i, tk := range got {
		if tk.Body != nil || tk.State.Final() {
			t.Fatalf("unfinished ticket %+v", tk)
		}
		if i > 0 && tk.Service == got[i-1].Service && tk.Seq <= got[i-1].Seq {
			t.Fatalf("unfinished: seq %d after %d in %q", tk.Seq, got[i-1].Seq, tk.Service)
		}
	}

	// fn may write to the store: finish every ticket of one service.
	target := services[1]
	n := 0
	err := s.Unfinished(t.Context(), func(tk store.Ticket) error {
		if tk.Service != target {
			return nil
		}
		n++
		_, err := s.Apply(t.Context(), []store.Op{replyOp(tk.ID, 1000, "r")})
		return err
	})
	if err != nil || n != len(want[target]) {
		t.Fatalf("unfinished with applies: %d calls, err %v; want %d", n, err, len(want[target]))
	}
	if l := unfinished(t, s, target); len(l) != 0 {
		t.Fatalf("%d unfinished after replying to all", len(l))
	}
	stop := errors.New("stop")
	n = 0
	if err := s.Unfinished(t.Context(), func(store.Ticket) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("unfinished: %d calls, err %v; want 1 and stop", n, err)
	}
}

func testUsage(t *testing.T, s store.Store) {
	before, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if before.FileSize <= 0 || before.Free < 0 || before.Used() <= 0 || before.Used() > before.FileSize {
		t.Fatalf("usage = %+v", before)
	}
	// Bodies of 1 MiB in all are data the file must hold.
	const size = 256 << 10
	svc := svcName(t, "svc")
	for range 4 {
		mustApply(t, s, submitOp(store.NewID(), svc, bytes.Repeat([]byte{'u'}, size)))
	}
	after, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	// The file holds the bodies, whatever else it holds: its used part
	// is at least their size. (Not compared with before: a replicated
	// store's snapshot may hold pages in a read transaction then free
	// them, so used can shrink while bodies are written.)
	if after.FileSize <= 0 || after.Free < 0 || after.Used() > after.FileSize || after.Used() < 4*size {
		t.Fatalf("usage after 1 MiB of bodies: %+v (used %d), before %+v (used %d); want at least 1 MiB used", after, after.Used(), before, before.Used())
	}
}

// testSnapshot: Snapshot writes a store file that Open accepts, holding
// what was applied before it.
func testSnapshot(t *testing.T, s store.Store) {
	svc := svcName(t, "svc")
	a, b := store.NewID(), store.NewID()
	mustApply(t, s, submitOp(a, svc, []byte("kept")), submitOp(b, svc), op(store.OpDispatch, b, 1), replyOp(b, 2, "answer"))
	path := filepath.Join(t.TempDir(), "snapshot.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.Snapshot(t.Context(), f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != n || n == 0 {
		t.Fatalf("snapshot wrote %d bytes, file %v (%v)", n, fi, err)
	}
	copyOf, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatalf("open the snapshot: %v", err)
	}
	defer copyOf.Close()
	if got := get(t, copyOf, a); !sameFrames(got.Body, frames("kept")) || got.State != store.StatePending {
		t.Fatalf("snapshot's copy of %s = %+v", a, got)
	}
	if tk, rep := replyOf(t, copyOf, b); tk.State != store.StateDone || fmt.Sprintf("%s", rep) != "[answer]" {
		t.Fatalf("snapshot's copy of %s: %s %q", b, tk.State, rep)
	}
}

// testLeadership: a store that serves (as Open's does) passes Barrier and
// ConfirmLeader, and reads after them see what was applied before.
func testLeadership(t *testing.T, s store.Store) {
	l := s.Leadership()
	if l == nil {
		t.Skip("not replicated: the store is the only copy of its data")
	}
	id := store.NewID()
	mustApply(t, s, submitOp(id, svcName(t, "svc")))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := l.Barrier(ctx); err != nil {
		t.Fatalf("barrier on the serving node: %v", err)
	}
	if err := l.ConfirmLeader(ctx); err != nil {
		t.Fatalf("confirm leadership of the serving node: %v", err)
	}
	get(t, s, id)
	// A ctx already ended gets its error, not a confirmation.
	done, stop := context.WithCancel(t.Context())
	stop()
	if err := l.ConfirmLeader(done); err == nil {
		t.Fatal("ConfirmLeader with an ended ctx returned nil")
	}
}

// testList: List filters by service and state, pages forwards and
// backwards by ID, and never returns bodies.
func testList(t *testing.T, s store.Store) {
	ctx := t.Context()
	var (
		made []store.Ticket
		ops  []store.Op
	)
	for i := range 130 { // more than the default page
		id := store.NewID()
		svc := []string{"a", "b"}[i%2]
		st := store.StatePending
		ops = append(ops, submitOp(id, svc, []byte("body")))
		switch i % 3 {
		case 1:
			ops, st = append(ops, op(store.OpDispatch, id, 1)), store.StateDispatched
		case 2:
			ops, st = append(ops, op(store.OpFail, id, 1)), store.StateFailed
		}
		made = append(made, store.Ticket{ID: id, Service: svc, State: st})
	}
	for b := range slices.Chunk(ops, 50) {
		mustApply(t, s, b...)
	}
	slices.SortFunc(made, func(x, y store.Ticket) int { return bytes.Compare(x.ID[:], y.ID[:]) })
	for _, f := range []store.Filter{
		{},
		{Limit: 7},
		{Service: "a"},
		{State: store.StateFailed, Limit: 13},
		{Service: "b", State: store.StateDispatched, Limit: 1000},
		{Service: "nope"},
		{Reverse: true, Limit: 9},
		{Reverse: true, Service: "b", State: store.StatePending},
	} {
		t.Run(fmt.Sprintf("%+v", f), func(t *testing.T) {
			var want []store.ID
			for _, tk := range made {
				if (f.Service == "" || tk.Service == f.Service) && (f.State == 0 || tk.State == f.State) {
					want = append(want, tk.ID)
				}
			}
			if f.Reverse {
				slices.Reverse(want)
			}
			limit := f.Limit
			if limit == 0 {
				limit = store.DefaultListLimit
			}
			var got []store.ID
			for page := 0; ; page++ {
				l, err := s.List(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				if len(l) > limit {
					t.Fatalf("page of %d, limit %d", len(l), limit)
				}
				for _, tk := range l {
					if tk.Body != nil {
						t.Fatal("List returned a body")
					}
					if (f.Service != "" && tk.Service != f.Service) || (f.State != 0 && tk.State != f.State) {
						t.Fatalf("listed %+v, outside %+v", tk, f)
					}
					got = append(got, tk.ID)
				}
				if len(l) < limit {
					break
				}
				f.After = l[len(l)-1].ID
				if page > len(made) {
					t.Fatal("paging does not end")
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("listed %d tickets, want %d (or in another order)", len(got), len(want))
			}
		})
	}
}

// testExpired: retention lists finished tickets last updated before the
// cutoff, oldest IDs first, up to the limit; never an unfinished one.
func testExpired(t *testing.T, s store.Store) {
	ctx := t.Context()
	hour := 3_600_000 // at() is in milliseconds
	a, b, c, d, e := store.NewID(), store.NewID(), store.NewID(), store.NewID(), store.NewID()
	mustApply(t, s, submitOp(a, "x"), submitOp(b, "x"), submitOp(c, "x"), submitOp(d, "y"))
	mustApply(t, s,
		replyOp(a, 1000, "r"),       // done an hour before the cutoff
		op(store.OpFail, c, 2*hour), // failed after the cutoff
		op(store.OpFail, d, 2000),   // failed before the cutoff
	) // b stays pending
	late := submitOp(e, "x")
	late.Time = at(3 * hour) // created after the cutoff
	mustApply(t, s, late, replyOp(e, 3*hour, "r"))

	cutoff := at(hour)
	got, err := s.Expired(ctx, cutoff, 100)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []store.ID{a, d}) {
		t.Fatalf("expired = %v, want %v", got, []store.ID{a, d})
	}
	if got, err := s.Expired(ctx, cutoff, 1); err != nil || !slices.Equal(got, []store.ID{a}) {
		t.Fatalf("expired with limit 1 = %v, %v; want [%s]", got, err, a)
	}
	if got, err := s.Expired(ctx, at(0), 100); err != nil || len(got) != 0 {
		t.Fatalf("expired before anything finished = %v, %v", got, err)
	}
	// The service deletes what Expired lists; it is gone from the list.
	mustApply(t, s, op(store.OpClose, a, hour+1))
	if got, err := s.Expired(ctx, cutoff, 100); err != nil || !slices.Equal(got, []store.ID{d}) {
		t.Fatalf("expired after closing %s = %v, %v", a, got, err)
	}
}

// testClose: after Close, Apply and ApplyAsync fail with ErrClosed.
func testClose(t *testing.T, s store.Store) {
	mustApply(t, s, submitOp(store.NewID(), "svc"))
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := s.Apply(t.Context(), []store.Op{submitOp(store.NewID(), "svc")}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Apply after Close err = %v, want ErrClosed", err)
	}
	if _, err := s.Apply(t.Context(), nil); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("empty Apply after Close err = %v, want ErrClosed", err)
	}
	if _, err := applyAsync(s, []store.Op{submitOp(store.NewID(), "svc")}, nil, 0)(t.Context()); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("ApplyAsync after Close err = %v, want ErrClosed", err)
	}
}

// testRecovery: everything applied survives a restart: the unfinished
// tickets in the same order and states (the service rebuilds its queues
// from them), replies, failures, idempotency keys, and Seq goes on
// increasing.
func testRecovery(t *testing.T, h Harness) {
	s := h.Open(t)
	x, y := "x", "y"
	var all []store.ID
	for range 6 {
		id := store.NewID()
		all = append(all, id)
	}
	mustApply(t, s,
		submitOp(all[0], x, []byte("zero")), submitOp(all[1], y, []byte("one")), submitOp(all[2], x),
		keyedOp(all[3], x, "key"), submitOp(all[4], y), submitOp(all[5], x))
	mustApply(t, s, op(store.OpDispatch, all[0], 1), op(store.OpDispatch, all[2], 1), op(store.OpRequeue, all[2], 2),
		op(store.OpDispatch, all[2], 3), op(store.OpDispatch, all[4], 1), replyOp(all[4], 2, "answer"),
		op(store.OpFail, all[5], 1))
	mustApply(t, s, op(store.OpDispatch, all[1], 4))
	before := unfinished(t, s)
	if len(before) != 4 {
		t.Fatalf("%d unfinished before the restart, want 4", len(before))
	}

	s = h.Reopen(t, s)
	if l := s.Leadership(); l != nil {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if err := l.Barrier(ctx); err != nil {
			t.Fatalf("barrier after the restart: %v", err)
		}
	}
	after := unfinished(t, s)
	if len(after) != len(before) {
		t.Fatalf("unfinished after the restart: %d tickets, want %d", len(after), len(before))
	}
	for i := range before {
		b, a := before[i], after[i]
		if a.ID != b.ID || a.Service != b.Service || a.State != b.State || a.Seq != b.Seq || a.Attempts != b.Attempts || !a.Created.Equal(b.Created) {
			t.Fatalf("unfinished[%d] after the restart = %+v, want %+v", i, a, b)
		}
	}
	if tk := get(t, s, all[2]); tk.State != store.StateDispatched || tk.Attempts != 2 || !tk.Updated.Equal(at(3)) {
		t.Fatalf("ticket after the restart = %+v", tk)
	}
	if got := get(t, s, all[0]); !sameFrames(got.Body, frames("zero")) {
		t.Fatalf("body after the restart = %q", got.Body)
	}
	if tk, rep := replyOf(t, s, all[4]); tk.State != store.StateDone || fmt.Sprintf("%s", rep) != "[answer]" {
		t.Fatalf("reply after the restart: %s %q", tk.State, rep)
	}
	if tk, _ := replyOf(t, s, all[5]); tk.State != store.StateFailed {
		t.Fatalf("failed ticket after the restart: %s", tk.State)
	}
	if r := mustApply(t, s, keyedOp(store.NewID(), x, "key"))[0]; !r.Duplicate || r.ID != all[3] {
		t.Fatalf("keyed resend after the restart = %+v, want the original", r)
	}
	maxSeq := uint64(0)
	for _, tk := range before {
		maxSeq = max(maxSeq, tk.Seq)
	}
	for _, id := range []store.ID{all[4], all[5]} {
		maxSeq = max(maxSeq, get(t, s, id).Seq)
	}
	if r := mustApply(t, s, submitOp(store.NewID(), y))[0]; r.Seq <= maxSeq {
		t.Fatalf("seq after the restart = %d, want above %d", r.Seq, maxSeq)
	}
	// The recovered store goes on: the first reply still wins.
	if r := apply(t, s, replyOp(all[4], 10, "again"))[0]; !errors.Is(r.Err, store.ErrFinal) {
		t.Fatalf("second reply after the restart: %+v", r)
	}
	mustApply(t, s, replyOp(all[0], 10, "done"))
	if l := ids(unfinished(t, s)); len(l) != 4 || slices.Contains(l, all[0]) {
		t.Fatalf("unfinished after more work = %v: want 4, without %s", l, all[0])
	}
}
