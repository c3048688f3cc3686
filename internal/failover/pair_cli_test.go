package failover

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/cmd/titanic/config"
	"github.com/titanicmq/titanic/internal/harness"
)

// cliLoop is a user's shell loop of `titanic submit --broker A,B`: one
// process per submit, with the CLI's default timings, one after the other.
// A failed submit is run again with the same --key (as a careful script
// would), so every ticket in the store has an ack.
type cliLoop struct {
	mu    sync.Mutex
	acks  []ack
	calls []cliCall
	errs  chan error
	stop  chan struct{}
	done  chan struct{}
}

// cliCall is one run of the CLI.
type cliCall struct {
	start, end time.Time
	ok         bool
}

func startCLILoop(t *testing.T, ctx context.Context, brokers []string) *cliLoop {
	t.Helper()
	bin := harness.Binary(t)
	l := &cliLoop{errs: make(chan error, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for i := 0; ; i++ {
			key := fmt.Sprintf("cli-%d", i)
			body := "body of " + key
			deadline := time.Now().Add(60 * time.Second)
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				var out, errOut bytes.Buffer
				cmd := exec.CommandContext(ctx, bin, "submit", "--broker", strings.Join(brokers, ","), "--key", key, "echo", body)
				cmd.Stdout, cmd.Stderr = &out, &errOut
				start := time.Now()
				err := cmd.Run()
				end := time.Now()
				l.mu.Lock()
				l.calls = append(l.calls, cliCall{start: start, end: end, ok: err == nil})
				if err == nil {
					l.acks = append(l.acks, ack{key: key, body: body, ticket: strings.TrimSpace(out.String()), at: end})
				}
				l.mu.Unlock()
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					return
				}
				if time.Now().After(deadline) {
					l.errs <- fmt.Errorf("cli submit %s: not acknowledged within 60s: %w: %s", key, err, errOut.String())
					return
				}
			}
		}
	}()
	return l
}

func (l *cliLoop) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acks)
}

// progress waits until the loop has n more acks.
func (l *cliLoop) progress(t *testing.T, n int, within time.Duration, what string, diagf func() string) {
	t.Helper()
	target := l.count() + n
	deadline := time.Now().Add(within)
	for l.count() < target {
		select {
		case err := <-l.errs:
			t.Fatalf("%s: %v%s", what, err, diagf())
		case <-l.done:
			t.Fatalf("%s: the CLI loop stopped%s", what, diagf())
		case <-time.After(20 * time.Millisecond): // polling the count, bounded below
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d CLI acks of %d within %s%s", what, l.count(), target, within, diagf())
		}
	}
}

func (l *cliLoop) finish(t *testing.T, diagf func() string) ([]ack, []cliCall) {
	t.Helper()
	close(l.stop)
	<-l.done
	select {
	case err := <-l.errs:
		t.Fatalf("%v%s", err, diagf())
	default:
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.acks), slices.Clone(l.calls)
}

// TestPairCLIDefaults measures what a CLI user sees with the default
// timings (no timing flag on the brokers nor on the CLI): a loop of
// `titanic submit --broker A,B` while the active broker is SIGKILLed and
// restarted five times. It reports (t.Logf, not asserted) the gap in the
// loop's acks around each kill (median, max) and the latency of a CLI
// submit while one node is down, and asserts that every acknowledged
// ticket is answered with its own body, none lost, none made twice.
func TestPairCLIDefaults(t *testing.T) {
	primary, backup, _ := pairWith(t, "--log-level", "debug")
	brokers := endpoints(primary, backup)
	dg := func() string { return diag(primary, backup) }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	echoWorkersBeating(t, ctx, brokers, 2, 0) // the default heartbeat, as the brokers
	cli := startCLILoop(t, ctx, brokers)
	cli.progress(t, 20, 60*time.Second, "first CLI acks of the pair", dg)

	steady := time.Now() // calls before this waited for the pair to form
	const kills = 5
	var (
		killedAt []time.Time
		downFrom []time.Time // one node down: from the first ack after the kill...
		downTo   []time.Time // ...to its restart
	)
	for k := 1; k <= kills; k++ {
		active, passive := waitPairHealthy(t, ctx, primary, backup, 60*time.Second)
		cli.progress(t, 10, 30*time.Second, fmt.Sprintf("kill %d: CLI acks before the kill", k), dg)
		killedAt = append(killedAt, time.Now())
		active.kill()
		cli.progress(t, 1, 30*time.Second, fmt.Sprintf("kill %d: first CLI ack after killing the active %s (%s must take over)", k, active.name, passive.name), dg)
		downFrom = append(downFrom, time.Now())
		cli.progress(t, 20, 30*time.Second, fmt.Sprintf("kill %d: CLI acks with %s down", k, active.name), dg)
		downTo = append(downTo, time.Now())
		active.start(t)
		t.Logf("kill %d: %s killed at %s, restarted at %s", k, active.name, killedAt[k-1].Format("15:04:05.000"), time.Now().Format("15:04:05.000"))
	}
	waitPairHealthy(t, ctx, primary, backup, 60*time.Second)
	cli.progress(t, 10, 30*time.Second, "CLI acks after the last restart", dg)
	acks, calls := cli.finish(t, dg)

	var gaps, down, both []time.Duration
	for i, at := range killedAt {
		g := outage(acks, at, 5)
		gaps = append(gaps, g)
		t.Logf("kill %d: the CLI loop waited %s", i+1, g.Round(time.Millisecond))
	}
	for _, c := range calls {
		if !c.ok {
			continue
		}
		d, isDown := c.end.Sub(c.start), false
		for i := range downFrom {
			isDown = isDown || !c.start.Before(downFrom[i]) && c.end.Before(downTo[i])
		}
		switch {
		case isDown:
			down = append(down, d)
		case c.start.Before(steady), slices.ContainsFunc(killedAt, func(at time.Time) bool { return c.end.After(at) && c.start.Before(at.Add(10*time.Second)) }):
		default:
			both = append(both, d)
			if d > 500*time.Millisecond {
				t.Logf("slow CLI submit with both nodes up: %s at %s", d.Round(time.Millisecond), c.start.Format("15:04:05.000"))
			}
		}
	}
	failed := 0
	for _, c := range calls {
		if !c.ok {
			failed++
		}
	}
	t.Logf("defaults (pair heartbeat %s, CLI timeout %s): CLI failover p50=%s max=%s over %d SIGKILLs of the active; %d CLI calls failed and were run again",
		pairHeartbeatDefault, cliTimeoutDefault, percentile(gaps, 50).Round(time.Millisecond), percentile(gaps, 100).Round(time.Millisecond), kills, failed)
	t.Logf("CLI submit with one node down: p50=%s p99=%s max=%s (%d calls); with both up: p50=%s p99=%s (%d calls; process start included)",
		percentile(down, 50).Round(time.Millisecond), percentile(down, 99).Round(time.Millisecond), percentile(down, 100).Round(time.Millisecond), len(down),
		percentile(both, 50).Round(time.Millisecond), percentile(both, 99).Round(time.Millisecond), len(both))

	checkAcks(t, ctx, brokers, acks, dg)
	checkOneServerPerTerm(t, primary, backup)
}

// The defaults the test runs with, for its report: [pair] heartbeat, and
// the client commands' --timeout.
var (
	pairHeartbeatDefault = config.Default().Pair.Heartbeat
	cliTimeoutDefault    = client.DefaultTimeout
)
