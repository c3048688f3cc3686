package sim_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/sim"
	"github.com/titanicmq/titanic/store"
)

// The simulation runs as many schedules as fit in a budget: short in
// `make test`, long with TITANIC_SIM=long (`make sim`; TITANIC_SIM_TIME
// sets the budget per mode, default 5m). TITANIC_SIM_SEED=n replays one
// seed; TITANIC_SIM_FIRST=n starts the sequence at seed n. TITANIC_SIM_FAIL_TRANSFERS=1 makes every raft leadership transfer
// of the pair fail (Options.FailTransfers), so that a passive leader must
// step down each time. Speed is reported, never asserted.

func budget(short time.Duration) time.Duration {
	if os.Getenv("TITANIC_SIM") != "long" {
		return short
	}
	if d, err := time.ParseDuration(os.Getenv("TITANIC_SIM_TIME")); err == nil && d > 0 {
		return d
	}
	return 5 * time.Minute
}

// seeds returns the seeds to run: the one asked for, or a sequence that is
// the same in every short run (so `make test` is repeatable) and starts
// anywhere in a long one.
func seeds(t *testing.T) (first int64, only bool) {
	if s := os.Getenv("TITANIC_SIM_SEED"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("TITANIC_SIM_SEED=%q: %v", s, err)
		}
		return n, true
	}
	if s := os.Getenv("TITANIC_SIM_FIRST"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("TITANIC_SIM_FIRST=%q: %v", s, err)
		}
		return n, false
	}
	if os.Getenv("TITANIC_SIM") == "long" {
		return time.Now().UnixNano() % 1_000_000_000, false
	}
	return 1, false
}

// logBuffer keeps one run's log, written out only when the run fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) save(t *testing.T, name string) string {
	dir := os.Getenv("TITANIC_ARTIFACTS")
	if dir == "" {
		dir = os.TempDir()
	}
	path := filepath.Join(dir, name)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := os.WriteFile(path, b.buf.Bytes(), 0o644); err != nil {
		t.Logf("write %s: %v", path, err)
		return ""
	}
	return path
}

// runOne runs one seed and reports what it found; it returns the result.
func runOne(t *testing.T, opts sim.Options) sim.Result {
	t.Helper()
	var logs logBuffer
	opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	res := runSeed(t, opts)
	name := fmt.Sprintf("sim-%s-seed%d-fence%v.log", opts.Mode, opts.Seed, !opts.NoFence)
	if os.Getenv("TITANIC_SIM_LOG") != "" {
		t.Logf("log: %s", logs.save(t, name))
	}
	if res.Report.OK() && slices.Min(res.ClusterVersions) < store.OpsRecordVersion {
		// Settled: both nodes up and caught up, reporting their
		// versions to the leader all along.
		t.Errorf("%s seed %d: cluster versions %v at the end, not %d: the simulation does not run the current ops records",
			opts.Mode, opts.Seed, res.ClusterVersions, store.OpsRecordVersion)
	}
	if !res.Report.OK() {
		t.Errorf("%s seed %d (fencing %v): %s\nexits: %q\nschedule: %s\nlog: %s\nreplay: TITANIC_SIM_SEED=%d go test -race -count=1 -run 'TestSim%s$' ./internal/sim/",
			opts.Mode, opts.Seed, !opts.NoFence, res.Report, res.Exits, res.Schedule, logs.save(t, name), opts.Seed, title(opts.Mode))
	}
	return res
}

func title(m sim.Mode) string {
	s := m.String()
	return strings.ToUpper(s[:1]) + s[1:]
}

