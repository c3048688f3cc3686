package ops

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is the Server's private registry: the histograms fed by the
// Observe hooks, and a collector that reads the sources at scrape time.
type metrics struct {
	reg           *prometheus.Registry
	commit, fsync prometheus.Histogram
	handler       http.Handler
}

func newMetrics(s *Server) (*metrics, error) {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		commit: newHistogram("titanic_commit_duration_seconds",
			"Time to make one titanic commit batch durable (store Apply: an fsync on one node, a quorum commit when replicated)."),
		fsync: newHistogram("titanic_fsync_duration_seconds",
			"Time to commit and fsync one store write transaction."),
	}
	for _, c := range []prometheus.Collector{
		m.commit, m.fsync, newCollector(s),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := m.reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             s.cfg.RequestTimeout,
	})
	return m, nil
}

// knownRoles are always exported by titanic_role (0 or 1), so that a
// role change does not make series appear and vanish: the pair's waiting
// states (primary, backup) among them, or a node waiting for its peer
// made them appear and vanish, and a query over the known roles missed
// a node stuck waiting.
var knownRoles = []string{RoleSingle, RoleLeader, RoleFollower, RoleCandidate, RoleActive, RolePassive, RolePrimary, RoleBackup}

// sources are the sources titanic_ops_source_errors_total counts, all
// exported from the start at 0: a series born at 1 hides the first
// failure from rate() and increase(), and an alert on it has nothing to
// evaluate until then.
var sources = []string{"queues", "workers", "cluster", "clients"}

// collector reads the sources on every scrape. A failing source is
// logged, counted in titanic_ops_source_errors_total and its families
// are left out of that scrape; the others are still served.
type collector struct {
	s *Server

	build, queueDepth, tickets, oldestAge    *prometheus.Desc
	workers, brokerRequests, omitted         *prometheus.Desc
	counters                                 map[string]*prometheus.Desc
	leases                                   *prometheus.Desc
	active, role, term, lastIndex, commitIdx *prometheus.Desc
	appliedIdx, commitLag, members           *prometheus.Desc
	peers, peerCapacity, clients             *prometheus.Desc
	diskFull, diskFree, diskReserve          *prometheus.Desc

	errors *prometheus.CounterVec
}

// counterHelp names and documents the counters of Counts.
var counterHelp = []struct{ name, help string }{
	{"titanic_submits_total", "Tickets submitted (durable), duplicates included."},
	{"titanic_duplicate_submits_total", "Submits answered with an existing ticket (idempotency key seen before)."},
	{"titanic_closes_total", "Tickets closed."},
	{"titanic_lookups_total", "Ticket lookups answered (titanic.reply, .status, .list, .wait)."},
	{"titanic_dispatches_total", "Tickets dispatched to workers, redeliveries included."},
	{"titanic_redeliveries_total", "Tickets dispatched again after a failed attempt or a lost worker."},
	{"titanic_replies_total", "Worker replies made durable."},
	{"titanic_late_replies_total", "Worker replies for tickets already answered (ignored)."},
	{"titanic_failures_total", "Tickets that failed for good."},
	{"titanic_busy_total", "Requests refused as busy (retry later)."},
	{"titanic_bad_requests_total", "Malformed 9/TSP requests refused."},
	{"titanic_commits_total", "Commit batches applied to the store."},
	{"titanic_committed_ops_total", "Ops in the commit batches."},
	{"titanic_commit_errors_total", "Commit batches that failed."},
	{"titanic_verdict_retries_total", "Replies and failures whose commit failed, committed again (the job is not run again)."},
	{"titanic_unsent_dispatches_total", "Dispatches taken back because the send to the worker or peer failed at once (no attempt counted)."},
}

func counterValues(c Counts) []uint64 {
	return []uint64{c.Submits, c.Duplicates, c.Closes, c.Lookups, c.Dispatches, c.Redeliveries,
		c.Replies, c.LateReplies, c.Failures, c.Busy, c.BadRequests, c.Commits, c.CommittedOps, c.CommitErrors, c.VerdictRetries, c.Unsent}
}

