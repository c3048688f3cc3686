package titanic

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// preload stores tickets with bulk Applies (fsync off) and returns their
// IDs in submit (Seq) order.
func preload(t *testing.T, path string, ops []store.Op) []store.ID {
	t.Helper()
	st, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var ids []store.ID
	for i := 0; i < len(ops); i += 1000 {
		batch := ops[i:min(i+1000, len(ops))]
		res, err := st.Apply(context.Background(), batch)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			ids = append(ids, r.ID)
		}
	}
	return ids
}

func submitOp(service, body string, lc store.Lifecycle, at time.Time) store.Op {
	return store.Op{Kind: store.OpSubmit, ID: store.NewID(), Time: at, Service: service, Body: [][]byte{[]byte(body)}, Lifecycle: lc}
}

// entriesHeld is how many tickets the dispatcher holds in memory.
func (h *harness) entriesHeld() int {
	h.svc.d.mu.Lock()
	defer h.svc.d.mu.Unlock()
	return len(h.svc.d.entries)
}

// wrrOrder is the order the weighted round robin gives levels with n[i]
// tickets each (the model of svcQueue.pick).
func wrrOrder(n [levels]int) []int {
	var credit [levels]int
	var out []int
	for {
		picked := -1
		for round := 0; round < 2 && picked < 0; round++ {
			for i := range n {
				if n[i] > 0 && credit[i] > 0 {
					picked = i
					break
				}
			}
			if picked < 0 {
				credit = levelWeight
			}
		}
		if picked < 0 {
			return out
		}
		n[picked]--
		credit[picked]--
		out = append(out, picked)
	}
}

// With a window of 8 and thousands of tickets stored before a restart,
// dispatch keeps FIFO order within each level and the 4:2:1 rotation
// between them across every refill, the stats count what waits on disk,
// and memory holds a few windows, not the backlog.
func TestWindowOrderAcrossRefills(t *testing.T) {
	const n = 3000
	path := filepath.Join(t.TempDir(), "t.db")
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	var ops []store.Op
	var want [levels][]string
	var counts [levels]int
	for i := range n {
		lv := rng.IntN(levels)
		body := fmt.Sprintf("%d-%d", lv, i)
		want[lv] = append(want[lv], body)
		counts[lv]++
		ops = append(ops, submitOp("s", body, store.Lifecycle{Priority: levelPriority[lv]}, now))
	}
	preload(t, path, ops)

	h := newHarness(t, Config{Window: 8}, path)
	if r := h.queueRow("s"); r.Pending != n || r.InFlight != 0 {
		t.Fatalf("after recover: %+v, want %d pending", r, n)
	}
	if got := h.entriesHeld(); got > 4*8 {
		t.Fatalf("after recover %d tickets in memory, want at most %d (windows of 8)", got, 4*8)
	}
	var got [levels][]string
	maxHeld := 0
	for i, lv := range wrrOrder(counts) {
		_, job := h.next("s")
		body := string(job.Body[0])
		var gl int
		if _, err := fmt.Sscanf(body, "%d-", &gl); err != nil || gl != lv {
			t.Fatalf("dispatch %d: %s, want level %d (rotation broken)", i, body, lv)
		}
		got[lv] = append(got[lv], body)
		maxHeld = max(maxHeld, h.entriesHeld())
	}
	for lv := range levels {
		if !slices.Equal(got[lv], want[lv]) {
			t.Fatalf("level %d: FIFO order broken across refills", lv)
		}
	}
	// Dispatched ones are held until their reply; the waiting ones stay
	// within a few windows.
	if maxHeld > n {
		t.Fatalf("held %d", maxHeld)
	}
	if job, ok := h.svc.Next("s", "w"); ok {
		t.Fatalf("extra job %s", job.Token)
	}
	if r := h.queueRow("s"); r.Pending != 0 || r.InFlight != n {
		t.Fatalf("after dispatch: %+v, want %d in flight", r, n)
	}
}

