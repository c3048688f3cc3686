package ha

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
)

// A member that stopped reporting its version (rolled back to the first
// release, which reports nothing) counts as version 1 again once its
// last report is old: the cluster version is not raised on that report,
// which would leave the member unable to read what follows. A fresh
// report counts again.
func TestStaleVersionReportDoesNotRaise(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	node := soloLeader(t)
	const interval = 20 * time.Millisecond
	v := NewVersions(node, VersionsConfig{Endpoint: func() string { return "tcp://127.0.0.1:5555" }, Interval: interval, Logger: log})
	v.members = func() []string { return []string{"n1", "n2", "n3"} }

	// n2 reported 3 long ago, then went silent; n3 reports 3 now.
	v.Report("n2", 3, "v0.2.0")
	v.mu.Lock()
	r := v.reports["n2"]
	r.at = time.Now().Add(-(reportsFresh + 1) * interval)
	v.reports["n2"] = r
	v.mu.Unlock()
	v.Report("n3", 3, "v0.2.0")
	for _, m := range v.Members() {
		if m.ID == "n2" && (m.Reported || m.Version != 1) {
			t.Fatalf("n2, silent for %d intervals: %+v, want version 1, not reported", reportsFresh+1, m)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- v.Run(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(10 * interval) // ten rounds of the loop: a raise would come in the first
	if cv, _ := node.ClusterVersion(ctx); cv != 1 {
		t.Fatalf("cluster version raised to %d on a report %d intervals old", cv, reportsFresh+1)
	}
	// n2 upgraded again: both report every interval, as members do.
	waitFor(t, "the raise once every member reports 3", 5*time.Second, func() bool {
		v.Report("n2", 3, "v0.2.0")
		v.Report("n3", 3, "v0.2.0")
		cv, _ := node.ClusterVersion(ctx)
		return cv == 3
	})
}

// A new group whose members all run this release takes every feature
// within a fraction of the report interval: until the cluster version
// has settled, the leader checks the reports ten times as often. It took
// two or three intervals (about 5 s at the default 2 s), during which a
// new group refused the job lifecycle options.
func TestNewGroupRaisesWithinAnInterval(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	node := soloLeader(t)
	const interval = 2 * time.Second // the default
	v := NewVersions(node, VersionsConfig{Endpoint: func() string { return "tcp://127.0.0.1:5555" }, Interval: interval, Logger: log})
	v.members = func() []string { return []string{"n1", "n2", "n3"} }
	v.Report("n2", store.OpsRecordVersion, "dev")
	v.Report("n3", store.OpsRecordVersion, "dev")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- v.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "the raise within half an interval", interval/2, func() bool {
		cv, _ := node.ClusterVersion(ctx)
		return cv == store.OpsRecordVersion
	})
}
