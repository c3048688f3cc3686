package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/titanicmq/titanic/store"
)

// TestFIFOAcrossReopen checks that Unfinished gives each service's tickets
// in Seq order, grouped by service, also after the file is reopened, and
// that requeued tickets keep their place.
func TestFIFOAcrossReopen(t *testing.T) {
	path := t.TempDir() + "/fifo.db"
	nosync := store.Options{NoSync: true}
	s := mustOpenWith(t, path, nosync)
	rng := rand.New(rand.NewPCG(1, 2))
	services := []string{"b", "a", "c", "a\x00b", "zz"}
	want := map[string][]store.ID{}
	var all []store.ID
	for i := range 3000 { // more than one Unfinished chunk
		svc := services[rng.IntN(len(services))]
		id := store.NewID()
		mustApply(t, s, submit(id, svc))
		want[svc] = append(want[svc], id)
		all = append(all, id)
		if i%7 == 0 {
			mustApply(t, s, op(store.OpDispatch, id))
		}
		if i%11 == 0 {
			mustApply(t, s, op(store.OpDispatch, id), op(store.OpRequeue, id))
		}
	}
	// Finish some; they leave the index.
	for i, id := range all {
		if i%5 == 0 {
			mustApply(t, s, store.Op{Kind: store.OpReply, ID: id, Time: t0})
			for svc, l := range want {
				want[svc] = slices.DeleteFunc(l, func(x store.ID) bool { return x == id })
			}
		}
	}
	check := func(s store.Store) {
		t.Helper()
		got := unfinished(t, s)
		var wantAll []store.ID
		for _, svc := range slices.Sorted(maps.Keys(want)) {
			wantAll = append(wantAll, want[svc]...)
		}
		if !slices.Equal(ids(got), wantAll) {
			t.Fatalf("unfinished: %d tickets, want %d, or order differs", len(got), len(wantAll))
		}
		for i := 1; i < len(got); i++ {
			if got[i].Service == got[i-1].Service && got[i].Seq <= got[i-1].Seq {
				t.Fatalf("unfinished: seq %d after %d in %q", got[i].Seq, got[i-1].Seq, got[i].Service)
			}
			if got[i].Body != nil || got[i].State.Final() {
				t.Fatalf("unfinished ticket %+v", got[i])
			}
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	check(mustOpenWith(t, path, nosync))
}

// TestUnfinishedCallbackMayApply checks that fn can write to the store
// (it runs outside read transactions) and that its error stops the walk.
func TestUnfinishedCallbackMayApply(t *testing.T) {
	s := mustOpenWith(t, t.TempDir()+"/cb.db", store.Options{NoSync: true})
	ctx := context.Background()
	for range 2500 {
		mustApply(t, s, submit(store.NewID(), "svc", bytes.Repeat([]byte("x"), 100)))
	}
	n := 0
	err := s.Unfinished(ctx, func(tk store.Ticket) error {
		n++
		_, err := s.Apply(ctx, []store.Op{op(store.OpReply, tk.ID)})
		return err
	})
	if err != nil || n != 2500 {
		t.Fatalf("unfinished: %d tickets, err %v", n, err)
	}
	mustApply(t, s, submit(store.NewID(), "svc"), submit(store.NewID(), "svc"))
	stop := errors.New("stop")
	n = 0
	err = s.Unfinished(ctx, func(store.Ticket) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("unfinished: %d calls, err %v, want 1 and stop", n, err)
	}
}

func TestBinarySafeBodies(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	for _, body := range [][][]byte{
		nil,
		{},
		{{}},
		{{}, {}, {}},
		{[]byte("\x00\xff\x00"), {}, []byte("\n")},
		{big, {0}},
	} {
		t.Run(fmt.Sprint(len(body), "frames"), func(t *testing.T) {
			id := store.NewID()
			mustApply(t, s, submit(id, "svc", body...))
			got, err := s.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if got.Body == nil || !slices.EqualFunc(got.Body, body, bytes.Equal) {
				t.Fatalf("body round trip: got %d frames, want %d", len(got.Body), len(body))
			}
			_, reply, err := s.Reply(ctx, id)
			if err != nil || reply != nil {
				t.Fatalf("reply before done = %q, %v", reply, err)
			}
			mustApply(t, s, store.Op{Kind: store.OpReply, ID: id, Time: t0, Reply: body})
			_, reply, err = s.Reply(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if reply == nil || !slices.EqualFunc(reply, body, bytes.Equal) {
				t.Fatalf("reply round trip: got %d frames, want %d", len(reply), len(body))
			}
		})
	}
}

func TestList(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	var made []store.Ticket
	for i := range 250 {
		id := store.NewID()
		svc := []string{"a", "b"}[i%2]
		mustApply(t, s, submit(id, svc, []byte("body")))
		st := store.StatePending
		switch i % 3 {
		case 1:
			mustApply(t, s, op(store.OpDispatch, id))
			st = store.StateDispatched
		case 2:
			mustApply(t, s, op(store.OpFail, id))
			st = store.StateFailed
		}
		made = append(made, store.Ticket{ID: id, Service: svc, State: st})
	}
	slices.SortFunc(made, func(x, y store.Ticket) int { return bytes.Compare(x.ID[:], y.ID[:]) })
	for _, f := range []store.Filter{
		{},
		{Limit: 7},
		{Service: "a"},
		{State: store.StateFailed, Limit: 13},
		{Service: "b", State: store.StateDispatched, Limit: 1000},
		{Service: "nope"},
	} {
		t.Run(fmt.Sprintf("%+v", f), func(t *testing.T) {
			var want []store.ID
			for _, tk := range made {
				if (f.Service == "" || tk.Service == f.Service) && (f.State == 0 || tk.State == f.State) {
					want = append(want, tk.ID)
				}
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
					got = append(got, tk.ID)
				}
				if len(l) < limit {
					break
				}
				f.After = l[len(l)-1].ID
				if page > 300 {
					t.Fatal("paging does not end")
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("listed %d tickets, want %d (or in another order)", len(got), len(want))
			}
		})
	}
}

func TestStats(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	a := []store.ID{store.NewID(), store.NewID(), store.NewID(), store.NewID()}
	mustApply(t, s, submit(a[0], "x"), submit(a[1], "x"), submit(a[2], "x"), submit(a[3], "y"))
	mustApply(t, s, op(store.OpDispatch, a[0]), op(store.OpReply, a[1]), op(store.OpFail, a[2]))
	mustApply(t, s, op(store.OpClose, a[3]))
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (store.Counts{Dispatched: 1, Done: 1, Failed: 1}); st.Services["x"] != want {
		t.Fatalf("x counts = %+v, want %+v", st.Services["x"], want)
	}
	if _, ok := st.Services["y"]; ok || len(st.Services) != 1 || st.ServiceNames()[0] != "x" {
		t.Fatalf("services = %+v", st.Services)
	}
	if st.NextSeq != 5 || st.Commits != 3 || st.Applies != 3 || st.Ops != 8 || st.Size <= 0 {
		t.Fatalf("stats = %+v", st)
	}
	if got := st.Services["x"].Total(); got != 3 {
		t.Fatalf("total = %d", got)
	}
}

func TestStateStrings(t *testing.T) {
	for st := store.StatePending; st <= store.StateFailed; st++ {
		got, err := store.ParseState(st.String())
		if err != nil || got != st {
			t.Fatalf("ParseState(%q) = %v, %v", st.String(), got, err)
		}
	}
	if _, err := store.ParseState("closed"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("ParseState(closed) err = %v", err)
	}
}

func TestListReverseAndHeads(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	var ids []store.ID
	for i := range 5 {
		id := store.NewID()
		ids = append(ids, id)
		svc := "a"
		if i%2 == 1 {
			svc = "b"
		}
		mustApply(t, s, submit(id, svc))
	}
	l, err := s.List(ctx, store.Filter{Reverse: true, Limit: 2})
	if err != nil || len(l) != 2 || l[0].ID != ids[4] || l[1].ID != ids[3] {
		t.Fatalf("newest first: %v %v", l, err)
	}
	l, err = s.List(ctx, store.Filter{Reverse: true, After: l[1].ID, Limit: 10})
	if err != nil || len(l) != 3 || l[0].ID != ids[2] || l[2].ID != ids[0] {
		t.Fatalf("next page: %v %v", l, err)
	}
	h, err := s.Heads(ctx)
	if err != nil || len(h) != 2 || h["a"].ID != ids[0] || h["b"].ID != ids[1] {
		t.Fatalf("heads = %v %v", h, err)
	}
	mustApply(t, s, op(store.OpDispatch, ids[0]), op(store.OpReply, ids[0]))
	if h, _ := s.Heads(ctx); h["a"].ID != ids[2] {
		t.Fatalf("head of a after its first finished: %v", h["a"].ID)
	}
}

// TestListPageBoundsScan: over 50,000 tickets, a filter that matches
// none examines at most DefaultMaxScan tickets per ListPage (one read
// transaction each) and answers an empty page with a cursor; following the
// cursors ends, having examined every ticket once. List (the loop) finds
// the one match placed last, in either direction.
func TestListPageBoundsScan(t *testing.T) {
	const n = 50_000
	s, _ := newStore(t)
	ctx := context.Background()
	var ops []store.Op
	var last store.ID
	for i := range n {
		last = store.NewID()
		svc := "a"
		if i == n-1 {
			svc = "needle"
		}
		ops = append(ops, submit(last, svc, []byte("x")))
		if len(ops) == 5000 {
			mustApply(t, s, ops...)
			ops = nil
		}
	}
	for _, reverse := range []bool{false, true} {
		f := store.Filter{Service: "nosuch", Reverse: reverse}
		calls, examined := 0, 0
		for {
			calls++
			if calls > n/store.DefaultMaxScan+1 {
				t.Fatalf("reverse=%v: %d calls and not done", reverse, calls)
			}
			p, err := s.ListPage(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			if p.Examined > store.DefaultMaxScan || len(p.Tickets) != 0 {
				t.Fatalf("reverse=%v: page examined %d (bound %d), matched %d", reverse, p.Examined, store.DefaultMaxScan, len(p.Tickets))
			}
			examined += p.Examined
			if !p.More {
				break
			}
			if p.Next == f.After {
				t.Fatalf("reverse=%v: cursor did not move from %s", reverse, f.After)
			}
			f.After = p.Next
		}
		if examined != n {
			t.Fatalf("reverse=%v: examined %d tickets over %d calls, want %d", reverse, examined, calls, n)
		}
		got, err := s.List(ctx, store.Filter{Service: "needle", Reverse: reverse})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].ID != last {
			t.Fatalf("reverse=%v: List of the one match got %d tickets", reverse, len(got))
		}
	}
}