func newCollector(s *Server) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	c := &collector{
		s:          s,
		build:      prometheus.NewDesc("titanic_build_info", "Always 1; the version label is the build's.", nil, prometheus.Labels{"version": s.cfg.Version}),
		queueDepth: d("titanic_queue_depth", "Pending tickets waiting for a worker, per service: delayed ones not due yet left out.", "service"),
		tickets:    d("titanic_tickets", "Stored tickets per service and state.", "service", "state"),
		oldestAge: d("titanic_queue_oldest_age_seconds",
			"Age of the oldest unfinished ticket (pending or dispatched), delayed ones not due yet left out (a delayed one now due counts from its due time); 0 when none.", "service"),
		workers:        d("titanic_workers", "Registered workers per service, idle or busy.", "service", "state"),
		brokerRequests: d("titanic_broker_queued_requests", "Plain (non-durable) MDP requests queued in the broker, per service.", "service"),
		omitted: d("titanic_services_omitted",
			`Services summed under service="(other)" in the per-service series, beyond the ones with the most tickets shown one by one (ops.Config.MaxServices, 500 by default).`),
		counters:     map[string]*prometheus.Desc{},
		leases:       d("titanic_leases", "Tickets held by workers now."),
		active:       d("titanic_active", "1 when this node serves clients (single node, raft leader, active pair node), else 0."),
		role:         d("titanic_role", "This node's role: 1 for the current one, 0 for the others.", "role"),
		term:         d("titanic_raft_term", "Current raft term (0 in single mode)."),
		lastIndex:    d("titanic_raft_last_index", "Last raft log index."),
		commitIdx:    d("titanic_raft_commit_index", "Raft commit index."),
		appliedIdx:   d("titanic_raft_applied_index", "Raft index applied to the local store."),
		commitLag:    d("titanic_raft_commit_lag", "Committed raft entries not applied to the local store yet (commit index - applied index)."),
		members:      d("titanic_cluster_members", "Servers in the raft configuration (0 in single mode)."),
		peers:        d("titanic_peers", "Peered clusters configured (see the cluster API for which are alive)."),
		peerCapacity: d("titanic_peer_capacity", "Spare capacity (idle workers) advertised by the live peered clusters, in all."),
		clients:      d("titanic_connected_clients", "Clients connected now (titanic.hello presence); 0 when presence is not wired."),
		diskFull:     d("titanic_disk_full", "1 while submits are refused because the free disk space is below limits.disk_reserve, else 0."),
		diskFree:     d("titanic_disk_free_bytes", "Free space of the watched file system closest to its reserve (absent when the reserve is not checked)."),
		diskReserve:  d("titanic_disk_reserve_bytes", "The reserve of that file system: limits.disk_reserve, at most 5% of its size."),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "titanic_ops_source_errors_total",
			Help: "Scrapes or API calls where a source (queues, workers, cluster, clients) failed.",
		}, []string{"source"}),
	}
	for _, ch := range counterHelp {
		c.counters[ch.name] = d(ch.name, ch.help)
	}
	for _, src := range sources {
		c.errors.WithLabelValues(src)
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.build, c.queueDepth, c.tickets, c.oldestAge, c.workers, c.brokerRequests, c.omitted,
		c.leases, c.active, c.role, c.term, c.lastIndex, c.commitIdx, c.appliedIdx, c.commitLag, c.members,
		c.peers, c.peerCapacity, c.clients, c.diskFull, c.diskFree, c.diskReserve} {
		ch <- d
	}
	for _, d := range c.counters {
		ch <- d
	}
	c.errors.Describe(ch)
}

func (c *collector) failed(source string, err error) {
	c.errors.WithLabelValues(source).Inc()
	c.s.log.Warn("metrics source failed", "source", source, "err", err)
}

// Collect implements prometheus.Collector; it may run concurrently with
// itself (two scrapes).
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.s.cfg.RequestTimeout)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		// A label that is not valid UTF-8 (a service name from a store
		// written before names were checked) would make the whole scrape
		// fail: it is shown with replacement characters instead.
		for i, l := range labels {
			if !utf8.ValidString(l) {
				labels = slices.Clone(labels)
				labels[i] = strings.ToValidUTF8(l, "\uFFFD")
			}
		}
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(c.build, 1)
	c.collectServices(ctx, gauge)
	if src := c.s.cfg.Counters; src != nil {
		counts := src.Counters()
		for i, v := range counterValues(counts) {
			ch <- prometheus.MustNewConstMetric(c.counters[counterHelp[i].name], prometheus.CounterValue, float64(v))
		}
		gauge(c.leases, float64(counts.Leased))
		gauge(c.diskFull, b2f(counts.DiskFull))
		if counts.DiskReserve > 0 {
			gauge(c.diskFree, float64(counts.DiskFree))
			gauge(c.diskReserve, float64(counts.DiskReserve))
		}
	}
	c.collectCluster(ctx, gauge)
	clients := 0
	if src := c.s.cfg.Clients; src != nil {
		if _, total, err := src.Clients(ctx, 0); err != nil {
			c.failed("clients", err)
		} else {
			clients = total
		}
	}
	gauge(c.clients, float64(clients))
	c.errors.Collect(ch)
}

// svcSeries is what one service's series are made of: its queue (from
// the Queues source) and its workers (from the Workers source).
type svcSeries struct {
	name string
	q    Queue
	w    ServiceWorkers
	hasQ bool
}

