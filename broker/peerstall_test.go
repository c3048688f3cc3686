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
	eB, proxy, liveness := peerViaProxy(t)

	proxy.Stall()
	stalled := time.Now()
	eB.waitStats("B hears A again after A's state stream stalled", func(st broker.Stats) bool {
		return time.Since(stalled) > 3*liveness && aliveHere(st)
	})
}

// TestPeerHeardSoonAfterSilentPartition: the partition also drops the
// state SUB's reconnect, whose SYN the kernel retries seconds apart; the
// SUB abandons a connect unanswered for the peers' liveness and makes a
// new one, so the peer is alive here soon after the heal, not at the
// kernel's next retry (3.4 s after an 8 s cut without it).
func TestPeerHeardSoonAfterSilentPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("holds a partition for 8 s")
	}
	eB, proxy, liveness := peerViaProxy(t)

	proxy.Blackhole(t)
	proxy.Stall()
	eB.waitStats("B finds A silent", func(st broker.Stats) bool { return !aliveHere(st) })
	// The partition's length is the fault, not a wait for an event.
	time.Sleep(8 * time.Second)
	proxy.Heal(t)
	healed := time.Now()
	eB.waitStats("B hears A after the heal", aliveHere)
	took := time.Since(healed)
	if limit := 3*liveness + time.Second; took > limit {
		t.Fatalf("B heard A %v after the heal; want within %v", took.Round(time.Millisecond), limit)
	}
	t.Logf("B heard A %v after the heal (liveness %v)", took.Round(time.Millisecond), liveness)
}

// aliveHere: the one peer is alive in these stats.
func aliveHere(st broker.Stats) bool { return len(st.Peers) == 1 && st.Peers[0].Alive }

// peerViaProxy starts clusters A and B, B hearing A's state through a
// tcpstall proxy, and waits until B hears A. It returns B, the proxy and
// B's peer liveness (how long a silent peer stays alive).
func peerViaProxy(t *testing.T) (*env, *tcpstall.Proxy, time.Duration) {
	a := cluster{"A", freeTCP(t), freeTCP(t)}
	b := cluster{"B", freeTCP(t), freeTCP(t)}
	proxy := tcpstall.New(t, strings.TrimPrefix(a.state, "tcp://"))
	viaProxy := a
	viaProxy.state = proxy.Endpoint()
	cfgA, cfgB := testConfig(t), testConfig(t)
	cfgA.Peering, cfgB.Peering = peeringOf(a, b), peeringOf(b, viaProxy)
	start(t, cfgA, nil)
	eB := start(t, cfgB, nil)
	eB.waitStats("B hears A", aliveHere)
	return eB, proxy, time.Duration(cfgB.Peering.Liveness) * cfgB.Peering.StateEvery
}
