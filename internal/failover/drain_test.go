package failover

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A raft group whose leader cannot reach a quorum (both followers frozen)
// while clients submit: SIGTERM makes it exit within its drain timeout
// (plus the time to close raft and the store), however its commits stand.
// Nothing it acknowledged before is lost: the followers, thawed, elect a
// leader that answers every acknowledged ticket.
func TestGroupSIGTERMWithoutQuorum(t *testing.T) {
	const drain = 2 * time.Second
	nodes := groupWith(t, "--drain-timeout", drain.String())
	brokers := endpoints(nodes...)
	dg := func() string { return diag(nodes...) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	echoWorkers(t, ctx, brokers, 2)
	ld := startLoad(t, ctx, brokers, 4, clientTimeout)
	ld.progress(t, 50, 30*time.Second, "first acks of the group", dg)
	leader := waitGroupHealthy(t, ctx, nodes, 30*time.Second)

	var frozen []*node
	for _, n := range nodes {
		if n != leader {
			if err := n.proc().Signal(syscall.SIGSTOP); err != nil {
				t.Fatalf("SIGSTOP %s: %v", n.name, err)
			}
			frozen = append(frozen, n)
		}
	}
	thaw := func() {
		for _, n := range frozen {
			_ = n.proc().Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw) // before the processes are killed by their own cleanup
	start := time.Now()
	if err := leader.proc().Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", leader.name, err)
	}
	// Raft's shutdown and the store's close come after the drain: allow
	// them a few seconds more, no more.
	const bound = drain + 5*time.Second
	exited := make(chan error, 1)
	go func() { exited <- leader.proc().Wait() }()
	select {
	case <-exited:
		t.Logf("%s exited %s after SIGTERM without a quorum (drain timeout %s)", leader.name, time.Since(start).Round(time.Millisecond), drain)
	case <-time.After(bound):
		thaw()
		t.Fatalf("%s still running %s after SIGTERM (drain timeout %s)\n%s", leader.name, bound, drain, dg())
	}
	if log := leader.logs(); !strings.Contains(log, "draining") {
		t.Errorf("%s did not log its drain\n%s", leader.name, leader.proc().Tail())
	}

	thaw()
	leader.start(t)
	waitGroupHealthy(t, ctx, nodes, 30*time.Second)
	acks := ld.finish(t, dg)
	checkAcks(t, ctx, brokers, acks, dg)
}
