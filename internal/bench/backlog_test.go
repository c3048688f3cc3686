package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/worker"
)

// TestBacklog is `make backlog` (skipped unless TITANIC_BACKLOG_N is set):
// it builds a data directory holding N pending tickets (100-byte bodies,
// one service, no worker) in bulk through the store API with fsync off,
// then starts the built binary on it and reports its peak anonymous
// memory (RssAnon: the heap and stacks; the data file's mapped pages are
// not counted), the time from the process start to the first
// acknowledged submit, and, at that depth, the durable submit rate of one
// pipelined client and the dispatch rate to 8 echo workers; then the time
// to the first acknowledged submit of a restart after a clean stop, and
// of one after a SIGKILL.
func TestBacklog(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("TITANIC_BACKLOG_N"))
	if n <= 0 {
		t.Skip("set TITANIC_BACKLOG_N (make backlog)")
	}
	dir := os.Getenv("TITANIC_BACKLOG_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	const service = "backlog"
	path := filepath.Join(dir, "titanic.db")
	if _, err := os.Stat(path); err != nil {
		start := time.Now()
		buildBacklog(t, path, service, n)
		t.Logf("built %d pending tickets in %s", n, time.Since(start).Round(time.Millisecond))
	} else {
		t.Logf("reusing %s", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("TITANIC_BACKLOG_BUILD_ONLY") != "" {
		return
	}
	// The broker runs on a copy, so that a kept directory stays the same
	// backlog for the next run (or another binary).
	run := t.TempDir()
	if err := copyFile(path, filepath.Join(run, "titanic.db")); err != nil {
		t.Fatal(err)
	}
	dir = run

	ep := harness.FreeEndpoint(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	p, firstAck, peak, stopWatch := startToFirstAck(ctx, t, ep, dir, service)
	defer stopWatch()
	startupRSS := peak.Load()
	body := [][]byte{make([]byte, 100)}

	// Submits at depth: one pipelined client, 256 in flight, 5 s.
	pc, err := client.New(client.Config{Brokers: []string{ep}, MaxPending: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	submits := 0
	sstart := time.Now()
	var futs []*client.SubmitFuture
	for time.Since(sstart) < 5*time.Second {
		f, err := pc.SubmitAsync(ctx, service, body, client.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		futs = append(futs, f)
	}
	for _, f := range futs {
		if _, err := f.Ticket(ctx); err != nil {
			t.Fatal(err)
		}
		submits++
	}
	submitRate := float64(submits) / time.Since(sstart).Seconds()

	// Dispatch at depth: 8 echo workers for 10 s.
	var jobs atomic.Int64
	w, err := worker.New(worker.Config{Brokers: []string{ep}, Service: service, Concurrency: 8},
		func(_ context.Context, req [][]byte) ([][]byte, error) { jobs.Add(1); return req, nil })
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = w.Run(wctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for jobs.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	j0, d0 := jobs.Load(), time.Now()
	time.Sleep(10 * time.Second)
	dispatchRate := float64(jobs.Load()-j0) / time.Since(d0).Seconds()
	wcancel()
	wg.Wait()
	if err := p.Stop(30 * time.Second); err != nil {
		t.Error(err)
	}
	stopWatch()

	// A restart after that clean stop, then after an unclean one: the
	// broker acknowledges a submit and is SIGKILLed (which leaves the
	// file as a crash of the process or its host does: its last commit,
	// nothing written at close), then starts once more on it.
	p, cleanAck, _, stopWatch := startToFirstAck(ctx, t, ep, dir, service)
	stopWatch()
	p.Kill()
	p, uncleanAck, uncleanPeak, stopWatch := startToFirstAck(ctx, t, ep, dir, service)
	uncleanRSS := uncleanPeak.Load()
	stopWatch()
	p.Kill()

	report := fmt.Sprintf("backlog %d pending (data file %d MiB): first submit acknowledged %.2f s after the broker started; RssAnon at first ack %.1f MiB, peak %.1f MiB; submits at depth %.0f/s (1 pipelined client, 256 in flight); dispatch at depth %.0f jobs/s (8 echo workers); first submit acknowledged %.2f s after a restart that followed a clean stop, %.2f s after one that followed a SIGKILL (RssAnon at first ack %.1f MiB)",
		n, fi.Size()>>20, firstAck.Seconds(), float64(startupRSS)/(1<<20), float64(peak.Load())/(1<<20), submitRate, dispatchRate, cleanAck.Seconds(), uncleanAck.Seconds(), float64(uncleanRSS)/(1<<20))
	t.Log(report)
	fmt.Println(report)
}

// startToFirstAck starts the broker on dir and submits to service until
// a submit is acknowledged. It returns the broker, the time from its
// start to that acknowledgement, and its peak RssAnon, watched until
// stopWatch is called.
func startToFirstAck(ctx context.Context, t *testing.T, ep, dir, service string) (p *harness.Process, firstAck time.Duration, peak *atomic.Int64, stopWatch func()) {
	t.Helper()
	start := time.Now()
	p = harness.Start(t, "broker", "", "broker", "--listen", ep, "--data", dir, "--http-listen", "", "--log-format", "text")
	peak = new(atomic.Int64)
	stopWatch = watchRSS(p.PID(), peak)
	c, err := client.New(client.Config{Brokers: []string{ep}, Timeout: 200 * time.Millisecond, Retries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := [][]byte{make([]byte, 100)}
	for {
		if _, err := c.Submit(ctx, service, body, client.SubmitOptions{}); err == nil {
			return p, time.Since(start), peak, stopWatch
		}
		if p.Exited() {
			t.Fatalf("broker exited:\n%s", p.Tail())
		}
		if ctx.Err() != nil {
			t.Fatal("no submit acknowledged")
		}
	}
}

// buildBacklog writes n pending tickets of service to a new store at
// path, in batches, with fsync off (a benchmark's set-up only).
func buildBacklog(t *testing.T, path, service string, n int) {
	st, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	body := [][]byte{make([]byte, 100)}
	const batch = 4096
	ops := make([]store.Op, 0, batch)
	for i := 0; i < n; {
		ops = ops[:0]
		for ; i < n && len(ops) < batch; i++ {
			ops = append(ops, store.Op{Kind: store.OpSubmit, ID: store.NewID(), Time: now, Service: service, Body: body})
		}
		if _, err := st.Apply(context.Background(), ops); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	// Synced, so that the broker's first commit does not wait for the
	// copy's gigabytes to be written back: its fdatasync would (that was
	// most of the 1.4 s to the first ack of a broker started on a fresh
	// copy of 10,000,000 tickets).
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// watchRSS polls /proc/PID/status every 20 ms and keeps the highest
// RssAnon (bytes) in peak, until the returned stop is called.
func watchRSS(pid int, peak *atomic.Int64) (stop func()) {
	done := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if v := rssAnon(pid); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// rssAnon is pid's RssAnon in bytes, 0 when it cannot be read.
func rssAnon(pid int) int64 {
	v, _ := harness.ProcStatus(pid, "RssAnon")
	return v
}