func simulate(t *testing.T, mode sim.Mode, short time.Duration) {
	first, only := seeds(t)
	end := time.Now().Add(budget(short))
	start := time.Now()
	var runs, acked, runTwice, answeredTwice, exits, failed, neverRaised int
	for seed := first; ; seed++ {
		res := runOne(t, sim.Options{Mode: mode, Seed: seed, FailTransfers: os.Getenv("TITANIC_SIM_FAIL_TRANSFERS") != ""})
		runs++
		acked += res.Report.Acked
		runTwice += res.Report.RunTwice
		answeredTwice += res.Report.AnsweredTwice
		exits += len(res.Exits)
		if !res.Report.OK() {
			failed++
		}
		if res.VersionStep < 0 {
			neverRaised++
		}
		if testing.Verbose() {
			t.Logf("seed %d: %s in %s; exits %q; cluster version %d from step %d (%v at the end); raft cuts %d", seed, res.Report, res.Took.Round(time.Millisecond), res.Exits,
				store.OpsRecordVersion, res.VersionStep, res.ClusterVersions, raftCuts(res.Schedule))
		}
		if only || time.Now().After(end) {
			break
		}
	}
	took := time.Since(start)
	t.Logf("%s: %d schedules (seeds %d-%d) in %s: %.1f schedules/minute; %d tickets acknowledged, %d jobs run twice, %d answered twice, %d node exits, %d schedules failed; %d never at cluster version %d during the schedule",
		mode, runs, first, first+int64(runs)-1, took.Round(time.Second), float64(runs)/took.Minutes(), acked, runTwice, answeredTwice, exits, failed, neverRaised, store.OpsRecordVersion)
}

// raftCuts counts the cuts of raft links alone in a schedule.
func raftCuts(s sim.Schedule) int {
	n := 0
	for _, st := range s.Steps {
		for _, a := range st {
			if a.Kind == sim.CutRaft {
				n++
			}
		}
	}
	return n
}

func TestSimPair(t *testing.T)  { simulate(t, sim.Pair, 25*time.Second) }
func TestSimGroup(t *testing.T) { simulate(t, sim.Group, 15*time.Second) }

// TestSimExploreNoFence looks for seeds on which the pair without
// fencing loses work (TITANIC_SIM_EXPLORE=n: n seeds from 1).
func TestSimExploreNoFence(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("TITANIC_SIM_EXPLORE"))
	if n == 0 {
		t.Skip("TITANIC_SIM_EXPLORE not set")
	}
	first := int64(1)
	if s, err := strconv.ParseInt(os.Getenv("TITANIC_SIM_SEED"), 10, 64); err == nil {
		first = s
	}
	for seed := first; seed < first+int64(n); seed++ {
		f, err := os.Create(filepath.Join(os.TempDir(), fmt.Sprintf("explore-%d.log", seed)))
		if err != nil {
			t.Fatal(err)
		}
		res, err := sim.Run(context.Background(), sim.Options{Mode: sim.Pair, Seed: seed, NoFence: true, Dir: t.TempDir(), Settle: 10 * time.Second,
			Logger: slog.New(slog.NewTextHandler(f, nil))})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("seed %d: losses %d, diverged %d, lost %d, in %s", seed, res.Report.Losses(), res.Report.Count(sim.Diverged), res.Report.Count(sim.Lost), res.Took.Round(time.Millisecond))
	}
}

// forkSeeds are pair schedules with split brains on which, with fencing
// off (as the first wave ran), both sides can lead the same term: the
// side that yields finds nothing it holds that its peer lacks, and its
// solo work is lost. With fencing on, the same schedules lose nothing.
// A seed fixes the schedule, not the timing of the nodes' goroutines, so
// one replay on a loaded machine (or under -race) may miss the fork; the
// regression holds when any of them finds a loss. 28 lost on every
// replay on a quiet machine; the others lost without fencing under -race
// on a loaded one (TITANIC_SIM_EXPLORE, 2026-12-06).
var forkSeeds = []int64{28, 42, 22, 20, 23, 26}

