//go:build !linux

package harness

import "testing"

// ReservedEndpoint returns a tcp://127.0.0.1:PORT endpoint whose port was
// free a moment ago. Elsewhere than on Linux a bound socket that does not
// listen keeps a node from binding its port, so nothing holds it: another
// process may take it while the node is stopped (see the Linux version).
func ReservedEndpoint(t testing.TB) string {
	t.Helper()
	return FreeEndpoint(t)
}
