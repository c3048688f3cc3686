package jepsen

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker/zsock"
	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/netns"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// Scenario is one run of the suite.
type Scenario struct {
	// Name names the report (jepsen-<Name>.txt), e.g. "pair-mixed".
	Name string
	// Group runs a 3-node raft group; otherwise a Binary Star pair.
	Group bool
	// Menu are the fault kinds the nemesis chooses from, with weights.
	Menu map[Kind]int
	// PKill is the chance that a network fault is followed by a SIGKILL
	// of the active node (see nemesis.plan).
	PKill float64
	// Faults is how many fault plans at least; Duration how long at
	// least the fault phase lasts.
	Faults   int
	Duration time.Duration
	// HoldMin and HoldMax bound how long each fault holds.
	HoldMin, HoldMax time.Duration
	// Recover bounds each recovery: whole and serving after a heal.
	Recover time.Duration
	// GiveUp is how many failed recoveries in a row end the fault phase
	// (at least 1).
	GiveUp int
}

// Timing of the run.
const (
	clientTimeout = 500 * time.Millisecond // per try; more than the pair's peer timeout (400ms)
	startWithin   = 30 * time.Second       // a new cluster whole and serving
	finalWithin   = 90 * time.Second       // the final lookups, all together
	deadWithin    = 10 * time.Second       // ... when the cluster did not recover: they only record what answers
	stuckWithin   = 10 * time.Second       // the final recovery of a cluster that already failed to recover
	stopWithin    = 10 * time.Second       // clients and workers, once told to stop
	service       = "jepsen"
	// slowRecoveriesShown is how many of the slowest recoveries the
	// report lists with the fault each followed.
	slowRecoveriesShown = 3
)

// EnvSeed and EnvMode are the environment variables of the suite: the
// seed (printed in the log and the report) and "long" for the long run.
const (
	EnvSeed = "TITANIC_JEPSEN_SEED"
	EnvMode = "TITANIC_JEPSEN"
)

// Long reports whether the long run is asked for (TITANIC_JEPSEN=long).
func Long() bool { return os.Getenv(EnvMode) == "long" }

// Seed returns the base seed: $TITANIC_JEPSEN_SEED, or a random one.
func Seed() (uint64, error) {
	if s := os.Getenv(EnvSeed); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s=%q: %w", EnvSeed, s, err)
		}
		return v, nil
	}
	return rand.Uint64(), nil
}

// scenarioSeed derives a scenario's seed from the base seed and its name,
// so that one scenario replays alone with the base seed.
func scenarioSeed(base uint64, name string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	return base ^ h.Sum64()
}

// run is the state of one scenario run.
type run struct {
	t       *testing.T
	sc      Scenario
	h       *History
	nodes   []*node
	zctx    *zsock.Context // the test process's (root namespace)
	probe   *client.Client
	probes  int
	tr      tracker
	notes   []string
	nemesis *nemesis
}

