package netns

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
)

// setnsTrap is setns(2)'s number; package syscall lacks it on some
// architectures (amd64 among them).
var setnsTrap = map[string]uintptr{
	"amd64": 308, "386": 346, "arm": 375, "arm64": 268, "riscv64": 268,
	"loong64": 268, "ppc64": 350, "ppc64le": 350, "s390x": 339,
}[runtime.GOARCH]

// Dial connects from inside the host's namespace: the socket is made
// there, so the connection is the host's, and it can be used from any
// goroutine afterwards.
func (h *Host) Dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := h.inNS(func() error {
		var err error
		c, err = (&net.Dialer{Timeout: timeout}).Dial(network, addr)
		return err
	})
	return c, err
}

// Listen listens inside the host's namespace (for instance on Addr+":0");
// the listener can be used from any goroutine afterwards.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := h.inNS(func() error {
		var err error
		l, err = (&net.ListenConfig{}).Listen(context.Background(), network, addr)
		return err
	})
	return l, err
}

// Do runs fn on an OS thread moved into the host's namespace and returns
// its error. Sockets fn makes belong to the host, and so do the threads it
// starts: the I/O threads of a ZeroMQ context, which libzmq starts with
// the context's first socket, make every connection of that context from
// the host, whichever goroutine uses its sockets later. Goroutines fn
// starts do not run in the namespace.
func (h *Host) Do(fn func() error) error { return h.inNS(fn) }

// inNS runs fn on an OS thread moved into the host's namespace. The thread
// is locked and never unlocked, so the runtime ends it when fn returns and
// no other goroutine runs in that namespace. Sockets fn makes stay there.
// fn must not make its sockets from other goroutines.
func (h *Host) inNS(fn func() error) error {
	if setnsTrap == 0 {
		return fmt.Errorf("netns: setns is not known on %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join(netnsDir, h.NS))
		if err != nil {
			errc <- err
			return
		}
		_, _, e := syscall.RawSyscall(setnsTrap, f.Fd(), syscall.CLONE_NEWNET, 0)
		f.Close()
		if e != 0 {
			errc <- fmt.Errorf("netns: setns %s: %w", h.NS, e)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
