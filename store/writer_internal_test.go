package store

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// blockWriter occupies the writer goroutine with a control request until
// the returned function is called, so that tests can queue Apply calls
// deterministically. It returns once the writer has taken the request.
func blockWriter(t *testing.T, s *BoltStore) (release func()) {
	t.Helper()
	running, unblock := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.control(context.Background(), func() error {
			close(running)
			<-unblock
			return nil
		})
	}()
	select {
	case <-running:
	case <-time.After(10 * time.Second):
		t.Fatal("writer did not take the blocking request")
	}
	return func() {
		close(unblock)
		if err := <-done; err != nil {
			t.Errorf("blocking request: %v", err)
		}
	}
}

// queue puts ops in the writer's queue, as Apply does, and returns a
// function that waits for the outcome as Apply does. Unlike a goroutine
// calling Apply, the ops are known to be queued when queue returns.
func queue(t *testing.T, ctx context.Context, s *BoltStore, ops ...Op) (wait func() ([]Result, error)) {
	t.Helper()
	r := &request{ops: ops, done: make(chan outcome, 1)}
	if err := s.enqueue(r); err != nil {
		t.Fatal(err)
	}
	ch := make(chan outcome, 1)
	go func() { ch <- s.wait(ctx, r, false) }()
	return func() ([]Result, error) {
		o := <-ch
		return o.results, o.err
	}
}

func openTemp(t *testing.T, opts Options) *BoltStore {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "w.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Check(context.Background()); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("check: %v", err)
		}
		_ = s.Close()
	})
	return s
}

func submitOp(service string) Op {
	return Op{Kind: OpSubmit, ID: NewID(), Time: time.Now(), Service: service}
}

// queueSubmits queues n calls of one submit each.
func queueSubmits(t *testing.T, ctx context.Context, s *BoltStore, n int) (ops []Op, wait func() []error) {
	ops = make([]Op, n)
	waits := make([]func() ([]Result, error), n)
	for i := range ops {
		ops[i] = submitOp("svc")
		waits[i] = queue(t, ctx, s, ops[i])
	}
	return ops, func() []error {
		errs := make([]error, n)
		for i, w := range waits {
			res, err := w()
			if err == nil {
				err = res[0].Err
			}
			errs[i] = err
		}
		return errs
	}
}

// TestQueuedCallsShareOneCommit: everything queued while the writer is
// busy goes into the next transaction, up to MaxBatch ops.
func TestQueuedCallsShareOneCommit(t *testing.T) {
	s := openTemp(t, Options{MaxBatch: 4})
	release := blockWriter(t, s)
	before := s.commits.Load()
	_, wait := queueSubmits(t, context.Background(), s, 10)
	release()
	for _, err := range wait() {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := s.commits.Load() - before; got != 3 {
		t.Fatalf("%d commits for 10 queued calls with MaxBatch 4, want 3", got)
	}
}

// TestCancelWhileQueued: a call withdrawn before the writer takes it is
// not applied.
func TestCancelWhileQueued(t *testing.T) {
	s := openTemp(t, Options{})
	release := blockWriter(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	ops, wait := queueSubmits(t, ctx, s, 3)
	cancel()
	errs := wait()
	release()
	for i, err := range errs {
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("apply %d: err = %v, want context.Canceled", i, err)
		}
		if _, err := s.Get(context.Background(), ops[i].ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("withdrawn op was applied: %v", err)
		}
	}
	s.mu.Lock()
	n := len(s.queue)
	s.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d withdrawn requests still queued", n)
	}
}

