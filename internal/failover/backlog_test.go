package failover

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/worker"
)

// backlogService holds the pending tickets; probeService takes the
// submits that time the failover, so that the worker sees only old
// tickets.
const (
	backlogService = "backlog"
	probeService   = "probe"
)

// TestPairBacklog is `make backlog-pair` (skipped unless
// TITANIC_BACKLOG_PAIR_N is set): issue 9's "failover time must not grow
// with the backlog", through the real binary. A Binary Star pair on two
// network-namespace hosts, every timing the default (pair heartbeat
// 500 ms, raft timeout 1 s, client timeout 1 s), is failed over
// TITANIC_BACKLOG_PAIR_KILLS times (default 3) with an empty queue (one
// old ticket waiting, for the dispatch figure), then loaded with N
// pending tickets (100-byte bodies, one service, no worker; pipelined
// submits through the active, so both nodes hold them) and failed over as
// many times again. Each failover SIGKILLs the active and times, from the
// kill, (1) the first submit the survivor acknowledges, from a client
// that was using the active, and (2) the first dispatch of an old pending
// ticket to a worker that connects to the survivor once (1) happened. The
// killed node is restarted and the pair made whole before the next. The
// figure is the ratio deep/empty of the medians.
func TestPairBacklog(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("TITANIC_BACKLOG_PAIR_N"))
	if n <= 0 {
		t.Skip("set TITANIC_BACKLOG_PAIR_N (make backlog-pair)")
	}
	kills := 3
	if v, err := strconv.Atoi(os.Getenv("TITANIC_BACKLOG_PAIR_KILLS")); err == nil && v > 0 {
		kills = v
	}
	// Default timings: what a deployment sees. The no-worker timeout (1 h)
	// would fail a deep backlog that took longer to load.
	primary, backup, _ := pairWith(t, "--no-worker-timeout", "240h")
	brokers := endpoints(primary, backup)
	dg := func() string { return diag(primary, backup) }
	// Kept for the breakdown of each takeover (with TITANIC_ARTIFACTS).
	t.Cleanup(func() { saveLogs(t, primary, backup) })
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Hour)
	defer cancel()

	probe, err := client.New(client.Config{Brokers: brokers, Retries: 1, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	waitPairHealthy(t, ctx, primary, backup, 60*time.Second)
	body := [][]byte{make([]byte, 100)}
	if _, err := probe.Submit(ctx, backlogService, body, client.SubmitOptions{}); err != nil {
		t.Fatalf("first submit: %v%s", err, dg())
	}

	var empty, deep []failoverTime
	for k := range kills {
		ft := timeFailover(t, ctx, primary, backup, probe, true)
		t.Logf("empty queue, kill %d of the active %s: first ack %s, first old ticket dispatched %s; survivor: %s; rejoin %s (longest submit wait meanwhile %s, from +%s; %d acknowledged)",
			k+1, ft.killed, ft.ack.Round(time.Millisecond), ft.dispatch.Round(time.Millisecond), ft.steps, ft.rejoin.Round(time.Millisecond), ft.rejoinWait.Round(time.Millisecond), ft.rejoinWaitAt.Round(time.Millisecond), ft.rejoinAcks)
		empty = append(empty, ft)
		// The next kill needs an old ticket waiting again.
		if _, err := probe.Submit(ctx, backlogService, body, client.SubmitOptions{}); err != nil {
			t.Fatalf("submit: %v%s", err, dg())
		}
	}

	start := time.Now()
	loadPending(t, ctx, brokers, n, body, dg)
	loadTime := time.Since(start)
	t.Logf("loaded %d pending tickets through the active in %s (%.0f/s)", n, loadTime.Round(time.Second), float64(n)/loadTime.Seconds())
	waitPairHealthy(t, ctx, primary, backup, 10*time.Minute)
	sizes := fmt.Sprintf("%s %d MiB, %s %d MiB", primary.name, dirSize(primary.dir)>>20, backup.name, dirSize(backup.dir)>>20)

	for k := range kills {
		ft := timeFailover(t, ctx, primary, backup, probe, k+1 < kills)
		t.Logf("%d pending, kill %d of the active %s: first ack %s, first old ticket dispatched %s; survivor: %s; rejoin %s (longest submit wait meanwhile %s, from +%s; %d acknowledged)",
			n, k+1, ft.killed, ft.ack.Round(time.Millisecond), ft.dispatch.Round(time.Millisecond), ft.steps, ft.rejoin.Round(time.Millisecond), ft.rejoinWait.Round(time.Millisecond), ft.rejoinWaitAt.Round(time.Millisecond), ft.rejoinAcks)
		deep = append(deep, ft)
	}

	med := func(fts []failoverTime, f func(failoverTime) time.Duration) time.Duration {
		var ds []time.Duration
		for _, ft := range fts {
			ds = append(ds, f(ft))
		}
		return percentile(ds, 50)
	}
	ackOf := func(ft failoverTime) time.Duration { return ft.ack }
	dispOf := func(ft failoverTime) time.Duration { return ft.dispatch }
	all := func(fts []failoverTime, f func(failoverTime) time.Duration) string {
		var s []string
		for _, ft := range fts {
			s = append(s, fmt.Sprintf("%.2f", f(ft).Seconds()))
		}
		return strings.Join(s, "/")
	}
	ea, ed, da, dd := med(empty, ackOf), med(empty, dispOf), med(deep, ackOf), med(deep, dispOf)
	report := fmt.Sprintf("pair backlog %d pending (data dirs %s; loaded at %.0f/s): medians of %d SIGKILLs of the active, default timings; "+
		"kill to first ack: empty %.2f s (%s), deep %.2f s (%s), ratio %.2f; "+
		"kill to first old ticket dispatched: empty %.2f s (%s), deep %.2f s (%s), ratio %.2f",
		n, sizes, float64(n)/loadTime.Seconds(), kills,
		ea.Seconds(), all(empty, ackOf), da.Seconds(), all(deep, ackOf), float64(da)/float64(ea),
		ed.Seconds(), all(empty, dispOf), dd.Seconds(), all(deep, dispOf), float64(dd)/float64(ed))
	t.Log(report)
	fmt.Println(report)
}

// failoverTime is one failover: which node was killed, and the time from
// the kill to the survivor's first acknowledged submit and to its first
// dispatch of an old ticket.
type failoverTime struct {
	killed        string
	ack, dispatch time.Duration
	steps         string        // the survivor's takeover, from its log
	rejoin        time.Duration // restart of the killed node to the pair whole
	// rejoinWait is the longest a submit waited for its acknowledgement
	// while the killed node rejoined (rejoinAcks of them): a returning
	// node that votes before it has caught up holds every commit of a
	// raft of two.
	rejoinWait   time.Duration
	rejoinAcks   int
	rejoinWaitAt time.Duration // when that wait began, from the restart
}

// submitWhile submits to probeService through its own client, one at a
// time, until stop is called, which returns the longest time a submit
// took from its first try to its acknowledgement, when that submit began,
// and how many were acknowledged.
func submitWhile(t *testing.T, ctx context.Context, brokers []string) (stop func() (longest time.Duration, at time.Time, acks int)) {
	t.Helper()
	c, err := client.New(client.Config{Brokers: brokers, Retries: 1, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	var (
		longest time.Duration
		at      time.Time
		acks    int
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for sctx.Err() == nil {
			began := time.Now()
			for sctx.Err() == nil {
				if _, err := c.Submit(sctx, probeService, [][]byte{[]byte("rejoin")}, client.SubmitOptions{}); err == nil {
					acks++
					if took := time.Since(began); took > longest {
						longest, at = took, began
					}
					break
				}
				time.Sleep(10 * time.Millisecond) // pace retries of an immediate refusal
			}
		}
	}()
	return func() (time.Duration, time.Time, int) {
		cancel()
		<-done
		c.Close()
		return longest, at, acks
	}
}

// timeFailover waits until the pair is whole, SIGKILLs the active node,
// and times the survivor (see TestPairBacklog); then restarts the killed
// node when restart is set.
func timeFailover(t *testing.T, ctx context.Context, primary, backup *node, probe *client.Client, restart bool) failoverTime {
	t.Helper()
	dg := func() string { return diag(primary, backup) }
	active, passive := waitPairHealthy(t, ctx, primary, backup, 10*time.Minute)
	// The probe's client keeps to the active, as a client in use does.
	// The pair may be whole and still not serve for a moment: at depth, a
	// peer rejoining from a snapshot of gigabytes can keep the active's
	// raft from a quorum for longer than its timeout, and it steps down
	// and is elected again (seen at 3,000,000 pending).
	for start := time.Now(); ; {
		_, err := probe.Submit(ctx, probeService, [][]byte{[]byte("before")}, client.SubmitOptions{})
		if err == nil {
			break
		}
		if time.Since(start) > time.Minute {
			t.Fatalf("probe before the kill: not acknowledged within a minute: %v%s", err, dg())
		}
		time.Sleep(50 * time.Millisecond) // pace retries of an immediate refusal
	}

	dispatched := make(chan time.Time, 1)
	w, err := worker.New(worker.Config{
		Brokers: []string{passive.endpoint()}, Service: backlogService,
		ReconnectDelay: 50 * time.Millisecond, Logger: quiet,
	}, func(_ context.Context, req [][]byte) ([][]byte, error) {
		select {
		case dispatched <- time.Now():
		default:
		}
		return req, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { wcancel(); wg.Wait() }()

	killedAt := time.Now()
	active.kill()

	const within = 2 * time.Minute
	var ackAt time.Time
	for {
		_, err := probe.Submit(ctx, probeService, [][]byte{[]byte("after")}, client.SubmitOptions{})
		if err == nil {
			ackAt = time.Now()
			break
		}
		if time.Since(killedAt) > within {
			t.Fatalf("no submit acknowledged by %s within %s of killing %s: %v%s", passive.name, within, active.name, err, dg())
		}
		if errors.Is(err, client.ErrServer) {
			time.Sleep(10 * time.Millisecond) // pace retries of an immediate refusal
		}
	}
	// The worker connects once the survivor serves: one that connected at
	// the kill would be sent DISCONNECT by the passive node and back off
	// (50 ms doubling: 1.55 s in all), which times the worker's backoff,
	// not the broker.
	wg.Add(1)
	go func() { defer wg.Done(); _ = w.Run(wctx) }()
	var dispatchAt time.Time
	select {
	case dispatchAt = <-dispatched:
	case <-time.After(within - time.Since(killedAt)):
		t.Fatalf("no old ticket dispatched by %s within %s of killing %s%s", passive.name, within, active.name, dg())
	}
	wcancel()
	wg.Wait()
	ft := failoverTime{killed: active.name, ack: ackAt.Sub(killedAt), dispatch: dispatchAt.Sub(killedAt),
		steps: takeoverSteps(lifeLog(passive), killedAt)}
	if restart {
		stop := submitWhile(t, ctx, endpoints(primary, backup))
		restartAt := time.Now()
		active.start(t)
		waitPairHealthy(t, ctx, primary, backup, 30*time.Minute)
		ft.rejoin = time.Since(restartAt)
		var at time.Time
		ft.rejoinWait, at, ft.rejoinAcks = stop()
		ft.rejoinWaitAt = at.Sub(restartAt)
	}
	return ft
}

// takeoverSteps finds in a survivor's log the steps of its takeover after
// the kill at killedAt and gives their times from the kill: the client
// vote accepted, raft reformed with this node alone, and serving (with
// the dispatcher's activation time, which it logs).
func takeoverSteps(log string, killedAt time.Time) string {
	steps := []struct{ name, line string }{
		{"vote", "failover successful"},
		{"reformed", "raft reformed with this node as the only voter"},
		{"activated", "dispatcher activated"},
		{"serving", servingLine},
	}
	var out []string
	i := 0
	for line := range strings.Lines(log) {
		if i == len(steps) {
			break
		}
		ts, _, ok := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		if !ok || !strings.Contains(line, steps[i].line) {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || at.Before(killedAt) {
			continue
		}
		s := fmt.Sprintf("%s +%.3fs", steps[i].name, at.Sub(killedAt).Seconds())
		if _, took, ok := strings.Cut(line, " took="); ok && steps[i].name == "activated" {
			s += " (took " + strings.TrimSpace(took) + ")"
		}
		out = append(out, s)
		i++
	}
	return strings.Join(out, ", ")
}

// loadPending submits n tickets of backlogService through the pair's
// active node: four clients, each pipelining 256 submits, every
// acknowledgement checked; progress is logged every 30 s.
func loadPending(t *testing.T, ctx context.Context, brokers []string, n int, body [][]byte, dg func() string) {
	t.Helper()
	const clients = 4
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		acked    atomic.Int64
		errMu    sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
		cancel()
	}
	for c := range clients {
		share := n / clients
		if c < n%clients {
			share++
		}
		cl, err := client.New(client.Config{Brokers: brokers, MaxPending: 256, Retries: 10, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		futs := make(chan *client.SubmitFuture, 1024)
		wg.Add(2)
		go func() {
			defer wg.Done()
			defer close(futs)
			for range share {
				f, err := cl.SubmitAsync(ctx, backlogService, body, client.SubmitOptions{})
				if err != nil {
					fail(fmt.Errorf("submit: %w", err))
					return
				}
				select {
				case futs <- f:
				case <-ctx.Done():
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for f := range futs {
				if _, err := f.Ticket(ctx); err != nil {
					fail(fmt.Errorf("submit not acknowledged: %w", err))
					return
				}
				acked.Add(1)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	start := time.Now()
	for {
		select {
		case <-done:
			if firstErr != nil {
				t.Fatalf("loading the backlog: %d of %d acknowledged: %v%s", acked.Load(), n, firstErr, dg())
			}
			return
		case <-tick.C:
			a := acked.Load()
			t.Logf("loading: %d of %d acknowledged (%.0f/s)", a, n, float64(a)/time.Since(start).Seconds())
		}
	}
}

// dirSize is the total size of the files under dir.
func dirSize(dir string) int64 {
	var total int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			total += fi.Size()
		}
		return nil
	})
	return total
}
