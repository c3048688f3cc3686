package zsock

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// pair returns a connected ROUTER (bound) and DEALER, closed at cleanup.
func pair(t *testing.T) (router, dealer *zmq.Socket) {
	t.Helper()
	c := newTestContext(t)
	var err error
	if router, err = c.ZMQ().NewSocket(zmq.ROUTER); err != nil {
		t.Fatal(err)
	}
	if dealer, err = c.ZMQ().NewSocket(zmq.DEALER); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*zmq.Socket{router, dealer} {
		if err := s.SetLinger(0); err != nil {
			t.Fatal(err)
		}
	}
	// Registered after the context's: closed before it is terminated.
	t.Cleanup(func() { _ = router.Close(); _ = dealer.Close() })
	if err := router.Bind("tcp://127.0.0.1:*"); err != nil {
		t.Fatal(err)
	}
	ep, err := router.GetLastEndpoint()
	if err != nil {
		t.Fatal(err)
	}
	if err := dealer.Connect(ep); err != nil {
		t.Fatal(err)
	}
	return router, dealer
}

// TestReadableTimesOut: with nothing to receive, Wait returns ErrTimeout at
// its deadline, not before.
func TestReadableTimesOut(t *testing.T) {
	_, dealer := pair(t)
	r, err := NewReadable(dealer)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	start := time.Now()
	if err := r.Wait(start.Add(50 * time.Millisecond)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Wait on an idle socket: %v, want ErrTimeout", err)
	}
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Fatalf("Wait returned after %s, before its 50ms deadline", waited)
	}
}

// TestReadablePingPong: each answer wakes Wait, whether it arrives while
// the goroutine is parked or before it asks; a missed edge of ZMQ_FD would
// leave a message waiting and time the wait out.
func TestReadablePingPong(t *testing.T) {
	router, dealer := pair(t)
	r, err := NewReadable(dealer)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rr, err := NewReadable(router)
	if err != nil {
		t.Fatal(err)
	}
	defer rr.Close()
	echoed := make(chan error, 1)
	const rounds = 2000
	go func() { // owns router
		for range rounds {
			if err := rr.Wait(time.Now().Add(within)); err != nil {
				echoed <- fmt.Errorf("router wait: %w", err)
				return
			}
			msg, err := router.RecvMessageBytes(zmq.DONTWAIT)
			if err != nil {
				echoed <- fmt.Errorf("router receive: %w", err)
				return
			}
			if _, err := router.SendMessage(msg); err != nil {
				echoed <- fmt.Errorf("router send: %w", err)
				return
			}
		}
		echoed <- nil
	}()
	for i := range rounds {
		want := fmt.Sprint(i)
		if _, err := dealer.Send(want, 0); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			// Let the answer arrive before Wait looks.
			time.Sleep(100 * time.Microsecond)
		}
		if err := r.Wait(time.Now().Add(within)); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		got, err := dealer.Recv(zmq.DONTWAIT)
		if err != nil {
			t.Fatalf("round %d: Wait said readable, receive: %v", i, err)
		}
		if got != want {
			t.Fatalf("round %d: got %q, want %q", i, got, want)
		}
	}
	if err := <-echoed; err != nil {
		t.Fatal(err)
	}
}

// TestReadableWake: Wake ends a Wait parked on an idle socket, or the next
// Wait when none is parked; a woken Wait leaves nothing behind (the next
// one waits for its deadline); and of many Wakes racing with the waiter,
// the last is never lost.
func TestReadableWake(t *testing.T) {
	_, dealer := pair(t)
	r, err := NewReadable(dealer)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	r.Wake()
	if err := r.Wait(time.Now().Add(within)); !errors.Is(err, ErrWoken) {
		t.Fatalf("Wait after Wake: %v, want ErrWoken", err)
	}
	start := time.Now()
	if err := r.Wait(start.Add(30 * time.Millisecond)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Wait after a consumed Wake: %v, want ErrTimeout", err)
	}
	if waited := time.Since(start); waited < 30*time.Millisecond {
		t.Fatalf("Wait after a consumed Wake returned after %s, before its deadline", waited)
	}

	woke := make(chan error, 1)
	go func() { woke <- r.Wait(time.Now().Add(within)) }()
	time.Sleep(10 * time.Millisecond) // let it park; it must wake either way
	r.Wake()
	select {
	case err := <-woke:
		if !errors.Is(err, ErrWoken) {
			t.Fatalf("parked Wait: %v, want ErrWoken", err)
		}
	case <-time.After(within):
		t.Fatalf("a parked Wait did not wake within %s", within)
	}

	const n = 20000
	var count atomic.Int64
	go func() {
		for range n {
			count.Add(1)
			r.Wake()
		}
	}()
	for count.Load() < n {
		if err := r.Wait(time.Now().Add(within)); err != nil && !errors.Is(err, ErrWoken) {
			t.Fatalf("after %d of %d wakes: %v (a wake was lost)", count.Load(), n, err)
		}
	}
}
