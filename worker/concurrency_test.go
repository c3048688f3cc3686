package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker/mdp"
)

// next receives the next message that is not a HEARTBEAT, from any of the
// worker's connections, within wait.
func (b *fakeBroker) next(what string) (id string, cmd mdp.Command, frames [][]byte) {
	b.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			b.t.Fatalf("%s: nothing but heartbeats from the worker within %s", what, wait)
		}
		id, frames, ok := b.recv(left)
		if !ok {
			continue
		}
		if cmd := commandOf(b.t, frames); cmd != mdp.Heartbeat {
			return id, cmd, frames
		}
	}
}

// readySlots receives n READYs, on n different connections, and returns
// their routing ids.
func (b *fakeBroker) readySlots(n int) []string {
	b.t.Helper()
	var ids []string
	for len(ids) < n {
		id, cmd, frames := b.next(fmt.Sprintf("READY %d of %d", len(ids)+1, n))
		if cmd != mdp.Ready {
			b.t.Fatalf("worker sent %s (%q) before its %d READYs", cmd, frames, n)
		}
		for _, seen := range ids {
			if seen == id {
				b.t.Fatalf("a second READY on connection %x: slots must be connections of their own", id)
			}
		}
		ids = append(ids, id)
	}
	return ids
}

// TestConcurrencyRunsNAtOnce: a worker of Concurrency 3 registers as 3
// workers, one connection each, and runs their 3 requests at once: each
// handler call waits (bounded) until all 3 have arrived.
func TestConcurrencyRunsNAtOnce(t *testing.T) {
	const n = 3
	b := newFakeBroker(t)
	var arrived atomic.Int32
	together := make(chan struct{})
	var mu sync.Mutex
	slots := map[int]bool{}
	h := func(ctx context.Context, req [][]byte) ([][]byte, error) {
		slot, ok := SlotOf(ctx)
		if !ok {
			return nil, errors.New("no slot in the handler's context")
		}
		mu.Lock()
		slots[slot] = true
		mu.Unlock()
		if arrived.Add(1) == n {
			close(together)
		}
		select {
		case <-together:
			return [][]byte{fmt.Appendf(nil, "slot%d:%s", slot, req[0])}, nil
		case <-time.After(wait):
			return nil, fmt.Errorf("only %d of %d handler calls ran at once within %s", arrived.Load(), n, wait)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	// A high liveness: the fake broker sends no heartbeats of its own.
	r := startWorker(t, Config{Brokers: []string{b.ep}, Concurrency: n, HeartbeatInterval: 50 * time.Millisecond, Liveness: 100}, h)
	ids := b.readySlots(n)
	b.expectNothing(fmt.Sprintf("after %d READYs (no more slots than Concurrency)", n))
	for _, id := range ids {
		b.request(id, []byte("client-"+id), []byte("job"))
	}
	for range n {
		id, cmd, frames := b.next("replies")
		if cmd == mdp.Fail {
			t.Fatalf("slot on connection %x failed: %s", id, frames[len(frames)-1])
		}
		if cmd != mdp.Reply {
			t.Fatalf("worker sent %s (%q), want REPLY", cmd, frames)
		}
		if string(frames[3]) != "client-"+id {
			t.Fatalf("REPLY on connection %x is for client %q: each slot answers its own request", id, frames[3])
		}
		if !strings.HasPrefix(string(frames[5]), "slot") || !strings.HasSuffix(string(frames[5]), ":job") {
			t.Fatalf("REPLY body %q, want slotN:job", frames[5])
		}
	}
	if _, err := r.shutdown(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(slots) != n || !slots[0] || !slots[n-1] {
		t.Errorf("handler calls came from slots %v, want 0 to %d", slots, n-1)
	}
	if st := r.w.Stats(); st.Requests != n || st.Replies != n || st.Dropped != 0 {
		t.Errorf("stats %+v, want %d requests and replies", st, n)
	}
}

// TestDrainFinishesRunningRequest: when Run's context is done, an idle
// slot disconnects at once; a busy one keeps heartbeating, lets its
// handler finish (its context not cancelled), sends the REPLY, then
// DISCONNECT.
func TestDrainFinishesRunningRequest(t *testing.T) {
	b := newFakeBroker(t)
	started, release, cancelled := make(chan struct{}), make(chan struct{}), make(chan struct{})
	r := startWorker(t, Config{Brokers: []string{b.ep}, Concurrency: 2, DrainTimeout: 2 * wait,
		HeartbeatInterval: 50 * time.Millisecond, Liveness: 100},
		func(ctx context.Context, req [][]byte) ([][]byte, error) {
			close(started)
			select {
			case <-release:
				return [][]byte{[]byte("finished")}, nil
			case <-ctx.Done():
				close(cancelled)
				return nil, ctx.Err()
			}
		})
	ids := b.readySlots(2)
	busy, idle := ids[0], ids[1]
	b.request(busy, []byte("c"), []byte("long"))
	select {
	case <-started:
	case <-time.After(wait):
		t.Fatalf("handler not called within %s", wait)
	}
	r.stop()
	if id, cmd, frames := b.next("after cancel"); id != idle || cmd != mdp.Disconnect {
		t.Fatalf("after cancel the worker sent %s (%q) on %x, want DISCONNECT from the idle slot %x (busy: %x)", cmd, frames, id, idle, busy)
	}
	// The busy slot stays: it heartbeats, and sends nothing else.
	for beats, deadline := 0, time.Now().Add(wait); beats < 3; {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("the draining slot sent %d HEARTBEATs in %s (interval 50ms), want 3", beats, wait)
		}
		id, frames, ok := b.recv(left)
		if !ok {
			continue
		}
		if cmd := commandOf(t, frames); cmd != mdp.Heartbeat || id != busy {
			t.Fatalf("draining, the worker sent %s on %x, want only HEARTBEATs from the busy slot %x", cmd, id, busy)
		}
		beats++
	}
	select {
	case <-cancelled:
		t.Fatal("the handler's context was cancelled while the worker drained")
	default:
	}
	close(release)
	if id, cmd, frames := b.next("drained request"); id != busy || cmd != mdp.Reply || string(frames[5]) != "finished" {
		t.Fatalf("worker sent %s (%q) on %x, want the REPLY finished on %x", cmd, frames, id, busy)
	}
	if id, cmd, _ := b.next("after the drained REPLY"); id != busy || cmd != mdp.Disconnect {
		t.Fatalf("worker sent %s on %x, want DISCONNECT from %x", cmd, id, busy)
	}
	if _, err := r.shutdown(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := r.w.Stats(); st.Replies != 1 || st.Discarded != 0 {
		t.Errorf("stats %+v, want 1 reply, nothing discarded", st)
	}
}

// TestDrainTimeoutCancels: a handler that outlasts DrainTimeout has its
// context cancelled then, and its result is discarded.
func TestDrainTimeoutCancels(t *testing.T) {
	const drain = 200 * time.Millisecond
	b := newFakeBroker(t)
	started, cancelled := make(chan struct{}), make(chan struct{})
	r := startWorker(t, Config{Brokers: []string{b.ep}, DrainTimeout: drain, HeartbeatInterval: 50 * time.Millisecond, Liveness: 100},
		func(ctx context.Context, _ [][]byte) ([][]byte, error) {
			close(started)
			<-ctx.Done()
			close(cancelled)
			return nil, ctx.Err()
		})
	id, _, _ := b.expect(mdp.Ready, "connect")
	b.request(id, []byte("c"), []byte("forever"))
	select {
	case <-started:
	case <-time.After(wait):
		t.Fatalf("handler not called within %s", wait)
	}
	took, err := r.shutdown()
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if took < drain {
		t.Errorf("Run returned %s after cancel, before the drain timeout of %s", took, drain)
	}
	b.expect(mdp.Disconnect, "after the drain timeout")
	select {
	case <-cancelled:
	case <-time.After(wait):
		t.Fatalf("the handler's context was not cancelled within %s of the drain timeout", wait)
	}
	if st := r.w.Stats(); st.Discarded != 1 || st.Replies != 0 || st.Failures != 0 {
		t.Errorf("stats %+v, want 1 discarded result and no reply", st)
	}
}

// MaxConcurrency slots all connect, also waiting in zmq_poll (a doorbell
// each): with a socket monitor per connection a slot holds five sockets,
// more than libzmq's default 1023 in all, and a slot that could not make
// its DEALER failed Run.
func TestMaxConcurrencyConnects(t *testing.T) {
	for _, pollOnly := range []bool{false, true} {
		b := newFakeBroker(t)
		startWorkerWith(t, Config{Brokers: []string{b.ep}, HeartbeatInterval: time.Second, Liveness: 10, Concurrency: MaxConcurrency},
			echo, func(w *Worker) { w.pollOnly = pollOnly })
		for range MaxConcurrency {
			b.expect(mdp.Ready, "connect")
		}
	}
}
