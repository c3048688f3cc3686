package node_test

import (
	"testing"
)

// titanic_ops_source_errors_total{source} (doc.go's list, which README
// calls the full one) is a counter vector whose series appear only with
// a first error: on a healthy broker the family is not exported at all,
// so rate() or increase() over it cannot see the first failure of a
// source (the series is born at 1), and an alert on it has nothing to
// evaluate until then. Its sources are known (queues, workers, cluster,
// clients): each should be exported at 0 from the start.
func TestSourceErrorsExportedAtZero(t *testing.T) {
	_, addr, _ := metricsNode(t)
	s := scrapeNode(t, addr)
	for _, src := range []string{"queues", "workers", "cluster", "clients"} {
		k := `titanic_ops_source_errors_total{source="` + src + `"}`
		if _, ok := s[k]; !ok {
			t.Errorf("no %s on a healthy broker; want it at 0", k)
		}
	}
}
