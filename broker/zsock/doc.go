// Package zsock owns the ZeroMQ plumbing that the broker, the client and
// the worker share, and nothing else: the Doorbell that wakes a poll loop
// from other goroutines; Readable, which waits for one socket in Go's
// network poller rather than in a blocking zmq_poll, and can be woken from
// other goroutines; Frames, which receives and sends a whole message in
// one cgo call; Monitor, a socket monitor that tells a connection refused,
// lost or refused at its security handshake (Conn reads its events, and
// HandshakeFailure and AuthRefused say what to say of it); PollTimeout,
// a deadline as zmq_poll takes it; and Context, a ZeroMQ context that
// programs with many clients or workers share, made where its I/O thread
// must live (a network namespace, for test harnesses). It imports no other titanic
// package, so client and worker import it without importing server code.
package zsock
