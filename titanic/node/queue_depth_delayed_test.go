package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
)

// titanic_queue_depth is documented as "Pending tickets waiting for a
// worker" and titanic_queue_oldest_age_seconds as the age of the head of
// the service's FIFO; titanic stats shows a ticket submitted with --delay
// 1h as DELAYED 1, PENDING 0. The metrics count it as queue depth 1 and
// age the delayed ticket from its submit, so an alert on the oldest age
// (the README's "age of the oldest unfinished ticket") fires for tickets
// that are exactly where the operator put them.
func TestMetricsQueueDepthLeavesDelayedOut(t *testing.T) {
	_, addr, c := metricsNode(t)
	ctx := context.Background()
	if _, err := c.Submit(ctx, "later", [][]byte{[]byte("x")}, client.SubmitOptions{Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	qs, err := c.QueueStats(ctx, "later")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	s := scrapeNode(t, addr)
	if d := s[`titanic_queue_depth{service="later"}`]; d != 0 {
		t.Errorf("titanic_queue_depth{service=\"later\"} = %v with one ticket delayed by an hour and none waiting for a worker (titanic stats: %+v), want 0", d, qs)
	}
	if a := s[`titanic_queue_oldest_age_seconds{service="later"}`]; a >= 1 {
		t.Errorf("titanic_queue_oldest_age_seconds{service=\"later\"} = %v for a ticket not due for an hour, want 0", a)
	}
}

// Behind a delayed head, the tickets that wait are still counted and
// aged; a delayed ticket that came due waits for a worker like any other.
func TestMetricsQueueDepthCountsWhatWaits(t *testing.T) {
	_, addr, c := metricsNode(t)
	ctx := context.Background()
	if _, err := c.Submit(ctx, "mixed", [][]byte{[]byte("x")}, client.SubmitOptions{Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(ctx, "mixed", [][]byte{[]byte("y")}, client.SubmitOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(ctx, "soon", [][]byte{[]byte("z")}, client.SubmitOptions{Delay: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond)
	s := scrapeNode(t, addr)
	if d := s[`titanic_queue_depth{service="mixed"}`]; d != 1 {
		t.Errorf(`titanic_queue_depth{service="mixed"} = %v, want 1 (one waiting behind one delayed an hour)`, d)
	}
	if a := s[`titanic_queue_oldest_age_seconds{service="mixed"}`]; a < 1 || a > 60 {
		t.Errorf(`titanic_queue_oldest_age_seconds{service="mixed"} = %v, want the waiting ticket's age (about 1.2 s)`, a)
	}
	if d := s[`titanic_queue_depth{service="soon"}`]; d != 1 {
		t.Errorf(`titanic_queue_depth{service="soon"} = %v, want 1 (its delay is over)`, d)
	}
	if a := s[`titanic_queue_oldest_age_seconds{service="soon"}`]; a < 0.5 || a > 60 {
		t.Errorf(`titanic_queue_oldest_age_seconds{service="soon"} = %v, want the time since it came due (about 1 s)`, a)
	}
}