// collectServices exports the per-service families for the services
// with the most tickets, and the others summed under OtherService
// (bound.go): their number is bounded whatever names clients make up.
func (c *collector) collectServices(ctx context.Context, gauge func(*prometheus.Desc, float64, ...string)) {
	byName := map[string]*svcSeries{}
	row := func(name string) *svcSeries {
		r := byName[name]
		if r == nil {
			r = &svcSeries{name: name}
			byName[name] = r
		}
		return r
	}
	if src := c.s.cfg.Queues; src != nil {
		if qs, err := src.Queues(ctx); err != nil {
			c.failed("queues", err)
		} else {
			for _, q := range qs {
				r := row(q.Service)
				r.q, r.hasQ = q, true
			}
		}
	}
	workersOK := false
	if src := c.s.cfg.Workers; src != nil {
		if ws, err := src.Workers(ctx); err != nil {
			c.failed("workers", err)
		} else {
			workersOK = true
			for _, w := range ws {
				row(w.Service).w = w
			}
		}
	}
	rows := make([]svcSeries, 0, len(byName))
	for _, r := range byName {
		rows = append(rows, *r)
	}
	kept, rest := topServices(rows, c.s.cfg.maxServices(), func(r *svcSeries) rank {
		return rank{name: r.name, weight: r.q.Pending + r.q.Dispatched + r.q.Done + r.q.Failed + r.q.Cancelled + r.w.Workers + r.w.Requests}
	})
	now := time.Now()
	age := func(oldest time.Time) float64 {
		if oldest.IsZero() {
			return 0
		}
		return max(0, now.Sub(oldest).Seconds())
	}
	emit := func(r svcSeries, oldestAge float64) {
		if r.hasQ {
			gauge(c.queueDepth, float64(max(r.q.Pending-r.q.Delayed, 0)), r.name)
			gauge(c.tickets, float64(r.q.Pending), r.name, "pending")
			gauge(c.tickets, float64(r.q.Dispatched), r.name, "dispatched")
			gauge(c.tickets, float64(r.q.Done), r.name, "done")
			gauge(c.tickets, float64(r.q.Failed), r.name, "failed")
			// Kept until closed or swept, as done and failed ones: the
			// HTTP API's /services counts them too.
			gauge(c.tickets, float64(r.q.Cancelled), r.name, "cancelled")
			gauge(c.oldestAge, oldestAge, r.name)
		}
		// Every service has its workers series when the source answered,
		// 0 for a service the broker holds none for: the alert that
		// matters most (work queued, nobody to do it: queue_depth > 0 and
		// workers == 0) must have a series to match.
		if workersOK {
			gauge(c.workers, float64(r.w.Idle), r.name, "idle")
			gauge(c.workers, float64(r.w.Busy), r.name, "busy")
			gauge(c.brokerRequests, float64(r.w.Requests), r.name)
		}
	}
	for _, r := range kept {
		emit(r, age(r.q.Oldest))
	}
	if len(rest) > 0 {
		// The sum of the rest; its oldest age is the oldest of theirs.
		other, oldestAge := svcSeries{name: OtherService}, 0.0
		for _, r := range rest {
			other.hasQ = other.hasQ || r.hasQ
			other.q.Pending += r.q.Pending
			other.q.Delayed += r.q.Delayed
			other.q.Dispatched += r.q.Dispatched
			other.q.Done += r.q.Done
			other.q.Failed += r.q.Failed
			other.q.Cancelled += r.q.Cancelled
			other.w.Idle += r.w.Idle
			other.w.Busy += r.w.Busy
			other.w.Requests += r.w.Requests
			oldestAge = max(oldestAge, age(r.q.Oldest))
		}
		emit(other, oldestAge)
	}
	gauge(c.omitted, float64(len(rest)))
}

func (c *collector) collectCluster(ctx context.Context, gauge func(*prometheus.Desc, float64, ...string)) {
	role, active := c.s.role()
	gauge(c.active, b2f(active))
	known := false
	for _, r := range knownRoles {
		gauge(c.role, b2f(r == role), r)
		known = known || r == role
	}
	if !known && role != "" {
		gauge(c.role, 1, role)
	}
	st, err := c.s.clusterStatus(ctx)
	if err != nil {
		c.failed("cluster", err)
	} else {
		gauge(c.term, float64(st.Term))
		gauge(c.lastIndex, float64(st.LastIndex))
		gauge(c.commitIdx, float64(st.CommitIndex))
		gauge(c.appliedIdx, float64(st.AppliedIndex))
		gauge(c.commitLag, float64(commitLag(st)))
		gauge(c.members, float64(len(st.Members)))
	}
	capacity := 0
	for _, p := range st.Peers {
		capacity += p.Capacity
	}
	gauge(c.peers, float64(len(st.Peers)))
	gauge(c.peerCapacity, float64(capacity))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
