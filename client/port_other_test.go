//go:build !linux

package client_test

import (
	"net"
	"testing"
)

// reservedEndpoint returns a tcp://127.0.0.1:PORT endpoint whose port was
// free a moment ago. Elsewhere than on Linux a bound socket that does not
// listen keeps a node from binding its port, so nothing holds it: another
// process may take it while the node is stopped (see the Linux version).
func reservedEndpoint(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "tcp://" + l.Addr().String()
}
