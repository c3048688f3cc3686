package broker

import "errors"

// ErrClosed is returned by Stats when the broker's Run has returned (or
// returns while the call waits), and by Run when it is called a second time.
var ErrClosed = errors.New("broker: closed")

// Errors the socket loop maps zmq errnos to, so that the protocol state
// never sees zmq.
var (
	// errUnroutable: the peer is gone (EHOSTUNREACH with
	// ZMQ_ROUTER_MANDATORY).
	errUnroutable = errors.New("peer unreachable")
	// errWouldBlock: the peer's pipe is at its high-water mark (EAGAIN).
	errWouldBlock = errors.New("peer not reading (high-water mark)")
)
