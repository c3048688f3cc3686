package upgrade

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/worker"
)

// The cluster version through real binaries: a feature that writes a new
// kind of op (titanic.retry of a failed ticket) is refused, with
// client.ErrUnsupported, while any member runs the previous release, and
// starts working within seconds of the last member's upgrade. `titanic
// cluster` shows each member's version and the cluster version.

// noWorker makes tickets of a service without workers fail fast, so that
// the tests have failed tickets to retry.
var noWorker = []string{"--no-worker-timeout", "300ms"}

// gateNoWorker is noWorker for the tests under load, whose echo workers
// may be away for a failover: long enough that none of the load's tickets
// fails for want of a worker.
var gateNoWorker = []string{"--no-worker-timeout", "8s"}

// failedTicket submits a request for "nobody" (no worker) and waits until
// it failed: within 20 s of the submit or of the last raft term change
// the brokers report, whichever is later (3 minutes at most). A node that
// starts serving counts a service's time without workers from then (a
// new leader cannot know how long the last one went without them), so
// each change of leader, or the same node's return to leadership,
// restarts the ticket's no-worker timeout. The tests' 300 ms raft timeout
// on a loaded machine changed leaders every 1.5-7 s for 20 s
// (TestMixedPair, TestMixedGroup, at load 40; the echo workers were
// registered again within 0.4 s of each change): no node served the 8 s
// of gateNoWorker, and the ticket was still pending 20 s after its submit.
func failedTicket(t *testing.T, ctx context.Context, c *client.Client, brokers []string, dg func() string) string {
	t.Helper()
	ticket, err := c.Submit(ctx, "nobody", [][]byte{[]byte("job")}, client.SubmitOptions{})
	if err != nil {
		t.Fatalf("submit: %v%s", err, dg())
	}
	const settle = 20 * time.Second
	start := time.Now()
	limit := start.Add(3 * time.Minute)
	deadline, term := start.Add(settle), lastTerm(t, ctx, brokers)
	for {
		st, err := c.Status(ctx, ticket)
		if err == nil && st.State == "failed" {
			return ticket
		}
		if err == nil {
			err = fmt.Errorf("state %s", st.State)
		}
		if tm := lastTerm(t, ctx, brokers); tm != term {
			term, deadline = tm, time.Now().Add(settle)
			if deadline.After(limit) {
				deadline = limit
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("ticket %s failed for want of a worker: not within %s of its submit or of the last term change (term %d, %s after the submit): %v%s",
				ticket, settle, term, time.Since(start).Round(time.Second), err, dg())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lastTerm returns the highest raft term the brokers report (0 from none).
func lastTerm(t *testing.T, ctx context.Context, brokers []string) uint64 {
	var term uint64
	for _, ep := range brokers {
		if st, err := clusterStatus(t, ctx, ep); err == nil {
			term = max(term, st.Term)
		}
	}
	return term
}

// mustRefuseRetry asserts that the cluster refuses the retry as not
// supported (an old leader lacks the service; a new one is held back by
// the cluster version).
func mustRefuseRetry(t *testing.T, ctx context.Context, c *client.Client, ticket, when string, dg func() string) {
	t.Helper()
	var err error
	for range 5 {
		if err = c.Retry(ctx, ticket); !errors.Is(err, client.ErrUnavailable) {
			break // a failover in progress: ask again
		}
	}
	if !errors.Is(err, client.ErrUnsupported) {
		t.Fatalf("retry %s: %v, want ErrUnsupported%s", when, err, dg())
	}
	t.Logf("retry %s: refused: %v", when, err)
}

// retryWorks waits until the retry is taken and the retried ticket is
// answered by a worker of "nobody".
func retryWorks(t *testing.T, ctx context.Context, c *client.Client, brokers []string, ticket string, dg func() string) {
	t.Helper()
	// The worker first: a retried ticket with no worker fails again
	// after the no-worker timeout.
	w, err := worker.New(worker.Config{
		Brokers: brokers, Service: "nobody",
		HeartbeatInterval: 200 * time.Millisecond, ReconnectDelay: 100 * time.Millisecond, Logger: quiet,
	}, func(_ context.Context, req [][]byte) ([][]byte, error) {
		return [][]byte{append([]byte("done:"), bytes.Join(req, nil)...)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, 30*time.Second, "retry taken once every member runs the current binary", func() error {
		// The serving node must have the worker when the ticket is
		// pending again (the leader may change under the load).
		rep, err := c.Request(ctx, "mmi.service", [][]byte{[]byte("nobody")})
		if err != nil {
			return err
		}
		if string(rep[0]) != "200" {
			return fmt.Errorf("no worker of nobody at the serving node yet: %q", rep)
		}
		return c.Retry(ctx, ticket)
	}, dg)
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	rep, err := c.Reply(rctx, ticket, client.ReplyOptions{Wait: true})
	if err != nil || len(rep) != 1 || string(rep[0]) != "done:job" {
		t.Fatalf("reply of the retried ticket: %q %v%s", rep, err, dg())
	}
	// Closed, so that checkAcks finds only the load's tickets.
	if err := c.CloseTicket(ctx, ticket); err != nil {
		t.Fatalf("close %s: %v", ticket, err)
	}
}

// clusterCommand runs `titanic cluster` of bin against brokers.
func clusterCommand(t *testing.T, bin string, brokers []string) string {
	t.Helper()
	out, err := exec.Command(bin, "cluster", "--broker", strings.Join(brokers, ",")).CombinedOutput()
	if err != nil {
		t.Fatalf("titanic cluster: %v\n%s", err, out)
	}
	return string(out)
}

func versionClient(t *testing.T, brokers []string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Brokers: brokers, Timeout: time.Second, Retries: 5, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestMixedGroupClusterVersion upgrades a 3-node group of the previous
// release node by node; the retry works only after the last one.
func TestMixedGroupClusterVersion(t *testing.T) {
	_, oldBin, newBin := binaries(t)
	nodes := groupNodes(t)
	for _, n := range nodes {
		n.args = append(n.args, noWorker...)
	}
	brokers := endpoints(nodes...)
	dg := func() string { return diag(nodes...) }
	for _, n := range nodes {
		n.mustStart(t, "old", oldBin, nodes...)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	waitGroupHealthy(t, ctx, nodes, 30*time.Second, "old group")
	c := versionClient(t, brokers)
	ticket := failedTicket(t, ctx, c, brokers, dg)
	mustRefuseRetry(t, ctx, c, ticket, "on the old group", dg)

	for i, n := range nodes {
		t.Logf("upgrade %s", n.name)
		n.stop(t)
		n.mustStart(t, "new", newBin, nodes...)
		waitGroupHealthy(t, ctx, nodes, 30*time.Second, "group after upgrading "+n.name)
		if i < len(nodes)-1 {
			// Let the members report a few rounds: an old one never
			// does, so the cluster version must stay where it is.
			time.Sleep(3 * time.Second) // the report interval is 2s: nothing to wait for but its absence
			mustRefuseRetry(t, ctx, c, ticket, fmt.Sprintf("with %d of 3 nodes upgraded", i+1), dg)
		}
	}
	retryWorks(t, ctx, c, brokers, ticket, dg)
	out := clusterCommand(t, newBin, brokers)
	cur := store.OpsRecordVersion
	if !strings.Contains(out, fmt.Sprintf("cluster version: %d", cur)) || len(regexp.MustCompile(fmt.Sprintf(`(?m)^  g[123]  %d  `, cur)).FindAllString(out, -1)) != 3 {
		t.Fatalf("titanic cluster after the upgrade does not show 3 members at version %d and cluster version %d:\n%s", cur, cur, out)
	}
	t.Logf("titanic cluster:\n%s", out)

	// Rolled back after the retry was used, a node of the previous
	// release would skip the log entries it cannot read; it refuses to
	// start on the data instead (format 2), and the group goes on.
	leader := waitGroupHealthy(t, ctx, nodes, 30*time.Second, "upgraded group")
	var back *node
	for _, n := range nodes {
		if n != leader {
			back = n
		}
	}
	back.stop(t)
	if err := back.start(t, "old", oldBin); err == nil {
		t.Fatalf("the previous release started on %s's data after a retry was replicated: it would skip the entries it cannot read%s", back.name, dg())
	}
	if log := back.lifeLog(); !strings.Contains(log, "format version 2") {
		t.Fatalf("the rolled-back %s did not say why it refused:\n%s", back.name, log)
	}
	t.Logf("rollback refused: %s", lastLine(back.lifeLog()))
	if _, err := c.Submit(ctx, "nobody", [][]byte{[]byte("after")}, client.SubmitOptions{}); err != nil {
		t.Fatalf("the group stopped serving with %s down: %v%s", back.name, err, dg())
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// TestMixedPairClusterVersion: a pair of an old primary and a new backup,
// with a failover while mixed; the retry works once the primary runs the
// current binary too.
func TestMixedPairClusterVersion(t *testing.T) {
	_, oldBin, newBin := binaries(t)
	primary, backup := pairNodes(t)
	all := []*node{primary, backup}
	for _, n := range all {
		n.args = append(n.args, noWorker...)
	}
	brokers := endpoints(all...)
	dg := func() string { return diag(all...) }
	primary.mustStart(t, "old", oldBin, all...)
	backup.mustStart(t, "new", newBin, all...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	active, _ := waitPairHealthy(t, ctx, primary, backup, 30*time.Second, "mixed pair")
	c := versionClient(t, brokers)
	ticket := failedTicket(t, ctx, c, brokers, dg)
	mustRefuseRetry(t, ctx, c, ticket, "on the mixed pair, "+active.name+" active", dg)

	t.Logf("SIGKILL the active %s (%s)", active.name, active.which())
	active.kill()
	active.mustStart(t, active.which(), map[string]string{"old": oldBin, "new": newBin}[active.which()], all...)
	active, _ = waitPairHealthy(t, ctx, primary, backup, 30*time.Second, "mixed pair after a failover")
	time.Sleep(3 * time.Second) // report rounds; the old node never reports
	mustRefuseRetry(t, ctx, c, ticket, "on the mixed pair after a failover, "+active.name+" active", dg)

	t.Logf("upgrade the primary")
	primary.stop(t)
	primary.mustStart(t, "new", newBin, all...)
	waitPairHealthy(t, ctx, primary, backup, 30*time.Second, "upgraded pair")
	retryWorks(t, ctx, c, brokers, ticket, dg)
	if out := clusterCommand(t, newBin, brokers); !strings.Contains(out, fmt.Sprintf("cluster version: %d", store.OpsRecordVersion)) {
		t.Fatalf("titanic cluster after the upgrade:\n%s", out)
	}
}
