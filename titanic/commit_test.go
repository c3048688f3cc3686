package titanic

import (
	"errors"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
)

// fakeApplier is a commit pipeline the test completes by hand: each
// ApplyAsync is held until finish.
type fakeApplier struct {
	held []func(store.Done)
	ops  [][]store.Op
}

func (f *fakeApplier) ApplyAsync(ops []store.Op, done func(store.Done)) {
	f.ops = append(f.ops, ops)
	f.held = append(f.held, done)
}

// finish completes the oldest hand-over with n results (or err); last
// ends its commit.
func (f *fakeApplier) finish(n int, err error, last bool) {
	done := f.held[0]
	f.held = f.held[1:]
	var res []store.Result
	if err == nil {
		res = make([]store.Result, n)
	}
	done(store.Done{Results: res, Err: err, Last: last})
}

// committerProbe is a committer over a fakeApplier, with what it told
// the rest of the Service.
type committerProbe struct {
	c       *committer
	st      *fakeApplier
	stats   *counters
	begins  int
	woken   []string
	commits int // ObserveCommit calls
}

func newCommitterProbe(maxClient int) *committerProbe {
	p := &committerProbe{st: &fakeApplier{}, stats: &counters{}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p.c = newCommitter(p.st, maxClient, p.stats, log,
		func(time.Duration) { p.commits++ },
		func() { p.begins++ },
		func(svc string) { p.woken = append(p.woken, svc) })
	return p
}

func op(client bool, done func(store.Result, error)) pendingOp {
	if done == nil {
		done = func(store.Result, error) {}
	}
	return pendingOp{op: store.Op{Kind: store.OpClose}, client: client, done: done}
}

// TestCommitterMaxQueuedOps: client ops past MaxQueuedOps not yet
// durable are refused busy; internal ops are always taken; a completion
// makes room again.
func TestCommitterMaxQueuedOps(t *testing.T) {
	p := newCommitterProbe(2)
	if err := p.c.enqueue(op(true, nil), op(true, nil)); err != nil {
		t.Fatalf("two client ops under a limit of 2: %v", err)
	}
	if err := p.c.enqueue(op(true, nil)); !errors.Is(err, errBusy) {
		t.Fatalf("a third client op: %v, want errBusy", err)
	}
	if err := p.c.enqueue(op(false, nil)); err != nil {
		t.Fatalf("an internal op past the limit: %v", err)
	}
	if got := p.stats.busy.Load(); got != 1 {
		t.Fatalf("busy = %d, want 1", got)
	}
	if len(p.st.ops) != 2 {
		t.Fatalf("%d hand-overs reached the store, want 2 (the refused one did not)", len(p.st.ops))
	}
	p.st.finish(2, nil, true)
	if err := p.c.enqueue(op(true, nil)); err != nil {
		t.Fatalf("a client op after the first two completed: %v", err)
	}
}

// TestCommitterCommit: the completions of one commit (several hand-overs,
// the last marked Last) run in order; the per-commit work runs once
// before the first (beginCommit) and after the last (ObserveCommit, one
// wake per service).
func TestCommitterCommit(t *testing.T) {
	p := newCommitterProbe(10)
	var order []int
	for i := range 3 {
		_ = p.c.enqueue(op(true, func(store.Result, error) {
			order = append(order, i)
			p.c.wakeAfter("s")
			if i == 1 {
				p.c.wakeAfter("t")
			}
		}))
	}
	p.st.finish(1, nil, false)
	p.st.finish(1, nil, false)
	if p.begins != 1 || len(p.woken) != 0 || p.commits != 0 {
		t.Fatalf("mid-commit: %d begins, woken %q, %d observed; want 1, none, 0", p.begins, p.woken, p.commits)
	}
	p.st.finish(1, nil, true)
	slices.Sort(p.woken)
	if !slices.Equal(order, []int{0, 1, 2}) || p.begins != 1 || !slices.Equal(p.woken, []string{"s", "t"}) || p.commits != 1 {
		t.Fatalf("after the commit: order %v, %d begins, woken %q, %d observed; want [0 1 2], 1, [s t], 1", order, p.begins, p.woken, p.commits)
	}
	if got := p.stats.commits.Load(); got != 1 {
		t.Fatalf("commits = %d, want 1", got)
	}
	if got := p.stats.committedOps.Load(); got != 3 {
		t.Fatalf("committedOps = %d, want 3", got)
	}
	// The next completion begins another commit.
	_ = p.c.enqueue(op(false, nil))
	p.st.finish(1, nil, true)
	if p.begins != 2 || p.stats.commits.Load() != 2 {
		t.Fatalf("second commit: %d begins, %d commits; want 2, 2", p.begins, p.stats.commits.Load())
	}
}

// TestCommitterBatchError: a failed batch, or one whose results do not
// match its ops, reaches every op's done as the batch error and is
// counted once per commit.
func TestCommitterBatchError(t *testing.T) {
	p := newCommitterProbe(10)
	boom := errors.New("boom")
	var got []error
	done := func(_ store.Result, err error) { got = append(got, err) }
	_ = p.c.enqueue(op(true, done), op(true, done))
	p.st.finish(0, boom, true)
	_ = p.c.enqueue(op(true, done))
	p.st.finish(2, nil, true) // two results for one op
	if len(got) != 3 || !errors.Is(got[0], boom) || !errors.Is(got[1], boom) || got[2] == nil {
		t.Fatalf("dones got %v, want boom, boom, a mismatch error", got)
	}
	if n := p.stats.commitErrors.Load(); n != 2 {
		t.Fatalf("commitErrors = %d, want 2", n)
	}
}

// TestCommitterDrain: drain returns once every hand-over completed.
func TestCommitterDrain(t *testing.T) {
	p := newCommitterProbe(10)
	_ = p.c.enqueue(op(false, nil))
	if p.c.idle() {
		t.Fatal("idle with an op in flight")
	}
	drained := make(chan struct{})
	go func() { p.c.drain(); close(drained) }()
	select {
	case <-drained:
		t.Fatal("drain returned with an op in flight")
	case <-time.After(20 * time.Millisecond):
	}
	p.st.finish(1, nil, true)
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
		t.Fatal("drain did not return after the completion")
	}
	if !p.c.idle() {
		t.Fatal("not idle after the drain")
	}
}