// Run runs a scenario and checks its history; the test fails (after the
// report is logged and written) when an invariant is violated.
func Run(t *testing.T, sc Scenario, base uint64) *Result {
	seed := scenarioSeed(base, sc.Name)
	replay := fmt.Sprintf("%s=%d go test -count=1 -run '%s$' ./internal/jepsen/", EnvSeed, base, t.Name())
	if Long() {
		replay = EnvMode + "=long " + replay
	}
	t.Logf("jepsen %s: base seed %d (scenario seed %d); replay: %s", sc.Name, base, seed, replay)
	begin := time.Now()

	net := netns.New(t)
	netns.RequireNft(t)
	r := &run{t: t, sc: sc, h: &History{}}
	var sides []*netns.Host
	if sc.Group {
		for _, name := range []string{"g1", "g2", "g3"} {
			r.nodes = append(r.nodes, &node{name: name, host: net.Host(name), dir: t.TempDir()})
		}
		sides = []*netns.Host{net.Host("c1"), net.Host("c2")}
		var peers []string
		for _, n := range r.nodes {
			peers = append(peers, n.name+"="+n.host.Addr+":7000")
		}
		for _, n := range r.nodes {
			n.args = append([]string{"--raft", "--node-id", n.name, "--raft-bind", n.host.Addr + ":7000",
				"--peers", strings.Join(peers, ",")}, brokerFlags...)
		}
	} else {
		pa := &node{name: "pa", host: net.Host("pa"), dir: t.TempDir()}
		pb := &node{name: "pb", host: net.Host("pb"), dir: t.TempDir()}
		r.nodes = []*node{pa, pb}
		sides = []*netns.Host{net.Host("ca"), net.Host("cb")}
		pairArgs := func(role string, peer *node) []string {
			return append([]string{"--pair", role, "--peer", peer.host.Addr, "--pair-heartbeat", "200ms"}, brokerFlags...)
		}
		pa.args = pairArgs("primary", pb)
		pb.args = pairArgs("backup", pa)
	}
	net.Attach()
	for _, n := range r.nodes {
		if err := n.start(t); err != nil {
			t.Fatalf("start %s: %v", n.name, err)
		}
	}
	eps, names := make([]string, len(r.nodes)), make([]string, len(r.nodes))
	for i, n := range r.nodes {
		eps[i], names[i] = n.endpoint(), n.name
	}

	// ZeroMQ contexts: the test process's, and one made inside each
	// client host, so that its clients connect from there (netns.Host.Do).
	r.zctx = newContext(t, nil)
	var sideCtx []*zsock.Context
	for _, h := range sides {
		sideCtx = append(sideCtx, newContext(t, h))
	}
	r.tr = newTracker(eps, names)
	probe, err := client.New(client.Config{Brokers: eps, Timeout: clientTimeout, Retries: 4, Logger: slog.New(r.tr), Context: r.zctx})
	if err != nil {
		t.Fatal(err)
	}
	r.probe = probe
	defer probe.Close()

	w := &workload{h: r.h, service: service, eps: eps, nodes: names, timeout: clientTimeout}
	workCtx, stopWorkers := context.WithCancel(context.Background())
	defer stopWorkers()
	workers, err := w.startWorkers(workCtx, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { stopWorkers(); waitGroup(t, workers, "workers") }()
	r.nemesis = newNemesis(t, r.h, seed, r.nodes, sides)
	leader, _, err := r.recover(startWithin)
	if err != nil {
		t.Fatalf("the new cluster is not whole and serving within %s: %v%s", startWithin, err, r.diag())
	}
	clientCtx, stopClients := context.WithCancel(context.Background())
	defer func() { stopClients(); waitGroup(t, &w.wg, "clients") }()
	for i, h := range sides {
		w.startClients(clientCtx, h.Name, sideCtx[i], seed+uint64(i))
	}

	// The fault phase. A cluster that does not recover gets more faults
	// (a restart may bring it back), but not after GiveUp failed
	// recoveries in a row: it is stuck, and the final check says what it
	// cost.
	plans, stuck := 0, 0
	// recoveries: from each heal to whole and serving, with the fault
	// plan healed, so that the report names what the slow ones followed.
	type recovery struct {
		took time.Duration
		plan int
		what string
	}
	var recoveries []recovery
	faultStart := time.Now()
	for plans < sc.Faults || time.Since(faultStart) < sc.Duration {
		steps := r.nemesis.plan(sc.Menu, sc.PKill, leader)
		plans++
		t.Logf("fault %d at %s: %s", plans, time.Now().UTC().Format("15:04:05.000"), describe(steps))
		for _, s := range steps {
			r.nemesis.apply(s)
			time.Sleep(sc.HoldMin + between(r.nemesis.rng, sc.HoldMax-sc.HoldMin)) // the fault holds under load
		}
		r.nemesis.heal()
		t.Logf("healed at %s (times in UTC, as the nodes' logs)", time.Now().UTC().Format("15:04:05.000"))
		l, took, err := r.recover(sc.Recover)
		if err != nil {
			stuck++
			r.note("fault %d (%s): not whole and serving within %s after the heal: %v", plans, describe(steps), sc.Recover, err)
			t.Logf("%s%s", r.notes[len(r.notes)-1], r.diag())
			if stuck >= sc.GiveUp {
				r.note("fault phase ended after %d failed recoveries in a row", stuck)
				break
			}
			continue
		}
		stuck, leader = 0, l
		recoveries = append(recoveries, recovery{took, plans, describe(steps)})
		time.Sleep(500*time.Millisecond + between(r.nemesis.rng, time.Second)) // load between faults
	}
	t.Logf("fault phase over: %d fault plans in %s", plans, time.Since(faultStart).Round(time.Second))
	if len(recoveries) > 0 {
		slices.SortFunc(recoveries, func(a, b recovery) int { return cmp.Compare(a.took, b.took) })
		longest := recoveries[len(recoveries)-1]
		r.note("recoveries after a heal: %d, median %s, longest %s", len(recoveries),
			recoveries[len(recoveries)/2].took.Round(10*time.Millisecond), longest.took.Round(10*time.Millisecond))
		// The slowest few, slowest first, with the fault each healed.
		for i := len(recoveries) - 1; i >= max(0, len(recoveries)-slowRecoveriesShown); i-- {
			rc := recoveries[i]
			r.note("  recovery of %s after fault %d: %s", rc.took.Round(10*time.Millisecond), rc.plan, rc.what)
		}
	}

	// The end: clients stop, everything heals, every node that is down
	// restarts, and every acknowledged ticket is looked up (then every
	// other stored one, where a key's second ticket shows).
	stopClients()
	waitGroup(t, &w.wg, "clients")
	r.nemesis.heal()
	lookFor, tries, within := finalWithin, 30, sc.Recover
	if stuck > 0 {
		within = stuckWithin // it failed to recover already
	}
	if _, _, err := r.recover(within); err != nil {
		r.note("final heal: not whole and serving within %s: %v", within, err)
		t.Logf("%s%s", r.notes[len(r.notes)-1], r.diag())
		// It may not serve: ask each node about once per ticket, pending
		// or not, for the record.
		lookFor, tries = deadWithin, -len(r.nodes)
	}
	r.finalLookups(w, lookFor, tries)
	stopWorkers()
	waitGroup(t, workers, "workers")

	now := time.Now()
	for _, n := range r.nodes {
		for _, op := range n.lifeOps(now) {
			r.h.Add(op)
		}
	}
	res := Check(r.h.Ops())
	report := Report(Meta{Scenario: sc.Name, Seed: base, Replay: replay, Duration: time.Since(begin), Notes: r.notes}, res)
	t.Logf("report:\n%s", report)
	if dir := os.Getenv("TITANIC_ARTIFACTS"); dir != "" {
		r.writeArtifacts(dir, report)
	}
	if v := res.Violations(); len(v) > 0 {
		t.Errorf("jepsen %s (seed %d) violates: %s%s", sc.Name, base, strings.Join(v, "; "), r.diag())
	}
	return res
}

// hungAfter is how long a running node may leave titanic.cluster
// unanswered during a recovery before it counts as hung: it is then sent
// SIGQUIT (the Go runtime writes its goroutines into its log), killed and
// started again, and the report says so.
const hungAfter = 10 * time.Second

// recover waits until every node runs (starting those that exit, a few
// times each, and those that hang), the cluster is whole, and a probe
// ticket is acknowledged and answered; it records the outcome
// (FRecovered) and returns the leader and how long it took.
func (r *run) recover(within time.Duration) (*node, time.Duration, error) {
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var (
		w       wholeness
		lastErr error
		starts  = map[*node]int{}
		heard   = map[*node]time.Time{}
		said    = time.Now()
		names   = make([]string, len(r.nodes))
	)
	for i, n := range r.nodes {
		names[i], heard[n] = n.name, time.Now()
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		sts, errs := make([]status, len(r.nodes)), make([]error, len(r.nodes))
		for i, n := range r.nodes {
			if !n.running() {
				if starts[n] < 3 {
					starts[n]++
					r.nemesis.apply(step{Restart, n})
					heard[n] = time.Now()
				}
				errs[i] = errors.New("down")
				continue
			}
			if sts[i], errs[i] = clusterStatus(ctx, r.zctx.ZMQ(), n); errs[i] == nil {
				heard[n] = time.Now()
			} else if time.Since(heard[n]) > hungAfter && ctx.Err() == nil {
				r.note("%s ran but answered nothing for %s (%v): sent SIGQUIT (goroutines in its log), killed and restarted", n.name, hungAfter, errs[i])
				r.t.Log(r.notes[len(r.notes)-1])
				if l := n.current(); l != nil {
					_ = l.proc.Signal(syscall.SIGQUIT)
				}
				_ = waitDone(n.current(), 2*time.Second)
				n.kill()
			}
		}
		i, err := w.check(names, sts, errs)
		if err == nil || errors.Is(err, errBehind) {
			// The probe is also the write a follower behind a
			// configuration entry needs to catch up.
			if perr := r.probeOnce(ctx); err == nil {
				err = perr
			}
		}
		if err == nil {
			r.h.Add(Op{Process: "nemesis", Type: OK, F: FRecovered, Node: names[i]})
			return r.nodes[i], time.Since(begin), nil
		}
		if ctx.Err() == nil || lastErr == nil {
			lastErr = err
		}
		if time.Since(said) > 5*time.Second {
			said = time.Now()
			r.t.Logf("recovering: %v", err)
		}
		select {
		case <-ctx.Done():
			r.h.Add(Op{Process: "nemesis", Type: Fail, F: FRecovered, Err: lastErr.Error()})
			return nil, time.Since(begin), lastErr
		case <-tick.C:
		}
	}
}

// waitDone waits up to d for a life's process to exit.
func waitDone(l *life, d time.Duration) bool {
	if l == nil {
		return true
	}
	select {
	case <-l.done:
		return true
	case <-time.After(d):
		return false
	}
}

// probeOnce submits a keyed probe through the client library and waits
// for its reply: the cluster serves end to end. Both are recorded. The
// probe goes at high priority: the clients go on submitting while a fault
// holds the workers off, and a probe at the back of that backlog measured
// the workers draining it (the longest "recoveries" of the group were
// that), not the cluster coming back.
func (r *run) probeOnce(ctx context.Context) error {
	r.probes++
	key := fmt.Sprintf("probe-%d", r.probes)
	r.h.Add(Op{Process: "probe", Type: Invoke, F: FSubmit, Key: key, Body: key})
	tk, err := r.probe.Submit(ctx, service, [][]byte{[]byte(key)}, client.SubmitOptions{IdemKey: key, Priority: client.PriorityHigh})
	if err != nil {
		r.h.Add(Op{Process: "probe", Type: Info, F: FSubmit, Key: key, Body: key, Err: err.Error()})
		return fmt.Errorf("probe submit: %w", err)
	}
	r.h.Add(Op{Process: "probe", Type: OK, F: FSubmit, Key: key, Body: key, Ticket: tk, Node: r.tr.node()})
	r.h.Add(Op{Process: "probe", Type: Invoke, F: FLookup, Ticket: tk})
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rep, err := r.probe.Reply(rctx, tk, client.ReplyOptions{Wait: true, PollInterval: 100 * time.Millisecond})
	if err != nil {
		op := Op{Process: "probe", Type: Info, F: FLookup, Ticket: tk, Err: err.Error()}
		if errors.Is(err, client.ErrUnknown) {
			op.Type, op.Code = OK, "400"
		}
		r.h.Add(op)
		return fmt.Errorf("probe reply of %s: %w", tk, err)
	}
	var v strings.Builder
	for _, f := range rep {
		v.Write(f)
	}
	r.h.Add(Op{Process: "probe", Type: OK, F: FLookup, Ticket: tk, Code: "200", Value: v.String(), Node: r.tr.node()})
	return nil
}

// finalLookups looks every acknowledged ticket up until it is answered
// 200 (or failed for good, or answered 400 three times, or time is up),
// then lists the stored tickets and looks up the others the same way:
// a second ticket of a key shows there, with its key's body.
func (r *run) finalLookups(w *workload, within time.Duration, tries int) {
	deadline := time.Now().Add(within)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	acked := map[string]bool{}
	var tickets []string
	for _, op := range r.h.Ops() {
		if (op.F == FSubmit || op.F == FRequest) && op.Type == OK && op.Ticket != "" && !acked[op.Ticket] {
			acked[op.Ticket] = true
			tickets = append(tickets, op.Ticket)
		}
	}
	r.lookAll(ctx, w, tickets, tries)
	var others []string
	after := ""
	for ctx.Err() == nil {
		page, err := r.probe.List(ctx, client.ListOptions{After: after, Limit: 1000})
		if err != nil {
			r.note("final list after %q: %v", after, err)
			break
		}
		for _, ti := range page {
			after = ti.Ticket
			if !acked[ti.Ticket] {
				others = append(others, ti.Ticket)
			}
		}
		if len(page) < 1000 {
			break
		}
	}
	r.lookAll(ctx, w, others, tries)
	if ctx.Err() != nil {
		r.note("final lookups: not all done within %s", within)
	}
}

// lookAll looks the tickets up with a few parallel raw clients.
func (r *run) lookAll(ctx context.Context, w *workload, tickets []string, tries int) {
	next := make(chan string)
	var wg sync.WaitGroup
	for i := range 6 {
		c := newRawClient(r.zctx.ZMQ(), w.eps, w.nodes, clientTimeout)
		c.Use(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			for tk := range next {
				look(ctx, w, c, tk, tries)
			}
		}()
	}
	for _, tk := range tickets {
		select {
		case next <- tk:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()
}

// look asks for one ticket's reply until it has one: a 200, a failed
// ticket, or three 400s; a pending ticket is asked again until ctx ends,
// other answers (500, none) at most tries times. Negative tries: at most
// -tries answers other than 200, pending ones included.
func look(ctx context.Context, w *workload, c *rawClient, ticket string, tries int) {
	unknown, other, strict := 0, 0, tries < 0
	if strict {
		tries = -tries
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		op := w.lookup(ctx, c, "final", ticket, true)
		switch {
		case op.Code == tsp.CodeOK, op.Code == tsp.CodeError && kindOf(op.Value) == tsp.Failed:
			return
		case op.Code == "400":
			if unknown++; unknown >= 3 {
				return
			}
		case op.Code != "300" || strict:
			if other++; other >= tries {
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

func (r *run) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// diag is the tail of every node's current log.
func (r *run) diag() string {
	var b strings.Builder
	for _, n := range r.nodes {
		state := "running"
		if !n.running() {
			state = "down"
		}
		fmt.Fprintf(&b, "\n--- %s (%s, %s) ---\n%s\n", n.name, n.host.Addr, state, n.tail())
	}
	return b.String()
}

// writeArtifacts writes the report, the history and the nodes' logs
// into dir.
func (r *run) writeArtifacts(dir, report string) {
	t := r.t
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("artifacts: %v", err)
		return
	}
	path := filepath.Join(dir, "jepsen-"+r.sc.Name+".txt")
	if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
		t.Errorf("artifacts: %v", err)
	}
	// The history and the nodes' logs are kept whatever the verdict: the
	// report names the slowest recoveries, and the probes' times in the
	// history and the logs say where the time went.
	r.writeHistory(filepath.Join(dir, "jepsen-"+r.sc.Name+"-history.txt"))
	for _, n := range r.nodes {
		n.mu.Lock()
		lives := n.lives
		n.mu.Unlock()
		for i, l := range lives {
			if data, err := os.ReadFile(l.proc.Log); err == nil {
				_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("jepsen-%s-%s-%d.log", r.sc.Name, n.name, i)), data, 0o644)
			}
		}
	}
}

// writeHistory writes the run's history to path.
func (r *run) writeHistory(path string) {
	f, err := os.Create(path)
	if err != nil {
		r.t.Errorf("artifacts: %v", err)
		return
	}
	defer f.Close()
	if err := r.h.Write(f); err != nil {
		r.t.Errorf("artifacts: %v", err)
	}
}

// newContext makes a ZeroMQ context whose connections are made from host
// (the test process's own namespace when nil), closed at cleanup.
func newContext(t *testing.T, host *netns.Host) *zsock.Context {
	t.Helper()
	// zsock.NewContext starts the context's I/O thread, which makes its
	// connections, on the calling thread: Host.Do runs it on a thread in
	// host's namespace.
	var zc *zsock.Context
	start := func() (err error) {
		zc, err = zsock.NewContext()
		return err
	}
	var err error
	if host == nil {
		err = start()
	} else {
		err = host.Do(start)
	}
	if err != nil {
		t.Fatalf("zmq context: %v", err)
	}
	t.Cleanup(func() {
		// Close waits for every socket of the context to be closed: a
		// client that did not stop would hang the test here.
		done := make(chan struct{})
		go func() { _ = zc.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(stopWithin):
			t.Errorf("zmq context not terminated within %s: a socket is still open", stopWithin)
		}
	})
	return zc
}

func waitGroup(t *testing.T, wg *sync.WaitGroup, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(stopWithin):
		t.Errorf("%s did not stop within %s", what, stopWithin)
	}
}

// kindOf is the refusal kind of an answer's text.
func kindOf(text string) tsp.Kind {
	k, _ := tsp.KindOf(text)
	return k
}
