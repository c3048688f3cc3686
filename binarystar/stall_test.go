package binarystar

import (
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/tcpstall"
)

// TestStalledPeerStreamReconnects: once the peer's stream to this node
// stalls (it hears this node, this node hears nothing), the state SUB
// drops the connection after its heartbeat timeout and connects again,
// and the node hears its peer. Without ZMTP heartbeats it waited for the
// stalled stream: 12 s of a split brain going on after a heal in the
// fault suite.
func TestStalledPeerStreamReconnects(t *testing.T) {
	aEP, bEP := freeEndpoint(t), freeEndpoint(t)
	proxy := tcpstall.New(t, strings.TrimPrefix(aEP, "tcp://"))
	start(t, "primary", testConfig(Primary, aEP, bEP))
	b := start(t, "backup", testConfig(Backup, bEP, proxy.Endpoint()))
	waitFor(t, "the backup to hear the primary", b.PeerAlive)

	proxy.Stall()
	stalled := time.Now()
	quiet := 3 * b.PeerTimeout()
	waitFor(t, "the backup to hear the primary again after its stream stalled", func() bool {
		return time.Since(stalled) > quiet && b.PeerAlive()
	})
}
