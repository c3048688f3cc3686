package failover

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestPairRestoredBesideEmpty: README (Restore) says a pair is restored by
// restoring the same backup on every node; one restored node beside an
// empty one "is not enough". An operator may still do it. What a pair
// must not do then is lose what the backup holds: either the restored
// tickets reach the empty node (it starts from the restored node's
// snapshot) or the pair refuses to serve and says why. Both ways round:
// the backup restored beside an emptied primary, and the primary beside
// an emptied backup. Once the pair is whole, the restored node is killed
// and every ticket the backup held must be answered by the other node
// alone.
func TestPairRestoredBesideEmpty(t *testing.T) {
	for _, restoreOn := range []string{"backup", "primary"} {
		t.Run("restored "+restoreOn, func(t *testing.T) {
			p := loadedPair(t, pairLoad{workers: 3, clients: 4, timeout: clientTimeout, acks: 100, acksWithin: 60 * time.Second, wholeWithin: 60 * time.Second})
			p.ld.progress(t, 100, 30*time.Second, "acks before the backup", p.dg)
			backed := p.ld.finish(t, p.dg)
			restored, emptied := p.primary, p.backup
			if restoreOn == "backup" {
				restored, emptied = p.backup, p.primary
			}
			other := p.passive
			// The passive stops first (no takeover); only one node is
			// restored, the other's data directory emptied.
			backupRestore(t, p.active, []*node{other, p.active}, p.dg)
			wipe(t, emptied)
			t.Logf("%s restored from the backup (%d acks), %s emptied", restored.name, len(backed), emptied.name)
			p.primary.start(t)
			p.backup.start(t)
			active, passive := waitPairHealthy(t, p.ctx, p.primary, p.backup, 60*time.Second)
			t.Logf("pair whole: %s active", active.name)
			for _, n := range []*node{p.primary, p.backup} {
				for _, l := range strings.Split(lifeLog(n), "\n") {
					if strings.Contains(l, "bootstrapped") || strings.Contains(l, "diverged") || strings.Contains(l, "snapshot") && strings.Contains(l, "restored") {
						t.Logf("%s: %s", n.name, l)
					}
				}
			}
			checkAcks(t, p.ctx, p.brokers, backed, p.dg)
			ld := startLoadKeys(t, p.ctx, p.brokers, 4, clientTimeout, "r")
			ld.progress(t, 100, 30*time.Second, "acks of the new pair", p.dg)
			waitPairHealthy(t, p.ctx, p.primary, p.backup, 60*time.Second)
			t.Logf("killing the restored node %s; %s must hold every ticket", restored.name, emptied.name)
			restored.kill()
			ld.progress(t, 50, 30*time.Second, fmt.Sprintf("acks after killing %s (active was %s, passive %s)", restored.name, active.name, passive.name), p.dg)
			acks := append(backed, ld.finish(t, p.dg)...)
			checkAcks(t, p.ctx, []string{emptied.endpoint()}, acks, p.dg)
		})
	}
}
