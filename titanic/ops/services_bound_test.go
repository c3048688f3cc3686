package ops_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/ops"
)

// Service names come from clients: the per-service series and the rows
// of /api/v1/services are bounded to Config.MaxServices, those with the
// most tickets (and the paused ones, in the API), the rest summed under
// OtherService and counted.
func TestServicesBoundedToTheBusiest(t *testing.T) {
	now := time.Now()
	fx := newFixture(t, func(c *ops.Config) {
		c.MaxServices = 3
		c.Queues = queuesFunc(func(context.Context) ([]ops.Queue, error) {
			qs := []ops.Queue{
				{Service: "big", Pending: 100, Oldest: now.Add(-time.Minute)},
				{Service: "mid", Done: 50},
				// A service named as the sum is always summed.
				{Service: ops.OtherService, Pending: 1},
			}
			for i := range 10 {
				qs = append(qs, ops.Queue{Service: fmt.Sprintf("junk-%d", i), Pending: 1, Oldest: now.Add(-time.Hour)})
			}
			return qs, nil
		})
		c.Workers = workersFunc(func(context.Context) ([]ops.ServiceWorkers, error) {
			return []ops.ServiceWorkers{{Service: "workers-only", Workers: 20, Idle: 20}, {Service: "junk-3", Workers: 1, Busy: 1}}, nil
		})
	})
	s, _ := scrape(t, fx)
	for _, svc := range []string{"big", "mid"} {
		if _, ok := s[`titanic_queue_depth{service="`+svc+`"}`]; !ok {
			t.Errorf("no titanic_queue_depth for %s, one of the 3 with the most tickets", svc)
		}
	}
	if v := s[`titanic_workers{service="workers-only",state="idle"}`]; v != 20 {
		t.Errorf("workers-only's idle workers = %v, want 20", v)
	}
	n := 0
	for k := range s {
		if len(k) > len("titanic_queue_depth{") && k[:len("titanic_queue_depth{")] == "titanic_queue_depth{" {
			n++
		}
	}
	// big, mid (workers-only has no queue) and (other).
	if n != 3 {
		t.Errorf("%d titanic_queue_depth series, want 3", n)
	}
	// junk-0..9 and the service named (other): 11, one with a worker.
	if v := s[`titanic_queue_depth{service="(other)"}`]; v != 11 {
		t.Errorf(`titanic_queue_depth{service="(other)"} = %v, want 11`, v)
	}
	if v := s[`titanic_workers{service="(other)",state="busy"}`]; v != 1 {
		t.Errorf(`titanic_workers{service="(other)",state="busy"} = %v, want 1`, v)
	}
	if v := s[`titanic_queue_oldest_age_seconds{service="(other)"}`]; v < 3500 {
		t.Errorf(`titanic_queue_oldest_age_seconds{service="(other)"} = %v, want the oldest of the rest (an hour)`, v)
	}
	if v := s[`titanic_services_omitted`]; v != 11 {
		t.Errorf("titanic_services_omitted = %v, want 11", v)
	}

	var got struct {
		Services []struct {
			Name    string `json:"name"`
			Pending int    `json:"pending"`
		} `json:"services"`
		Omitted int `json:"omitted"`
		Other   *struct {
			Name    string `json:"name"`
			Pending int    `json:"pending"`
		} `json:"other"`
	}
	fx.getJSON(t, http.MethodGet, "/api/v1/services", http.StatusOK, &got)
	if len(got.Services) != 3 || got.Omitted != 11 || got.Other == nil || got.Other.Name != ops.OtherService || got.Other.Pending != 11 {
		t.Errorf("/api/v1/services = %+v (other %+v), want 3 services, 11 omitted summed under (other)", got, got.Other)
	}
}

// Under the bound, nothing is summed: every service has its own series,
// and the omitted count is there at 0.
func TestServicesUnderTheBoundAllShown(t *testing.T) {
	fx := newFixture(t, nil)
	s, _ := scrape(t, fx)
	if _, ok := s[`titanic_queue_depth{service="(other)"}`]; ok {
		t.Error(`titanic_queue_depth{service="(other)"} exported with no service left out`)
	}
	if v, ok := s[`titanic_services_omitted`]; !ok || v != 0 {
		t.Errorf("titanic_services_omitted = %v (present %v), want 0", v, ok)
	}
	var got struct {
		Omitted int `json:"omitted"`
		Other   any `json:"other"`
	}
	fx.getJSON(t, http.MethodGet, "/api/v1/services", http.StatusOK, &got)
	if got.Omitted != 0 || got.Other != nil {
		t.Errorf("/api/v1/services: omitted %d, other %v; want none", got.Omitted, got.Other)
	}
}

// /api/v1/queues (titanic.stats) is bounded as /api/v1/services is: it
// listed every service a client named, however many.
func TestQueuesBoundedToTheBusiest(t *testing.T) {
	one := 1
	qs := []titanic.ServiceQueue{
		{Service: "big", Pending: 100},
		{Service: "mid", Done: 50, Workers: 2, Idle: &one},
		{Service: "paused", Paused: true},
		{Service: ops.OtherService, Pending: 1},
	}
	for i := range 10 {
		qs = append(qs, titanic.ServiceQueue{Service: fmt.Sprintf("junk-%d", i), Pending: 1, Workers: 1, Busy: &one, SubmitRate: 0.5})
	}
	fx := newFixture(t, func(c *ops.Config) {
		c.MaxServices = 3
		c.QueueStats = queueStatsFunc(func(context.Context) (titanic.QueueStats, error) {
			return titanic.QueueStats{WindowSeconds: 10, Services: slices.Clone(qs)}, nil
		})
	})
	var got struct {
		titanic.QueueStats
		Omitted int                   `json:"omitted"`
		Other   *titanic.ServiceQueue `json:"other"`
	}
	fx.getJSON(t, http.MethodGet, "/api/v1/queues", http.StatusOK, &got)
	var names []string
	for _, q := range got.Services {
		names = append(names, q.Service)
	}
	if !slices.Equal(names, []string{"big", "mid", "paused"}) {
		t.Errorf("/api/v1/queues lists %q, want the paused service and the two with the most tickets", names)
	}
	o := got.Other
	if got.Omitted != 11 || o == nil || o.Service != ops.OtherService || o.Pending != 11 || o.Workers != 10 ||
		o.Busy == nil || *o.Busy != 10 || o.Idle != nil || o.SubmitRate != 5 {
		t.Errorf("/api/v1/queues: omitted %d, other %+v; want 11 summed under (other): 11 pending, 10 workers busy, 5 submits/s", got.Omitted, o)
	}

	fx = newFixture(t, func(c *ops.Config) {
		c.QueueStats = queueStatsFunc(func(context.Context) (titanic.QueueStats, error) {
			return titanic.QueueStats{Services: slices.Clone(qs[:3])}, nil
		})
	})
	got.Other, got.Omitted = nil, -1
	fx.getJSON(t, http.MethodGet, "/api/v1/queues", http.StatusOK, &got)
	if len(got.Services) != 3 || got.Omitted != 0 || got.Other != nil {
		t.Errorf("/api/v1/queues under the bound: %d services, omitted %d, other %+v; want 3, 0, none", len(got.Services), got.Omitted, got.Other)
	}
}
