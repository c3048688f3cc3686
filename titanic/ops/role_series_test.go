package ops_test

import (
	"strings"
	"testing"

	"github.com/titanicmq/titanic/titanic/ops"
)

// titanic_role exports every known role at 0 or 1 "so that a role change
// does not make series appear and vanish" (metrics.go). A pair node that
// waits for its peer reports the Binary Star states "primary" or "backup"
// (through the binary: /healthz says 503 "primary", titanic_role{role=
// "primary"} 1), which are not among the known roles: the series appears
// while the node waits and vanishes once it is active or passive, the
// churn the known set exists to avoid, and an operator's query over the
// known roles does not see a node stuck waiting for its peer.
func TestRoleSeriesStableAcrossPairStates(t *testing.T) {
	fx := newFixture(t, func(c *ops.Config) {
		c.Cluster = &fakeCluster{status: ops.ClusterStatus{Mode: ops.ModePair, Role: ops.RoleActive, Active: true}}
	})
	samples, body := scrape(t, fx)
	t.Logf("%s", grepRole(body))
	for _, r := range []string{"primary", "backup"} {
		if _, ok := samples[`titanic_role{role="`+r+`"}`]; !ok {
			t.Errorf(`titanic_role{role=%q} not exported on an active pair node: it appears only while a node waits for its peer`, r)
		}
	}
}

func grepRole(body string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "titanic_role") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
