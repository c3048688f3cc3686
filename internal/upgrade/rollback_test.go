package upgrade

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// waitClusterVersion waits until the node at endpoint says its cluster
// version is want (titanic.cluster.version, current binary only).
func waitClusterVersion(t *testing.T, ctx context.Context, c *client.Client, want int, dg func() string) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("cluster version %d", want), func() error {
		rep, err := c.Request(ctx, tsp.SvcVersion, [][]byte{{}})
		if err != nil {
			return err
		}
		for _, f := range rep {
			if string(f) == fmt.Sprintf("cluster=%d", want) {
				return nil
			}
		}
		return fmt.Errorf("titanic.cluster.version: %q", rep)
	}, dg)
}

// TestRollbackAfterVersionRaiseRefused: once a pair's cluster version is
// raised, either member may write ops the first release cannot read. That
// release skips such log entries instead of stopping: a node rolled back
// to it served, after a failover, without tickets acknowledged in them
// (found by a reviewer of upgrades). The raise now moves every store to
// format 2, which the first release refuses to open: the rollback is
// refused before it can lose anything, and the node starts again on the
// current binary.
func TestRollbackAfterVersionRaiseRefused(t *testing.T) {
	_, oldBin, newBin := binaries(t)
	primary, backup := pairNodes(t)
	all := []*node{primary, backup}
	brokers := endpoints(all...)
	dg := func() string { return diag(all...) + "\nWARN/ERROR:\n" + warnings(all...) }
	primary.mustStart(t, "new", newBin, all...)
	backup.mustStart(t, "new", newBin, all...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, passive := waitPairHealthy(t, ctx, primary, backup, 30*time.Second, "new pair")
	c := versionClient(t, brokers)
	waitClusterVersion(t, ctx, c, store.OpsRecordVersion, dg)
	// Every member applied the raise (the passive too) before it stops.
	waitPairHealthy(t, ctx, primary, backup, 30*time.Second, "pair after the raise")
	t.Logf("roll the passive %s back to the previous release", passive.name)
	passive.stop(t)
	err := passive.start(t, "old", oldBin)
	if err == nil {
		t.Fatalf("the previous release started on %s's data after the cluster version was raised: it skips the entries it cannot read%s", passive.name, dg())
	}
	if !strings.Contains(err.Error(), "format version 2") {
		t.Logf("refused, not saying format version 2: %v", err)
	}
	passive.mustStart(t, "new", newBin, all...)
	waitPairHealthy(t, ctx, primary, backup, 30*time.Second, "pair with the node started again on the current binary")
}
