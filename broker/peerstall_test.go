package broker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/internal/tcpstall"
)

// TestPeerStalledStateStreamReconnects: when a peer's state stream to
// this broker stalls (as a silent partition leaves it once healed: the
// peer's TCP retransmissions in backoff), the state SUB drops the
// connection after its heartbeat timeout and connects again, and the
// peer is alive here again instead of dead until the stream resumes.
func TestPeerStalledStateStreamReconnects(t *testing.T) {
	a := cluster{"A", freeTCP(t), freeTCP(t)}
	b := cluster{"B", freeTCP(t), freeTCP(t)}
	proxy := tcpstall.New(t, strings.TrimPrefix(a.state, "tcp://"))
	viaProxy := a
	viaProxy.state = proxy.Endpoint()
	cfgA, cfgB := testConfig(t), testConfig(t)
	cfgA.Peering, cfgB.Peering = peeringOf(a, b), peeringOf(b, viaProxy)
	start(t, cfgA, nil)
	eB := start(t, cfgB, nil)
	aliveHere := func(st broker.Stats) bool { return len(st.Peers) == 1 && st.Peers[0].Alive }
	eB.waitStats("B hears A", aliveHere)

	proxy.Stall()
	stalled := time.Now()
	liveness := time.Duration(cfgB.Peering.Liveness) * cfgB.Peering.StateEvery
	eB.waitStats("B hears A again after A's state stream stalled", func(st broker.Stats) bool {
		return time.Since(stalled) > 3*liveness && aliveHere(st)
	})
}
