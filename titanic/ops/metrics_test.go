package ops_test

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"

	"github.com/titanicmq/titanic/titanic/ops"
)

// scrape fetches /metrics and returns the samples by "name{labels}" and
// the raw text.
func scrape(t *testing.T, fx *fixture) (map[string]float64, string) {
	t.Helper()
	rec := fx.do(t, http.MethodGet, "/metrics")
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	body := rec.Body.String()
	samples := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	return samples, body
}

func wantSamples(t *testing.T, samples map[string]float64, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		got, ok := samples[k]
		if !ok {
			t.Errorf("no sample %s", k)
		} else if got != v {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
}

func TestMetrics(t *testing.T) {
	fx := newFixture(t, nil)
	fx.srv.ObserveCommit(3 * time.Millisecond)
	fx.srv.ObserveCommit(40 * time.Millisecond)
	fx.srv.ObserveFsync(2 * time.Millisecond)
	samples, body := scrape(t, fx)
	wantSamples(t, samples, map[string]float64{
		`titanic_build_info{version="test"}`:                    1,
		`titanic_queue_depth{service="echo"}`:                   1,
		`titanic_queue_depth{service="resize"}`:                 0,
		`titanic_tickets{service="echo",state="pending"}`:       1,
		`titanic_tickets{service="echo",state="dispatched"}`:    1,
		`titanic_tickets{service="echo",state="done"}`:          1,
		`titanic_tickets{service="resize",state="failed"}`:      1,
		`titanic_queue_oldest_age_seconds{service="resize"}`:    0,
		`titanic_submits_total`:                                 4,
		`titanic_replies_total`:                                 1,
		`titanic_redeliveries_total`:                            2,
		`titanic_failures_total`:                                1,
		`titanic_dispatches_total`:                              5,
		`titanic_commits_total`:                                 7,
		`titanic_verdict_retries_total`:                         0,
		`titanic_leases`:                                        1,
		`titanic_workers{service="echo",state="idle"}`:          2,
		`titanic_workers{service="echo",state="busy"}`:          1,
		`titanic_broker_queued_requests{service="mmi.nothing"}`: 4,
		`titanic_active`:                                        1,
		`titanic_role{role="single"}`:                           1,
		`titanic_role{role="leader"}`:                           0,
		`titanic_role{role="passive"}`:                          0,
		`titanic_raft_term`:                                     0,
		`titanic_raft_commit_lag`:                               0,
		`titanic_cluster_members`:                               0,
		`titanic_peers`:                                         0,
		`titanic_peer_capacity`:                                 0,
		`titanic_connected_clients`:                             0,
		`titanic_commit_duration_seconds_count`:                 2,
		`titanic_commit_duration_seconds_bucket{le="0.0032"}`:   1,
		`titanic_commit_duration_seconds_bucket{le="+Inf"}`:     2,
		`titanic_fsync_duration_seconds_count`:                  1,
		`titanic_fsync_duration_seconds_bucket{le="0.0001"}`:    0,
		`titanic_fsync_duration_seconds_bucket{le="0.0032"}`:    1,
		`titanic_duplicate_submits_total`:                       0,
		`titanic_late_replies_total`:                            0,
		`titanic_commit_errors_total`:                           0,
		`titanic_workers{service="mmi.nothing",state="idle"}`:   0,
		`titanic_tickets{service="resize",state="pending"}`:     0,
	})
	if sum := samples["titanic_commit_duration_seconds_sum"]; sum < 0.0429 || sum > 0.0431 {
		t.Errorf("commit duration sum %v, want 0.043", sum)
	}
	if age := samples[`titanic_queue_oldest_age_seconds{service="echo"}`]; age < 59 || age > 120 {
		t.Errorf("oldest age of echo %v, want about 60", age)
	}
	for _, line := range []string{
		"# TYPE titanic_submits_total counter",
		"# TYPE titanic_queue_depth gauge",
		"# TYPE titanic_commit_duration_seconds histogram",
		"# TYPE titanic_fsync_duration_seconds histogram",
		"# HELP titanic_peer_capacity Spare capacity (idle workers) advertised by the live peered clusters, in all.",
		"# TYPE go_goroutines gauge",
		"# TYPE process_resident_memory_bytes gauge",
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("exposition lacks %q", line)
		}
	}
	if t.Failed() {
		t.Log(body)
	}
}

