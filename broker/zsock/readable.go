package zsock

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// ErrTimeout is returned by Readable.Wait when the deadline passed before
// the socket had a message.
var ErrTimeout = errors.New("socket not readable before the deadline")

// ErrWoken is returned by Readable.Wait when Wake was called.
var ErrWoken = errors.New("woken")

// Readable waits for one socket to have a message to receive, parking the
// goroutine in Go's network poller rather than in zmq_poll. A zmq_poll
// that blocks is a cgo call that blocks: the runtime hands the goroutine's
// P to another thread while it waits and takes one back when it returns,
// two thread switches per wait; a Go park is a scheduler hand-off.
//
// It watches the socket's ZMQ_FD, libzmq's signal that the socket's state
// may have changed. That signal is edge-triggered and libzmq itself reads
// it inside every send, receive and ZMQ_EVENTS query, so Wait asks
// ZMQ_EVENTS first and parks only when that says nothing is waiting (the
// pattern zmq_getsockopt(3) prescribes); a signal between the query and
// the park wakes the park at once.
//
// Wake, safe from any goroutine, ends the Wait in progress or the next
// one: a loop that waits on its socket alone this way needs no Doorbell
// (no goroutine and inproc socket between a ring and the loop).
//
// A Readable belongs to the goroutine that owns its socket (but for
// Wake). Close it before or after the socket (it holds a duplicate of the
// descriptor, which it never reads).
type Readable struct {
	sock  *zmq.Socket
	f     *os.File
	rc    syscall.RawConn
	woken atomic.Bool
	// readable is r.check as a func value, made once: a closure made in
	// each wait, with the error it sets, was two allocations per wait.
	// evErr is check's ZMQ_EVENTS error; only the owner touches either.
	readable func(uintptr) bool
	evErr    error
}

// past is a deadline that has passed: setting it ends a park at once.
var past = time.Unix(1, 0)

// Wake makes the Wait in progress, or the next one, return ErrWoken.
// Wakes coalesce. It never blocks; after Close it does nothing.
func (r *Readable) Wake() {
	// The flag first: a Wait that sets its own deadline after this
	// deadline sees the flag; one that set it before parks and meets
	// this deadline. A flag already set has not been taken by a Wait
	// yet, and the Wake that set it sets the past deadline after it:
	// this Wake has nothing to add (a deadline change takes the poll
	// descriptor's lock and timer, once per answer the loop sends).
	if r.woken.Swap(true) {
		return
	}
	_ = r.f.SetReadDeadline(past)
}

// NewReadable prepares to wait on sock. It fails when the descriptor
// cannot be watched by Go's poller; callers may fall back to zmq_poll.
func NewReadable(sock *zmq.Socket) (*Readable, error) {
	fd, err := sock.GetFd()
	if err != nil {
		return nil, fmt.Errorf("socket descriptor: %w", err)
	}
	dup, err := syscall.Dup(fd)
	if err != nil {
		return nil, fmt.Errorf("duplicate socket descriptor: %w", err)
	}
	syscall.CloseOnExec(dup)
	// The descriptor is non-blocking (libzmq makes its signaler so), so
	// os.NewFile registers it with the poller.
	f := os.NewFile(uintptr(dup), "zmq-fd")
	rc, err := f.SyscallConn()
	if err == nil {
		// A file the poller does not watch refuses deadlines.
		err = f.SetReadDeadline(time.Time{})
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("watch socket descriptor: %w", err)
	}
	r := &Readable{sock: sock, f: f, rc: rc}
	r.readable = r.check
	return r, nil
}

// check is RawConn.Read's function for wait: whether the socket has a
// message, ZMQ_EVENTS's error in r.evErr.
func (r *Readable) check(uintptr) bool {
	ev, err := r.events()
	if err != nil {
		r.evErr = err
		return true
	}
	return ev&zmq.POLLIN != 0
}

// Wait returns nil once the socket has a message to receive (a receive
// with DONTWAIT then gets it), ErrWoken after a Wake (before looking at
// the socket), ErrTimeout at deadline, or the error of ZMQ_EVENTS.
func (r *Readable) Wait(deadline time.Time) error {
	for {
		err := r.wait(deadline)
		if !errors.Is(err, ErrTimeout) {
			return err
		}
		if r.woken.Swap(false) {
			return ErrWoken
		}
		if !time.Now().Before(deadline) {
			return ErrTimeout
		}
		// The past deadline of a Wake whose flag an earlier Wait took.
	}
}

func (r *Readable) wait(deadline time.Time) error {
	if r.woken.Swap(false) {
		return ErrWoken
	}
	if !time.Now().Before(deadline) {
		// Read would not even look: ask once.
		ev, err := r.events()
		if err != nil || ev&zmq.POLLIN != 0 {
			return err
		}
		return ErrTimeout
	}
	if err := r.f.SetReadDeadline(deadline); err != nil {
		return fmt.Errorf("socket descriptor deadline: %w", err)
	}
	if r.woken.Swap(false) {
		return ErrWoken
	}
	// Read forgets any signal it saw before it calls f, then parks until
	// the next one whenever f returns false: ZMQ_EVENTS must be asked in
	// f, after that reset, or a signal between the question and the park
	// would be lost. The descriptor is libzmq's to read: it never is here.
	r.evErr = nil
	err := r.rc.Read(r.readable)
	evErr := r.evErr
	r.evErr = nil
	switch {
	case evErr != nil:
		return evErr
	case errors.Is(err, os.ErrDeadlineExceeded):
		return ErrTimeout
	case err != nil:
		return fmt.Errorf("wait on socket descriptor: %w", err)
	}
	return nil
}

// events returns ZMQ_EVENTS. Asking it also runs libzmq's pending
// commands (a pipe that became readable is one), which re-arms the
// descriptor's signal.
func (r *Readable) events() (zmq.State, error) {
	if layoutOK() {
		if h := rawHandle(r.sock); h != nil {
			ev, err := rawEvents(h)
			if err != nil {
				return 0, fmt.Errorf("socket events: %w", err)
			}
			return ev, nil
		}
	}
	for {
		ev, err := r.sock.GetEvents()
		if err == nil {
			return ev, nil
		}
		if zmq.AsErrno(err) != zmq.Errno(syscall.EINTR) {
			return 0, fmt.Errorf("socket events: %w", err)
		}
	}
}

// Close stops watching the descriptor. It does not close the socket.
func (r *Readable) Close() error {
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("close socket descriptor: %w", err)
	}
	return nil
}

// PollTimeout is the time left until deadline (from now) as zmq_poll
// takes it: poll counts whole milliseconds, so it is rounded up (rounded
// down, a wait under a millisecond would return at once and spin), and
// not below zero.
func PollTimeout(now, deadline time.Time) time.Duration {
	d := max(deadline.Sub(now), 0)
	return (d + time.Millisecond - 1).Truncate(time.Millisecond)
}