func TestSimForkRegression(t *testing.T) {
	var off sim.Result
	found := forkSeeds[0]
	for _, seed := range forkSeeds {
		off = runSeed(t, sim.Options{Mode: sim.Pair, Seed: seed, NoFence: true, NoRaftCuts: true, Settle: 10 * time.Second})
		if off.Report.Losses() > 0 {
			t.Logf("seed %d without fencing: %d losses (%d lost, %d unknown after ack, %d diverged) in %s", seed,
				off.Report.Losses(), off.Report.Count(sim.Lost), off.Report.Count(sim.UnknownAfterAck), off.Report.Count(sim.Diverged), off.Took.Round(time.Millisecond))
			found = seed
			break
		}
		t.Logf("seed %d without fencing: no loss (%s)", seed, off.Report)
	}
	if off.Report.Losses() == 0 {
		t.Errorf("seeds %v without fencing: no loss found: the simulation no longer finds the forks that fencing prevents", forkSeeds)
	}
	// The same schedule with fencing: runOne fails the test on any violation.
	on := runOne(t, sim.Options{Mode: sim.Pair, Seed: found, NoRaftCuts: true})
	t.Logf("seed %d with fencing: %s in %s", found, on.Report, on.Took.Round(time.Millisecond))
}

// runSeed runs one seed and returns what it found.
func runSeed(t *testing.T, opts sim.Options) sim.Result {
	t.Helper()
	opts.Dir = t.TempDir()
	if keep := os.Getenv("TITANIC_SIM_KEEP"); keep != "" {
		// Keep the nodes' directories (stores, raft state, forks set
		// aside) for a post-mortem.
		opts.Dir = filepath.Join(keep, fmt.Sprintf("%s-%d-%d", opts.Mode, opts.Seed, time.Now().UnixNano()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := sim.Run(ctx, opts)
	if err != nil {
		t.Fatalf("%s seed %d: %v", opts.Mode, opts.Seed, err)
	}
	return res
}

// Seeds that found losses with fencing on, before their fixes (their
// schedules as they were then, without cuts of the raft link alone): a submit
// acknowledged by the yielding node after it read its handover (it now
// halts its raft first), and a solo journal pruned by the entry that adds
// the unreachable peer (now only a command both nodes committed prunes
// it). Their timing is their own, so they found it in most replays, not
// all; they must find nothing now. Seed 831874142 also found two leaders
// of one term (a transfer to a node leading alone; see the transfer gate
// in store/replica) and, under -race, a stall; seeds 4 and 5, under
// -race, stalls of the rejoin without a vote (a restarted passive leader
// left its raft while its active peer followed it without a vote; a node
// caught up once never asked for its vote).
func TestSimFixedSeeds(t *testing.T) {
	for _, seed := range []int64{831874217, 831874142, 4, 5} {
		runOne(t, sim.Options{Mode: sim.Pair, Seed: seed, NoRaftCuts: true})
	}
}

// TestSimStuckTransfer is issue 9: after the heal, the passive node of the
// pair led raft and could not hand leadership to the active one, and
// neither served. Its raft instance refused every transfer: in
// hashicorp/raft a transfer cut short by a lost leadership can leave the
// instance's "transfer in progress" flag set for ever (raft#696), which
// took CPU load to hit. Here the state is made on purpose: once the run
// has settled, raft leadership moves to the passive node (LeadPassive),
// and every transfer the role loops try fails (FailTransfers). The pair
// must still converge (the passive node steps down), and the checker
// must find nothing wrong.
func TestSimStuckTransfer(t *testing.T) {
	// Raft's timeouts as a broker's: with the sim's 50 ms lease, -race
	// makes the passive leader lose leadership now and then, and an
	// election the active wins would hide a missing way out.
	res := runOne(t, sim.Options{Mode: sim.Pair, Seed: 831874142, NoRaftCuts: true, FailTransfers: true, LeadPassive: true, RaftTimeout: time.Second, Settle: 20 * time.Second})
	if res.TransferFailures == 0 {
		t.Errorf("the passive node never tried to hand raft leadership back: the test did not make issue 9's state (its log, with TITANIC_SIM_LOG=1, says why)")
	}
	t.Logf("%s; %d transfers failed on purpose, in %s", res.Report, res.TransferFailures, res.Took.Round(time.Millisecond))
}
