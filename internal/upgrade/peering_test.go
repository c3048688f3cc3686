package upgrade

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/netns"
)

// Peering ports of the mixed-version test (both releases speak TPEER01).
const (
	mixedCloudPort = 5570
	mixedStatePort = 5571
)

// TestMixedPeering peers a cluster of the previous release (A) with one
// of the current binary (B), both single nodes: work submitted to B with
// workers only on A is forwarded to A and answered, then the other way
// round (workers only on B, work submitted to A), then A is upgraded and
// the work submitted meanwhile is answered too. Every acknowledged
// ticket is answered by the cluster that acknowledged it.
func TestMixedPeering(t *testing.T) {
	_, oldBin, newBin := binaries(t)
	net := netns.New(t)
	a, b := newNode(net, "pa", t), newNode(net, "pb", t)
	keepLogs(t, a, b)
	net.Attach()
	peerArgs := func(self, other *node, name, otherName string) []string {
		return append([]string{
			"--peering-name", name,
			"--peering-cloud-listen", self.host.Endpoint(mixedCloudPort), "--peering-state-listen", self.host.Endpoint(mixedStatePort),
			"--peering-peers", otherName + "=" + other.host.Endpoint(mixedCloudPort) + "+" + other.host.Endpoint(mixedStatePort),
		}, fastFlags...)
	}
	a.args = peerArgs(a, b, "A", "B")
	b.args = peerArgs(b, a, "B", "A")
	all := []*node{a, b}
	dg := func() string { return diag(all...) }
	a.mustStart(t, "old", oldBin, all...)
	b.mustStart(t, "new", newBin, all...)
	defer func() { t.Logf("WARN/ERROR lines of the nodes:\n%s", warnings(all...)) }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// checkAcks also asserts that the store holds no ticket nobody
	// acknowledged: it is given every ack of the cluster so far.
	acked := map[*node][]ack{}
	phase := func(what string, workersAt, submitTo *node, n int) {
		t.Helper()
		wctx, wcancel := context.WithCancel(ctx)
		echoWorkers(t, wctx, endpoints(workersAt), 2)
		ld := startKeyedLoad(t, ctx, endpoints(submitTo), 2, fmt.Sprintf("p%d-", len(acked[submitTo])))
		ld.progress(t, n, 60*time.Second, what, dg)
		acks := ld.finish(t, dg)
		acked[submitTo] = append(acked[submitTo], acks...)
		// The replies come from the other cluster's workers: wait for
		// them while those workers still run.
		checkAcks(t, ctx, endpoints(submitTo), acked[submitTo], dg)
		wcancel()
		t.Logf("%s: %d acks answered", what, len(acks))
	}
	phase("old A's workers answer work submitted to new B", a, b, 40)
	phase("new B's workers answer work submitted to old A", b, a, 40)

	t.Logf("upgrade A")
	a.stop(t)
	a.mustStart(t, "new", newBin, all...)
	phase("upgraded A's workers answer work submitted to B", a, b, 40)
	if w := warnings(all...); strings.Contains(w, "newer peering protocol") {
		t.Fatalf("a peer was taken for a newer protocol:\n%s", w)
	}
}