// Delayed tickets come due in order of due time, window after window,
// and a ticket whose deadline passed while it waited on disk is failed
// as expired, never dispatched.
func TestWindowDelayedAndDeadlines(t *testing.T) {
	const n = 400
	clk := newFakeClock()
	path := filepath.Join(t.TempDir(), "t.db")
	rng := rand.New(rand.NewPCG(3, 4))
	var ops []store.Op
	type due struct {
		at   time.Time
		body string
	}
	var dues []due
	for i := range n {
		at := clk.Now().Add(time.Duration(1+rng.IntN(100_000)) * time.Millisecond)
		body := fmt.Sprintf("d%d", i)
		dues = append(dues, due{at, body})
		ops = append(ops, submitOp("d", body, store.Lifecycle{Due: at}, clk.Now()))
	}
	// Ready tickets of another service, every third with a deadline that
	// passes before the dispatch reaches it.
	var live []string
	var expired []string
	for i := range 60 {
		lc := store.Lifecycle{}
		body := fmt.Sprintf("r%d", i)
		if i%3 == 0 {
			lc.Deadline = clk.Now().Add(time.Second)
			expired = append(expired, body)
		} else {
			live = append(live, body)
		}
		ops = append(ops, submitOp("r", body, lc, clk.Now()))
	}
	ids := preload(t, path, ops)
	slices.SortStableFunc(dues, func(a, b due) int { return a.at.Compare(b.at) })

	h := newHarness(t, Config{Window: 8, Now: clk.Now}, path)
	if r := h.queueRow("d"); r.Delayed != n {
		t.Fatalf("after recover: %+v, want %d delayed", r, n)
	}
	for i, d := range dues {
		clk.add(d.at.Sub(clk.Now()))
		h.svc.runSchedule()
		if got := h.take("d", 1); got != d.body {
			t.Fatalf("due %d: dispatched %s, want %s (due order)", i, got, d.body)
		}
	}
	if r := h.queueRow("d"); r.Delayed != 0 || r.Pending != 0 {
		t.Fatalf("after all came due: %+v", r)
	}

	clk.add(2 * time.Second) // past every deadline of "r"
	var got []string
	for range live {
		_, job := h.next("r")
		got = append(got, string(job.Body[0]))
	}
	if !slices.Equal(got, live) {
		t.Fatalf("dispatched %v, want %v (expired ones skipped)", got, live)
	}
	for i := 0; i < 60; i += 3 {
		id := ids[n+i]
		if reason := h.waitFailed(id.String()); reason[:len(ExpiredPrefix)] != ExpiredPrefix {
			t.Fatalf("ticket %d: reason %q", i, reason)
		}
	}
	_ = expired
}

