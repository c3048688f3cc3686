package zsock

import (
	"errors"
	"fmt"
	"syscall"

	zmq "github.com/pebbe/zmq4"
)

// ErrOpen is returned by Open when the doorbell is open already.
var ErrOpen = errors.New("doorbell already open")

// Doorbell wakes a goroutine blocked in zmq Poll from any other
// goroutine. A poll loop can wait on its sockets or on a Go channel, not
// both; the doorbell turns a ring into an empty frame on an inproc PULL
// socket the loop polls beside its own. Rings coalesce: any number of
// them before the loop drains wakes it at least once, so a loop that
// drains the bell and then looks at everything it was rung for loses
// nothing.
//
// Ring is safe for concurrent use at any time, before Open and after
// Close too (a ring before Open wakes the first poll after it). Open,
// Socket, Drain and Close belong to the loop goroutine that owns the
// PULL socket.
type Doorbell struct {
	rings chan struct{}

	// The loop goroutine's, between Open and Close.
	pull    *zmq.Socket
	stop    chan struct{}
	stopped chan struct{}
	opens   int // makes each Open's endpoint new: a closed socket's name is released late
}

// NewDoorbell returns a closed doorbell; rings are kept (coalesced) until
// it is opened.
func NewDoorbell() *Doorbell { return &Doorbell{rings: make(chan struct{}, 1)} }

// Ring wakes the loop. It never blocks.
func (d *Doorbell) Ring() {
	select {
	case d.rings <- struct{}{}:
	default:
	}
}

// Open binds the PULL socket in zctx and starts the goroutine that owns
// the PUSH end. It returns the socket to poll (for POLLIN); the doorbell
// keeps owning it: call Drain when it polls readable, and Close, before
// zctx is terminated, to stop the goroutine and close both ends.
func (d *Doorbell) Open(zctx *zmq.Context) (*zmq.Socket, error) {
	if d.pull != nil {
		return nil, ErrOpen
	}
	d.opens++
	// Inproc names are per context, which may be shared.
	addr := fmt.Sprintf("inproc://titanic-doorbell-%p-%d", d, d.opens)
	pull, err := zctx.NewSocket(zmq.PULL)
	if err != nil {
		return nil, fmt.Errorf("doorbell socket: %w", err)
	}
	if err := pull.SetLinger(0); err != nil {
		_ = pull.Close()
		return nil, fmt.Errorf("doorbell socket: %w", err)
	}
	if err := pull.Bind(addr); err != nil {
		_ = pull.Close()
		return nil, fmt.Errorf("bind doorbell %s: %w", addr, err)
	}
	started := make(chan error, 1)
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		d.push(zctx, addr, stop, started)
	}()
	if err := <-started; err != nil {
		<-stopped
		_ = pull.Close()
		return nil, err
	}
	d.pull, d.stop, d.stopped = pull, stop, stopped
	return pull, nil
}

// push creates, uses and closes the PUSH end on its own goroutine (a
// socket has one owner): each ring becomes one empty frame.
func (d *Doorbell) push(zctx *zmq.Context, addr string, stop <-chan struct{}, started chan<- error) {
	push, err := zctx.NewSocket(zmq.PUSH)
	if err != nil {
		started <- fmt.Errorf("doorbell push socket: %w", err)
		return
	}
	defer push.Close()
	if err := push.SetLinger(0); err != nil {
		started <- fmt.Errorf("doorbell push socket: %w", err)
		return
	}
	if err := push.Connect(addr); err != nil {
		started <- fmt.Errorf("connect doorbell %s: %w", addr, err)
		return
	}
	started <- nil
	for {
		select {
		case <-stop:
			return
		case <-d.rings:
			// EAGAIN means frames are waiting already: the loop wakes
			// anyway, and nothing is lost.
			_, _ = push.SendBytes(nil, zmq.DONTWAIT)
		}
	}
}

// Socket is the PULL socket to poll; nil while closed.
func (d *Doorbell) Socket() *zmq.Socket { return d.pull }

// Drain reads every waiting frame, so that the next poll blocks until
// the next ring.
func (d *Doorbell) Drain() error {
	if d.pull == nil {
		return nil
	}
	for {
		if _, err := d.pull.RecvBytes(zmq.DONTWAIT); err != nil {
			if zmq.AsErrno(err) == zmq.Errno(syscall.EAGAIN) {
				return nil
			}
			return fmt.Errorf("doorbell receive: %w", err)
		}
	}
}

// Close stops the PUSH goroutine, waits for it, and closes the PULL
// socket. Closing a closed doorbell does nothing; it may be opened again.
func (d *Doorbell) Close() error {
	if d.pull == nil {
		return nil
	}
	close(d.stop)
	<-d.stopped
	err := d.pull.Close()
	d.pull, d.stop, d.stopped = nil, nil, nil
	if err != nil {
		return fmt.Errorf("close doorbell: %w", err)
	}
	return nil
}
