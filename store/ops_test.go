package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
)

func TestSubmit(t *testing.T) {
	s, _ := newStore(t)
	id := store.NewID()
	o := submit(id, "echo", []byte("hello"), []byte("world"))
	o.IdemKey = "key-1"
	res := mustApply(t, s, o)[0]
	want := store.Result{ID: id, Seq: 1, State: store.StatePending}
	if res != want {
		t.Fatalf("result = %+v, want %+v", res, want)
	}
	got, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != id || got.Service != "echo" || got.State != store.StatePending || got.Seq != 1 ||
		got.Attempts != 0 || got.IdemKey != "key-1" || got.Reason != "" ||
		!got.Created.Equal(t0) || !got.Updated.Equal(t0) {
		t.Fatalf("ticket = %+v", got)
	}
	if fmt.Sprint(got.Body) != fmt.Sprint([][]byte{[]byte("hello"), []byte("world")}) {
		t.Fatalf("body = %q", got.Body)
	}
	// Seq is one counter for all services.
	res2 := mustApply(t, s, submit(store.NewID(), "other"), submit(store.NewID(), "echo"))
	if res2[0].Seq != 2 || res2[1].Seq != 3 {
		t.Fatalf("seqs = %d, %d, want 2, 3", res2[0].Seq, res2[1].Seq)
	}
}

func TestInvalidOps(t *testing.T) {
	s, _ := newStore(t)
	existing := store.NewID()
	mustApply(t, s, submit(existing, "echo"))
	long := strings.Repeat("x", store.MaxServiceLen+1)
	withIdem := submit(store.NewID(), "echo")
	withIdem.IdemKey = long
	for _, tc := range []struct {
		name string
		op   store.Op
	}{
		{"submit zero id", submit(store.ID{}, "echo")},
		{"submit empty service", submit(store.NewID(), "")},
		{"submit long service", submit(store.NewID(), long)},
		{"submit long idempotency key", withIdem},
		{"submit existing id", submit(existing, "echo")},
		{"dispatch zero id", op(store.OpDispatch, store.ID{})},
		{"close zero id", op(store.OpClose, store.ID{})},
		{"unknown kind", op(store.OpKind(99), store.NewID())},
		{"zero kind", op(0, store.NewID())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := applyOne(t, s, tc.op)
			if !errors.Is(res.Err, store.ErrInvalidOp) {
				t.Fatalf("err = %v, want ErrInvalidOp", res.Err)
			}
		})
	}
	if n := len(unfinished(t, s)); n != 1 {
		t.Fatalf("%d unfinished tickets after invalid ops, want 1", n)
	}
}

// TestTransitions applies every op to a ticket in every state.
func TestTransitions(t *testing.T) {
	const (
		unknown = "unknown"
		closed  = "closed" // the ticket is gone afterwards
	)
	type want struct {
		state    store.State // 0 with closed
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
	}
	s, _ := newStore(t)
	ctx := context.Background()
	for _, tc := range tests {
		t.Run(tc.from+"/"+tc.kind.String(), func(t *testing.T) {
			id := store.NewID()
			if tc.from != unknown {
				mustApply(t, s, submit(id, "svc", []byte("req")))
				for i, k := range setup[tc.from] {
					o := store.Op{Kind: k, ID: id, Time: at(i + 1), Reply: [][]byte{[]byte("first")}, Reason: "setup"}
					mustApply(t, s, o)
				}
			}
			o := store.Op{Kind: tc.kind, ID: id, Time: at(100), Reason: "why", Reply: [][]byte{[]byte("second")}}
			res := applyOne(t, s, o)
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
				t.Fatalf("Updated = %v, op changed ticket: %v", tk.Updated, changed)
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
			inFIFO := slices.Contains(ids(unfinished(t, s)), id)
			if inFIFO == tk.State.Final() {
				t.Fatalf("%s ticket in FIFO index: %v", tk.State, inFIFO)
			}
		})
	}
}

func TestIdempotency(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	a, b, c := store.NewID(), store.NewID(), store.NewID()
	withKey := func(id store.ID, key string) store.Op {
		o := submit(id, "svc", []byte("body of "+key)) // a resend has the same body
		o.IdemKey = key
		return o
	}
	first := mustApply(t, s, withKey(a, "k"))[0]
	mustApply(t, s, op(store.OpDispatch, a))

	dup := mustApply(t, s, withKey(b, "k"))[0]
	want := store.Result{ID: a, Duplicate: true, Seq: first.Seq, State: store.StateDispatched, Attempts: 1, Existed: true}
	if dup != want {
		t.Fatalf("duplicate result = %+v, want %+v", dup, want)
	}
	if _, err := s.Get(ctx, b); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("duplicate created a ticket: err = %v", err)
	}
	// Within one batch the second submit sees the first.
	res := mustApply(t, s, withKey(b, "k2"), withKey(c, "k2"))
	if res[0].Duplicate || !res[1].Duplicate || res[1].ID != b {
		t.Fatalf("same-batch results = %+v", res)
	}
	// A different key is a different ticket; no key never deduplicates.
	res = mustApply(t, s, withKey(c, "k3"), submit(store.NewID(), "svc"), submit(store.NewID(), "svc"))
	if res[0].Duplicate || res[1].Duplicate || res[2].Duplicate || res[1].ID == res[2].ID {
		t.Fatalf("results = %+v", res)
	}
	// Closing the ticket frees its key.
	mustApply(t, s, op(store.OpClose, a))
	again := mustApply(t, s, withKey(store.NewID(), "k"))[0]
	if again.Duplicate || again.ID == a {
		t.Fatalf("after close: %+v", again)
	}
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Services["svc"].Pending; got != 5 {
		t.Fatalf("pending = %d, want 5 (%+v)", got, st)
	}
}

func TestBatchKeepsGoingAfterOpError(t *testing.T) {
	s, _ := newStore(t)
	a, b := store.NewID(), store.NewID()
	res, err := s.Apply(context.Background(), []store.Op{
		submit(a, "svc"),
		op(store.OpDispatch, store.NewID()), // unknown
		op(store.OpDispatch, a),             // sees the submit above
		submit(b, ""),                       // invalid
		op(store.OpReply, a),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Err != nil || !errors.Is(res[1].Err, store.ErrNotFound) || res[2].Err != nil ||
		!errors.Is(res[3].Err, store.ErrInvalidOp) || res[4].Err != nil {
		t.Fatalf("results = %+v", res)
	}
	if res[2].Attempts != 1 || res[4].State != store.StateDone {
		t.Fatalf("results = %+v", res)
	}
	if got := unfinished(t, s); len(got) != 0 {
		t.Fatalf("unfinished = %+v", got)
	}
}

func TestApplyEmptyAndCancelled(t *testing.T) {
	s, _ := newStore(t)
	res, err := s.Apply(context.Background(), nil)
	if err != nil || len(res) != 0 {
		t.Fatalf("empty apply = %v, %v", res, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	id := store.NewID()
	if _, err := s.Apply(ctx, []store.Op{submit(id, "svc")}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled apply err = %v", err)
	}
	if _, err := s.Get(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("cancelled apply was applied: %v", err)
	}
	// A deadline that ends while the batch waits either withdraws it or
	// lets it finish; either way the store stays consistent.
	ctx, cancel = context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	_, _ = s.Apply(ctx, []store.Op{submit(store.NewID(), "svc")})
}
