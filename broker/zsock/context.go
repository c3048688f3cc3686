package zsock

import (
	"fmt"
	"sync"

	zmq "github.com/pebbe/zmq4"
)

// MaxSockets is how many sockets a Context may hold (libzmq's default,
// 1023, is too few for worker.MaxConcurrency slots of five sockets each:
// DEALER, its monitor's two, the doorbell's two).
const MaxSockets = 4096

// Context is a ZeroMQ context: an I/O thread that makes and serves the
// connections of every socket made in it. A Client or Worker makes its
// own when given none; programs with many of them share one (fewer
// threads), and close it after closing them.
type Context struct {
	z    *zmq.Context
	once sync.Once
	err  error
}

// NewContext makes a context and starts its I/O thread now, on the
// calling OS thread. A thread's network namespace is inherited by the
// threads it starts, so the connections of every socket made in the
// context are made from the namespace of the caller (a harness calls
// NewContext inside netns.Host.Do, which locks the goroutine to a thread
// in the namespace).
func NewContext() (*Context, error) {
	z, err := zmq.NewContext()
	if err != nil {
		return nil, fmt.Errorf("zmq context: %w", err)
	}
	// Room for many workers' slots or clients, each socket to a broker
	// with a monitor (two sockets more): libzmq's default is 1023.
	if err := z.SetMaxSockets(MaxSockets); err != nil {
		_ = z.Term()
		return nil, fmt.Errorf("zmq context: max sockets: %w", err)
	}
	// libzmq starts the I/O thread with the context's first socket.
	s, err := z.NewSocket(zmq.DEALER)
	if err == nil {
		err = s.Close()
	}
	if err != nil {
		_ = z.Term()
		return nil, fmt.Errorf("zmq context: first socket: %w", err)
	}
	return &Context{z: z}, nil
}

// ZMQ returns the underlying context, for packages that make sockets in
// it.
func (c *Context) ZMQ() *zmq.Context { return c.z }

// Close terminates the context. It blocks until every socket made in it
// is closed: close the clients and stop the workers that use it first.
// Later calls return the first call's result.
func (c *Context) Close() error {
	c.once.Do(func() {
		if err := c.z.Term(); err != nil {
			c.err = fmt.Errorf("terminate zmq context: %w", err)
		}
	})
	return c.err
}
