//go:build !linux

package harness

import (
	"net"
	"sync"
	"testing"
)

// ReservedEndpoint returns a tcp://127.0.0.1:PORT endpoint whose port was
// free a moment ago. Elsewhere than on Linux a bound socket that does not
// listen keeps a node from binding its port, so nothing holds it: another
// process may take it while the node is stopped (see the Linux version).
func ReservedEndpoint(t testing.TB) string {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		addr := l.Addr().String()
		l.Close()
		// The kernel may hand out the same port twice in a row.
		if _, dup := handedOut.LoadOrStore(addr, true); !dup {
			return "tcp://" + addr
		}
	}
	t.Fatal("no unused port in 100 tries")
	return ""
}

// handedOut holds the ports ReservedEndpoint returned in this test binary.
var handedOut sync.Map