func TestMetricsCluster(t *testing.T) {
	cl := &fakeCluster{status: ops.ClusterStatus{
		Mode: ops.ModeGroup, Role: ops.RoleFollower, NodeID: "n2", Leader: "n1",
		Term: 3, LastIndex: 120, CommitIndex: 118, AppliedIndex: 110,
		Members: []ops.Member{{ID: "n1", Voter: true, Leader: true}, {ID: "n2", Voter: true}, {ID: "n3", Voter: true}},
		Peers:   []ops.Peer{{Name: "east", Capacity: 4}, {Name: "west", Capacity: 2}},
	}}
	fx := newFixture(t, func(c *ops.Config) {
		c.Cluster = cl
		c.Clients = clientsFunc(func(_ context.Context, limit int) ([]ops.Client, int, error) {
			if limit != 0 {
				t.Errorf("metrics asked for %d clients, want only the total", limit)
			}
			return nil, 12, nil
		})
	})
	samples, _ := scrape(t, fx)
	wantSamples(t, samples, map[string]float64{
		`titanic_active`:                0,
		`titanic_role{role="follower"}`: 1,
		`titanic_role{role="single"}`:   0,
		`titanic_raft_term`:             3,
		`titanic_raft_last_index`:       120,
		`titanic_raft_commit_index`:     118,
		`titanic_raft_applied_index`:    110,
		`titanic_raft_commit_lag`:       8,
		`titanic_cluster_members`:       3,
		`titanic_peers`:                 2,
		`titanic_peer_capacity`:         6,
		`titanic_connected_clients`:     12,
	})
	// Exported from the start, at 0 until a source fails.
	if v, ok := samples[`titanic_ops_source_errors_total{source="cluster"}`]; !ok || v != 0 {
		t.Errorf("titanic_ops_source_errors_total{source=\"cluster\"} = %v (present %v) without an error, want 0", v, ok)
	}
}

func TestMetricsSourceErrors(t *testing.T) {
	cl := &fakeCluster{status: ops.ClusterStatus{Mode: ops.ModePair, Role: ops.RolePassive}, err: errors.New("raft shut down")}
	fx := newFixture(t, func(c *ops.Config) {
		c.Cluster = cl
		c.Queues = queuesFunc(func(context.Context) ([]ops.Queue, error) { return nil, errors.New("store closed") })
	})
	for range 2 {
		samples, body := scrape(t, fx)
		for _, gone := range []string{"titanic_queue_depth", "titanic_tickets{", "titanic_raft_term"} {
			if strings.Contains(body, "\n"+gone) {
				t.Errorf("%s exported although its source failed", gone)
			}
		}
		wantSamples(t, samples, map[string]float64{
			`titanic_active`:                               0,
			`titanic_role{role="passive"}`:                 1,
			`titanic_submits_total`:                        4,
			`titanic_workers{service="echo",state="idle"}`: 2,
			`titanic_peer_capacity`:                        0,
		})
	}
	samples, _ := scrape(t, fx)
	wantSamples(t, samples, map[string]float64{
		`titanic_ops_source_errors_total{source="queues"}`:  3,
		`titanic_ops_source_errors_total{source="cluster"}`: 3,
	})
}

func TestMetricsUnknownRole(t *testing.T) {
	cl := &fakeCluster{status: ops.ClusterStatus{Mode: ops.ModeGroup, Role: "shutdown"}}
	fx := newFixture(t, func(c *ops.Config) { c.Cluster = cl })
	samples, _ := scrape(t, fx)
	wantSamples(t, samples, map[string]float64{`titanic_role{role="shutdown"}`: 1, `titanic_role{role="leader"}`: 0})
}

// A service name that is not valid UTF-8 (a store written before names
// were checked) must not make the scrape fail or drop the other samples.
func TestMetricsNonUTF8Service(t *testing.T) {
	fx := newFixture(t, nil)
	fx.tickets.add("bad\xffname", store.StatePending, time.Now(), nil)
	samples, _ := scrape(t, fx)
	wantSamples(t, samples, map[string]float64{
		`titanic_queue_depth{service="echo"}`:            1,
		"titanic_queue_depth{service=\"bad\uFFFDname\"}": 1,
		`titanic_active`:        1,
		`titanic_submits_total`: 4,
	})
}
