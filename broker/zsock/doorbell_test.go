package zsock

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
)

const within = 5 * time.Second

func newTestContext(t *testing.T) *Context {
	t.Helper()
	c, err := NewContext()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		done := make(chan error, 1)
		go func() { done <- c.Close() }()
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(within):
			t.Errorf("context not terminated within %s: a socket is still open", within)
		}
	})
	return c
}

// frames counts the frames the doorbell delivers until it stays quiet for
// quiet.
func frames(t *testing.T, d *Doorbell, quiet time.Duration) int {
	t.Helper()
	poller := zmq.NewPoller()
	poller.Add(d.Socket(), zmq.POLLIN)
	n := 0
	for {
		polled, err := poller.Poll(quiet)
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		if len(polled) == 0 {
			return n
		}
		if _, err := d.Socket().RecvBytes(0); err != nil {
			t.Fatalf("receive: %v", err)
		}
		n++
	}
}

// TestRingWakesPoll: a loop blocked in Poll with no timeout wakes on each
// ring from another goroutine, and stops once its context is done.
func TestRingWakesPoll(t *testing.T) {
	zc := newTestContext(t)
	d := NewDoorbell()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	woke := make(chan struct{}, 16)
	opened := make(chan error, 1)
	loopDone := make(chan error, 1)
	go func() {
		loopDone <- func() error {
			pull, err := d.Open(zc.ZMQ())
			opened <- err
			if err != nil {
				return err
			}
			defer d.Close()
			stop := context.AfterFunc(ctx, d.Ring)
			defer stop()
			poller := zmq.NewPoller()
			poller.Add(pull, zmq.POLLIN)
			for ctx.Err() == nil {
				if _, err := poller.Poll(-1); err != nil {
					return err
				}
				if err := d.Drain(); err != nil {
					return err
				}
				woke <- struct{}{}
			}
			return nil
		}()
	}()
	if err := <-opened; err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		d.Ring()
		select {
		case <-woke:
		case <-time.After(within):
			t.Fatalf("ring %d: poll not woken within %s", i, within)
		}
	}
	cancel()
	select {
	case err := <-loopDone:
		if err != nil {
			t.Fatalf("loop: %v", err)
		}
	case <-time.After(within):
		t.Fatalf("loop not stopped within %s of its context's end", within)
	}
}

// TestRingsCoalesce: rings before Open are kept, as one frame; rings
// while the loop is busy wake it, and leave no backlog behind.
func TestRingsCoalesce(t *testing.T) {
	zc := newTestContext(t)
	d := NewDoorbell()
	for range 1000 {
		d.Ring()
	}
	if _, err := d.Open(zc.ZMQ()); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if n := frames(t, d, 200*time.Millisecond); n != 1 {
		t.Fatalf("1000 rings before Open: %d frames, want exactly 1", n)
	}
	for range 10_000 {
		d.Ring()
	}
	n := frames(t, d, 200*time.Millisecond)
	if n < 1 || n > 10_000 {
		t.Fatalf("10000 rings: %d frames, want 1 to 10000", n)
	}
	// Drained: the next poll blocks until the next ring.
	if n := frames(t, d, 50*time.Millisecond); n != 0 {
		t.Fatalf("after draining: %d frames without a ring", n)
	}
	if err := d.Drain(); err != nil {
		t.Fatalf("drain of an empty doorbell: %v", err)
	}
}

// TestCloseStopsCleanly: Close stops the PUSH goroutine (no goroutine
// left, the context terminates), is idempotent, and the doorbell opens
// again, in a new endpoint, with rings made while closed kept.
func TestCloseStopsCleanly(t *testing.T) {
	zc := newTestContext(t)
	d := NewDoorbell()
	before := runtime.NumGoroutine()
	for round := range 3 {
		if _, err := d.Open(zc.ZMQ()); err != nil {
			t.Fatalf("open %d: %v", round, err)
		}
		if _, err := d.Open(zc.ZMQ()); !errors.Is(err, ErrOpen) {
			t.Fatalf("open while open: %v, want ErrOpen", err)
		}
		if n := frames(t, d, 50*time.Millisecond); round > 0 && n != 1 {
			t.Fatalf("round %d: the ring made while closed gave %d frames, want 1", round, n)
		}
		if err := d.Close(); err != nil {
			t.Fatalf("close %d: %v", round, err)
		}
		if err := d.Close(); err != nil {
			t.Fatalf("second close %d: %v", round, err)
		}
		if d.Socket() != nil {
			t.Fatal("closed doorbell still has a socket")
		}
		d.Ring() // kept for the next Open; never blocks while closed
		d.Ring()
	}
	// Close waited for the goroutine's body; give the runtime a bounded
	// moment to retire it.
	deadline := time.Now().Add(within)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d before, %d after Close\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond)
	}
}

// TestOpenFailsCleanly: an Open that cannot start leaves nothing behind.
func TestOpenFailsCleanly(t *testing.T) {
	z, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	if err := z.Term(); err != nil {
		t.Fatal(err)
	}
	d := NewDoorbell()
	if _, err := d.Open(z); err == nil {
		t.Fatal("open in a terminated context: no error")
	}
	if d.Socket() != nil {
		t.Fatal("failed open kept a socket")
	}
	if err := d.Close(); err != nil {
		t.Fatalf("close after a failed open: %v", err)
	}
}