// Submits racing window refills: with a window of 8, tickets submitted
// while the dispatcher drains and refills are each dispatched once, in
// submit order, none lost.
func TestWindowSubmitsRacingRefill(t *testing.T) {
	const n = 3000
	h := newHarness(t, Config{Window: 8}, "")
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var mu sync.Mutex
	seqOf := make(map[string]uint64)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			sem <- struct{}{}
			body := fmt.Sprint(i)
			err := h.svc.storeSubmit(submitReq{service: "s", body: [][]byte{[]byte(body)}}, func(res store.Result, err error) {
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				seqOf[res.ID.String()] = res.Seq
				mu.Unlock()
				<-sem
			})
			if err != nil {
				t.Error(err)
				return
			}
		}
	}()
	// Let a backlog past the window build up, so that later submits
	// land on disk while refills read.
	deadline := time.Now().Add(wait)
	for h.queueRow("s").Pending < 200 {
		if time.Now().After(deadline) {
			t.Fatal("no backlog built up")
		}
		time.Sleep(time.Millisecond)
	}
	seen := make(map[string]bool)
	var last uint64
	for i := range n {
		lease, job := h.next("s")
		tk := string(job.Token)
		if seen[tk] {
			t.Fatalf("dispatch %d: %s dispatched twice", i, tk)
		}
		seen[tk] = true
		mu.Lock()
		seq := seqOf[tk]
		mu.Unlock()
		if seq != 0 && seq <= last {
			t.Fatalf("dispatch %d: seq %d after %d (FIFO broken)", i, seq, last)
		}
		last = max(last, seq)
		h.svc.Completed(lease, [][]byte{[]byte("ok")})
		if got := h.b.release(t); got != lease.ID {
			t.Fatalf("released lease %d, want %d", got, lease.ID)
		}
	}
	wg.Wait()
	if job, ok := h.svc.Next("s", "w"); ok {
		t.Fatalf("extra job %s", job.Token)
	}
	if r := h.svc.Stats().WindowReads; r < n/32 {
		t.Fatalf("%d window reads for %d tickets through a window of 8: the test did not exercise refills", r, n)
	}
	deadline = time.Now().Add(wait)
	for {
		r := h.queueRow("s")
		if r.Pending == 0 && r.InFlight == 0 && r.Done == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after all replies: %+v, want %d done, none pending", r, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// With a window of 8 and thousands of tickets ahead of them, tickets far
// down the queue fail as expired at their deadline, not when the queue
// reaches them: a lookup says failed while their turn is far off. A
// restart keeps it (the deadlines are read back from the store's deadline
// index), and tickets whose deadline is later run in their turn.
func TestWindowDeadlinesOnDisk(t *testing.T) {
	const n = 3000
	clk := newFakeClock()
	path := filepath.Join(t.TempDir(), "t.db")
	soon := clk.Now().Add(10 * time.Second)  // passes before the restart
	after := clk.Now().Add(20 * time.Second) // passes after it
	later := clk.Now().Add(time.Hour)
	var ops []store.Op
	expire := map[int]time.Time{}
	for i := range n {
		var lc store.Lifecycle
		switch {
		case i >= 1000 && i%100 == 0:
			lc.Deadline = soon
		case i >= 1000 && i%100 == 50:
			lc.Deadline = after
		case i%100 == 25:
			lc.Deadline = later
		}
		if !lc.Deadline.IsZero() && lc.Deadline != later {
			expire[i] = lc.Deadline
		}
		ops = append(ops, submitOp("s", strconv.Itoa(i), lc, clk.Now()))
	}
	ids := preload(t, path, ops)
	cfg := Config{Window: 8, Now: clk.Now}
	h := newHarness(t, cfg, path)
	// Submitted through the service behind all of them: left on disk.
	tailSoon := h.submitLC("s", "tail-soon", store.Lifecycle{Deadline: soon})
	tailAfter := h.submitLC("s", "tail-after", store.Lifecycle{Deadline: after})

	const ran = 100
	for i := range ran {
		lease, job := h.next("s")
		if got := string(job.Body[0]); got != strconv.Itoa(i) {
			t.Fatalf("dispatch %d: %s", i, got)
		}
		h.complete(lease, string(job.Token), "ok")
	}
	lookup := func(tk string) string {
		r := h.call(tsp.SvcStatus, tk)
		if codeOf(r) != tsp.CodeOK {
			t.Fatalf("status %s: %q", tk, r)
		}
		return string(r[1])
	}
	if got := lookup(ids[1000].String()); got != "pending" {
		t.Fatalf("before its deadline: %s, want pending", got)
	}

	clk.add(10 * time.Second)
	h.svc.runSchedule()
	wantReason := func(dl time.Time) string { return expiredReason(dl) }
	failed := 0
	for i, dl := range expire {
		tk := ids[i].String()
		if dl == soon {
			if got := h.waitFailed(tk); got != wantReason(soon) {
				t.Fatalf("ticket %d: %q, want %q", i, got, wantReason(soon))
			}
			if got := lookup(tk); got != "failed" {
				t.Fatalf("ticket %d: status %s, want failed", i, got)
			}
			failed++
		} else if got := lookup(tk); got != "pending" {
			t.Fatalf("ticket %d, deadline later: %s, want pending", i, got)
		}
	}
	if got := h.waitFailed(tailSoon); got != wantReason(soon) {
		t.Fatalf("tail-soon: %q", got)
	}
	failed++
	// Their turn has not come: nothing was dispatched meanwhile, and the
	// dispatcher holds a few windows, not the expired tickets.
	if st := h.svc.Stats(); st.DeadlineExpired != uint64(failed) || st.Dispatches != ran {
		t.Fatalf("DeadlineExpired %d, dispatches %d; want %d, %d", st.DeadlineExpired, st.Dispatches, failed, ran)
	}
	// The tally follows each failure's commit a moment after lookups
	// see it (the completer counts once the store answered).
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		r := h.queueRow("s")
		if r.Pending == n+2-ran-failed && r.InFlight == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after expiry: %+v, want %d pending and none in flight", r, n+2-ran-failed)
		}
	}

	h.stop()
	h = newHarness(t, cfg, path)
	clk.add(10 * time.Second)
	h.svc.runSchedule()
	for i, dl := range expire {
		if dl == after {
			if got := h.waitFailed(ids[i].String()); got != wantReason(after) {
				t.Fatalf("ticket %d after the restart: %q", i, got)
			}
		}
	}
	if got := h.waitFailed(tailAfter); got != wantReason(after) {
		t.Fatalf("tail-after: %q", got)
	}

	// The rest runs, in order: the tickets whose deadline is an hour
	// off among them.
	var want, got []string
	for i := ran; i < n; i++ {
		if _, ok := expire[i]; !ok {
			want = append(want, strconv.Itoa(i))
		}
	}
	for range want {
		_, job := h.next("s")
		got = append(got, string(job.Body[0]))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("dispatched %d tickets, not the %d unexpired ones in order", len(got), len(want))
	}
	if job, ok := h.svc.Next("s", "w"); ok {
		t.Fatalf("extra job %s", job.Body[0])
	}
}