// TestFailingCallIsIsolated: a bbolt-level failure while applying one
// call's ops fails that call only; the batch it shared is retried without
// it. A panic while applying (a bug such as session 13's write arena's)
// is such a failure too: it used to unwind through the writer goroutine
// and take the process down.
func TestFailingCallIsIsolated(t *testing.T) {
	injected := errors.New("injected")
	for _, tc := range []struct {
		name string
		fail func()
		want func(error) bool
	}{
		{"error", nil, func(err error) bool { return errors.Is(err, injected) }},
		{"panic", func() { panic("index out of range [7] with length 3") },
			func(err error) bool {
				return err != nil && strings.Contains(err.Error(), "panicked: index out of range")
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTemp(t, Options{})
			s.failOp = func(op *Op) error {
				if op.Service != "poison" {
					return nil
				}
				if tc.fail != nil {
					tc.fail()
				}
				return injected
			}
			release := blockWriter(t, s)
			ops, wait := queueSubmits(t, context.Background(), s, 5)
			waitBad := queue(t, context.Background(), s, submitOp("svc"), submitOp("poison"))
			release()
			errs := wait()
			if _, badErr := waitBad(); !tc.want(badErr) {
				t.Fatalf("poisoned call: err = %v", badErr)
			}
			for i, err := range errs {
				if err != nil {
					t.Fatalf("innocent call %d: %v", i, err)
				}
				if _, err := s.Get(context.Background(), ops[i].ID); err != nil {
					t.Fatalf("innocent call %d not applied: %v", i, err)
				}
			}
			// The writer still commits.
			if _, err := s.Apply(context.Background(), []Op{submitOp("svc")}); err != nil {
				t.Fatalf("apply after the poisoned call: %v", err)
			}
			st, err := s.Stats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if st.Services["svc"].Pending != 6 {
				t.Fatalf("pending %+v, want 6: the poisoned call partly applied, or a later one lost", st.Services)
			}
		})
	}
}

// TestBatchesAreByteBounded: calls queued while the writer is busy share a
// commit only up to MaxBatchBytes; a call that would pass the bound starts
// the next commit, and a call larger than the bound commits alone. The
// commits are read from ApplyAsync's Done.Last, which also checks that the
// dones come in hand-over order.
func TestBatchesAreByteBounded(t *testing.T) {
	const bound = 10_000
	s := openTemp(t, Options{MaxBatchBytes: bound})
	body := func(n int) Op {
		o := submitOp("svc")
		o.Body = [][]byte{make([]byte, n)}
		return o
	}
	calls := []struct {
		op   Op
		last bool // the last call of its commit
	}{
		{body(4000), false}, // a and b fit in one commit
		{body(4000), true},
		{body(4000), true},      // c: a+b+c would pass the bound
		{body(3 * bound), true}, // d: oversized, alone
		{body(100), false},      // e and f: the next commit
		{body(100), true},
	}
	release := blockWriter(t, s)
	before := s.commits.Load()
	type got struct {
		i    int
		done Done
	}
	dones := make(chan got, len(calls))
	for i, c := range calls {
		s.ApplyAsync([]Op{c.op}, func(d Done) { dones <- got{i, d} })
	}
	release()
	for want, c := range calls {
		var g got
		select {
		case g = <-dones:
		case <-time.After(10 * time.Second):
			t.Fatalf("call %d: done never called", want)
		}
		if g.i != want {
			t.Fatalf("done of call %d came in place %d", g.i, want)
		}
		if g.done.Err != nil || len(g.done.Results) != 1 || g.done.Results[0].Err != nil {
			t.Fatalf("call %d: %+v", g.i, g.done)
		}
		if g.done.Last != c.last {
			t.Fatalf("call %d (%d bytes): Last = %v, want %v", g.i, OpsSize([]Op{c.op}), g.done.Last, c.last)
		}
		if _, err := s.Get(context.Background(), c.op.ID); err != nil {
			t.Fatalf("call %d not applied: %v", g.i, err)
		}
	}
	if n := s.commits.Load() - before; n != 4 {
		t.Fatalf("%d commits, want 4", n)
	}
}

// TestOpsSizeCountsFrames: the size a batch is bounded by grows with every
// frame and string an op carries.
func TestOpsSizeCountsFrames(t *testing.T) {
	small := OpsSize([]Op{{Kind: OpSubmit, Service: "s"}})
	big := OpsSize([]Op{{Kind: OpSubmit, Service: "s", Body: [][]byte{make([]byte, 1000), make([]byte, 24)}, IdemKey: "k"}})
	if big-small < 1025 {
		t.Fatalf("OpsSize grew by %d for 1025 more bytes", big-small)
	}
	reply := OpsSize([]Op{{Kind: OpReply, Reply: [][]byte{make([]byte, 5000)}}})
	if reply < 5000 {
		t.Fatalf("OpsSize of a 5000-byte reply = %d", reply)
	}
}
