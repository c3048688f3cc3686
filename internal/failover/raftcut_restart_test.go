package failover

import (
	"strings"
	"testing"
	"time"
)

// TestPairRaftCutBothRestarted: only the raft port between the nodes is
// cut (Binary Star's link and the client endpoints up); the active goes
// on alone (README: the passive stands down) and acknowledges tickets
// the passive never receives. Then both nodes are SIGKILLed and started
// again, the raft port still cut: the passive's stand-down is forgotten,
// and Binary Star's rules (the primary takes over when both are passive)
// may pick the stale node. The stale node must never serve: nothing the
// active took alone may answer 400 or be lost; after the heal the pair is
// whole with every acknowledged ticket. Both ways: the primary active
// through the cut, and the backup.
func TestPairRaftCutBothRestarted(t *testing.T) {
	for _, activeRole := range []string{"primary", "backup"} {
		t.Run(activeRole+" active", func(t *testing.T) {
			p := loadedPair(t, pairLoad{workers: 3, clients: 4, timeout: 2 * clientTimeout, acks: 100, acksWithin: 30 * time.Second, wholeWithin: 30 * time.Second})
			active, passive, ld, dg := p.active, p.passive, p.ld, p.dg
			if active.name != map[string]string{"primary": "pa", "backup": "pb"}[activeRole] {
				t.Logf("making %s the active: killing %s", passive.name, active.name)
				active.kill()
				ld.progress(t, 50, 30*time.Second, "acks after the kill", dg)
				active.start(t)
				active, passive = waitPairHealthy(t, p.ctx, p.primary, p.backup, 60*time.Second)
			}
			ld.progress(t, 50, 30*time.Second, "acks before the cut", dg)
			t.Logf("cutting the raft port between the active %s and the passive %s", active.name, passive.name)
			cutRaftOnly(t, active, passive)
			ld.progress(t, 100, 30*time.Second, "acks of the active alone during the raft cut", dg)
			served := map[*node]int{}
			for _, n := range []*node{active, passive} {
				n.kill()
			}
			t.Logf("both killed; starting both again, the raft port still cut")
			p.primary.start(t)
			p.backup.start(t)
			for _, n := range []*node{active, passive} {
				served[n] = strings.Count(lifeLog(n), "msg=\"serving:")
			}
			start := ld.count()
			// Ten seconds of the cut after the restart (the load goes
			// on; acks may or may not come, as long as the stale node
			// serves nothing).
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				if n := strings.Count(lifeLog(passive), "msg=\"serving:"); n > served[passive] {
					t.Errorf("the stale node %s serves during the raft cut after both restarted%s", passive.name, dg())
					break
				}
				time.Sleep(200 * time.Millisecond) // sampling period, not synchronisation
			}
			t.Logf("%d acks in the 10 s of the cut after the restart (%s serving: %v)", ld.count()-start, active.name, strings.Count(lifeLog(active), "msg=\"serving:") > served[active])
			active.host.Heal(t)
			waitPairHealthy(t, p.ctx, p.primary, p.backup, 60*time.Second)
			ld.progress(t, 50, 30*time.Second, "acks after the heal", dg)
			acks := ld.finish(t, dg)
			checkAcks(t, p.ctx, p.brokers, acks, dg)
			checkOneServerPerTerm(t, p.primary, p.backup)
		})
	}
}
