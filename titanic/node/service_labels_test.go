package node_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/titanicmq/titanic/client"
)

// Service names come from the wire: any client that reaches the client
// endpoint (no admin right, no token) names the services it submits to,
// and every one becomes label values of titanic_queue_depth,
// titanic_tickets (4 states), titanic_queue_oldest_age_seconds and, with
// a worker, titanic_workers, for as long as its tickets are kept (7 days
// by default). Measured through the binary: one client made 50,000
// services in 5.7 s (one ticket each); /metrics became 300,283 lines,
// 16.7 MB, took 7-10 s to scrape (Prometheus' default scrape timeout is
// 10 s: the whole target, titanic_active included, goes missing), and one
// scrape took the broker from 206 MB to 427 MB resident, three at once to
// 972 MB. The label values are escaped, but not bounded in number.
func TestServiceLabelsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("submits 20,000 tickets")
	}
	_, addr, c := metricsNode(t)
	ctx := context.Background()
	const services = 20000
	var fs []*client.SubmitFuture
	for i := range services {
		f, err := c.SubmitAsync(ctx, fmt.Sprintf("svc-%05d", i), [][]byte{[]byte("x")}, client.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	for _, f := range fs {
		if _, err := f.Ticket(ctx); err != nil {
			t.Fatal(err)
		}
	}
	s := scrapeNode(t, addr)
	n := 0
	for k := range s {
		if strings.HasPrefix(k, "titanic_queue_depth{") {
			n++
		}
	}
	if n > 1000 {
		t.Errorf("one client's %d service names made %d titanic_queue_depth series (and %d samples in all); want the label values bounded (at most 1000 here)",
			services, n, len(s))
	}
}
