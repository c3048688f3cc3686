//go:build linux

package harness

import (
	"strconv"
	"syscall"
	"testing"
)

// ReservedEndpoint returns a tcp://127.0.0.1:PORT endpoint whose port
// stays this test's until it ends, also while its node is stopped.
//
// A port released while a node is down is free for any process: another
// test binary's node (bound to "tcp://127.0.0.1:*") or listener may take
// it, and then the stopped shard answers, or its restart fails with
// "address already in use". So the port is held by a socket that is bound
// with SO_REUSEADDR but never listens. On Linux, the kernel then hands
// the port to no other bind of port 0 nor to an outgoing connection, yet
// lets the node, which binds it with SO_REUSEADDR too (libzmq does), bind
// and listen there; and with no listener on it the port refuses
// connections, as a crashed node's does.
func ReservedEndpoint(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("reserve a port: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		t.Fatalf("reserve a port: %v", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("reserve a port: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("reserve a port: %v", err)
	}
	return "tcp://127.0.0.1:" + strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)
}
