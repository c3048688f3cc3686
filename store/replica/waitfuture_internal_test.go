package replica

import (
	"context"
	"errors"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// stallLogs is an in-memory raft log store whose StoreLogs waits while
// stalled: the leader's loop stores the entries it takes from its apply
// channel before it takes more, so the entries applied meanwhile stay in
// that (buffered) channel.
type stallLogs struct {
	*raft.InmemStore
	mu      sync.Mutex
	stalled chan struct{} // nil: not stalled
	entered chan struct{} // closed once a stalled StoreLogs waits
}

func (s *stallLogs) stall() (entered <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stalled, s.entered = make(chan struct{}), make(chan struct{})
	return s.entered
}

func (s *stallLogs) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stalled != nil {
		close(s.stalled)
		s.stalled = nil
	}
}

func (s *stallLogs) StoreLogs(logs []*raft.Log) error {
	s.mu.Lock()
	stalled, entered := s.stalled, s.entered
	if stalled != nil && entered != nil {
		close(entered)
		s.entered = nil
	}
	s.mu.Unlock()
	if stalled != nil {
		<-stalled
	}
	return s.InmemStore.StoreLogs(logs)
}

func (s *stallLogs) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

type nopApplyFSM struct{}

func (nopApplyFSM) Apply(*raft.Log) any                 { return nil }
func (nopApplyFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("no snapshots") }
func (nopApplyFSM) Restore(r io.ReadCloser) error       { return r.Close() }

// waitFutureGoroutines counts the goroutines waitFuture started that
// still wait for their future.
func waitFutureGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	return strings.Count(string(buf), "replica.waitFuture.func")
}

// TestWaitFutureLeavesNoGoroutine: raft (BatchApplyCh, as the replica sets
// it) never answers the futures of entries and barriers still queued in
// its apply channel when the instance shuts down (hashicorp/raft#498), nor
// those of verifications and leadership transfers in theirs.
// waitFuture returns all the same (outcome unknown), and must not leave
// behind the goroutine that waits for the future's answer: one such
// goroutine, holding its entry, was left for each of them at every
// reform, halt, resync or step-down of a loaded leader.
func TestWaitFutureLeavesNoGoroutine(t *testing.T) {
	before := waitFutureGoroutines()
	cfg := raft.DefaultConfig()
	cfg.LocalID = "solo"
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	cfg.BatchApplyCh = true
	cfg.Logger = hclog.NewNullLogger()
	logs := &stallLogs{InmemStore: raft.NewInmemStore()}
	addr, trans := raft.NewInmemTransport("solo")
	snaps := raft.NewInmemSnapshotStore()
	conf := raft.Configuration{Servers: []raft.Server{{ID: "solo", Address: addr}}}
	if err := raft.BootstrapCluster(cfg, logs, logs, snaps, trans, conf); err != nil {
		t.Fatal(err)
	}
	r, err := raft.NewRaft(cfg, nopApplyFSM{}, logs, logs, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Shutdown()
	deadline := time.Now().Add(5 * time.Second)
	for r.State() != raft.Leader {
		if time.Now().After(deadline) {
			t.Fatal("the single voter is not the leader within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}

	// The leader's loop stalls storing the first entry; the rest wait
	// in its apply channel.
	entered := logs.stall()
	futures := []raft.Future{r.ApplyLog(raft.Log{Data: []byte("first")}, time.Second)}
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the leader did not take the first entry within 5s")
	}
	for i := range 4 {
		futures = append(futures, r.ApplyLog(raft.Log{Data: []byte{byte(i)}}, time.Second))
	}
	futures = append(futures, r.Barrier(time.Second), r.VerifyLeader(), r.LeadershipTransfer())

	errs := make(chan error, len(futures))
	for _, f := range futures {
		go func() { errs <- waitFuture(context.Background(), r, f) }()
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		f := r.Shutdown()
		logs.release()
		_ = f.Error()
	}()
	for range futures {
		select {
		case err := <-errs:
			if err == nil {
				t.Error("a future answered without error after its raft shut down")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("waitFuture did not return within 10s of its raft's shutdown")
		}
	}
	<-stopped

	deadline = time.Now().Add(5 * time.Second)
	for {
		left := waitFutureGoroutines() - before
		if left <= 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of waitFuture still wait for a future raft will never answer, 5s after waitFuture returned", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
