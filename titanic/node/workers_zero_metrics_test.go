package node_test

import (
	"context"
	"testing"

	"github.com/titanicmq/titanic/client"
)

// titanic_workers{service,state} is exported only for services the broker
// holds workers for: a service whose tickets wait with no worker at all
// (its workers died, or the broker restarted before they came back) has a
// titanic_queue_depth series but no titanic_workers one, where
// /api/v1/services says "workers": 0. The alert an operator needs most
// (work queued, nobody to do it: titanic_queue_depth > 0 and on(service)
// titanic_workers == 0) matches nothing then.
func TestMetricsWorkersZeroForQueuedService(t *testing.T) {
	_, addr, c := metricsNode(t)
	if _, err := c.Submit(context.Background(), "orphan", [][]byte{[]byte("x")}, client.SubmitOptions{}); err != nil {
		t.Fatal(err)
	}
	s := scrapeNode(t, addr)
	if _, ok := s[`titanic_queue_depth{service="orphan"}`]; !ok {
		t.Fatal("no titanic_queue_depth for the service")
	}
	for _, st := range []string{"idle", "busy"} {
		k := `titanic_workers{service="orphan",state="` + st + `"}`
		if v, ok := s[k]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v) for a service with a ticket queued and no worker, want 0", k, v, ok)
		}
	}
}
