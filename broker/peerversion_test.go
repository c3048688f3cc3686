package broker

import "testing"

// A peering header of a newer protocol is told apart from garbage, so that
// the log names the peer's newer release.
func TestNewerPeer(t *testing.T) {
	for _, tc := range []struct {
		header string
		v      int
		newer  bool
	}{
		{"TPEER02", 2, true},
		{"TPEER10", 10, true},
		{peerHeader, PeerProtocol, false},
		{"TPEER00", 0, false},
		{"TPEER2", 0, false},
		{"TPEER002", 0, false},
		{"TPEERx2", 0, false},
		{"MDPC01", 0, false},
		{"", 0, false},
	} {
		v, newer := newerPeer([]byte(tc.header))
		if newer != tc.newer || newer && v != tc.v {
			t.Errorf("newerPeer(%q) = %d, %v; want %d, %v", tc.header, v, newer, tc.v, tc.newer)
		}
	}
}
