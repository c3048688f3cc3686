package soak

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker/zsock"
	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/internal/netns"
	"github.com/titanicmq/titanic/worker"
)

// The shape of the load: as make bench's round trips, many clients
// submitting durable tickets one after another, fewer workers answering.
const (
	submitters = 64
	workers    = 8
	lookers    = 4
	service    = "soak.echo"
	// backlog bounds the tickets submitted but not yet run: submits wait
	// for a worker to free a credit, so that a run of any length ends with
	// a backlog the final check drains in seconds.
	backlog = 2000
	// ackWithin is how long one submit may keep failing (each try is the
	// client's default timeout and retries) before the run counts it as
	// not acknowledged.
	ackWithin = 60 * time.Second
)

// Lines of the brokers' logs (titanic/ha, binarystar, hashicorp/raft
// through slog) that the report counts.
var (
	logTime     = regexp.MustCompile(`^time=(\S+)`)
	bsChange    = regexp.MustCompile(`event=\S+ from=(\S+) to=(\S+)`)
	peerSilent  = regexp.MustCompile(`peer silent, considered dead`)
	servingOn   = regexp.MustCompile(`msg="serving:`)
	servingOff  = regexp.MustCompile(`msg="not serving:`)
	raftLeader  = regexp.MustCompile(`entering leader state`)
	raftElect   = regexp.MustCompile(`heartbeat timeout reached|entering candidate state|pre-vote`)
	raftTrouble = regexp.MustCompile(`failed to contact|failed to heartbeat|failed to appendEntries|lost leadership|stepping down`)
	// suppressed is how many lines like it a rate-limited line stands for
	// besides itself (raft's repeated warnings and errors).
	suppressed = regexp.MustCompile(`suppressed=(\d+)`)
)

const (
	servingLine  = "serving: binary star active and raft leader"
	caughtUpLine = "caught up with the active peer"
)

// TestSoakPair runs a Binary Star pair with its default timings under
// steady load for TITANIC_SOAK, with no fault injected, and fails if it
// failed over even once or lost an acknowledged ticket.
func TestSoakPair(t *testing.T) {
	spec := os.Getenv("TITANIC_SOAK")
	if spec == "" {
		t.Skip("the pair soak is long: run it with TITANIC_SOAK=10m (make soak), as root for network namespaces")
	}
	dur, err := time.ParseDuration(spec)
	if err != nil || dur <= 0 {
		t.Fatalf("TITANIC_SOAK=%q: want a duration such as 10m", spec)
	}
	// TITANIC_SOAK_STALL=3s freezes the active node (SIGSTOP) that long
	// halfway through: a fault, so the run must then count failovers and
	// fail. It shows that the counters see a failover; a soak sets no
	// stall.
	var stall time.Duration
	if v := os.Getenv("TITANIC_SOAK_STALL"); v != "" {
		if stall, err = time.ParseDuration(v); err != nil || stall <= 0 {
			t.Fatalf("TITANIC_SOAK_STALL=%q: want a duration such as 3s", v)
		}
	}
	netns.Require(t)

	// Hosts: the two pair nodes, and one host for the whole load.
	nw := netns.New(t)
	pa, pb, lc := nw.Host("pa"), nw.Host("pb"), nw.Host("lc")
	nodes := []*pairNode{
		{name: "pa", host: pa},
		{name: "pb", host: pb},
	}
	// Every setting is the default but the pair's role and peer: MDP
	// heartbeat 2.5s, raft timeout 1s, Binary Star heartbeat 500ms (peer
	// lost after 1s), log level info.
	nodes[0].proc = pa.Broker(t, "pa", t.TempDir(), "--pair", "primary", "--peer", pb.Addr)
	nodes[1].proc = pb.Broker(t, "pb", t.TempDir(), "--pair", "backup", "--peer", pa.Addr)
	eps := []string{pa.Endpoint(5555), pb.Endpoint(5555)}
	diag := func() string { return tails(nodes) }

	// One ZeroMQ context (I/O thread) per role on the load host, as make
	// bench shares one among its clients and one among its workers.
	cliZC, wrkZC, monZC := newContext(t, lc), newContext(t, lc), newContext(t, lc)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mon := newMonitor(t, monZC, nodes)
	active := mon.waitWhole(t, ctx, 60*time.Second, diag)
	t.Logf("pair whole: %s active in raft term %d", active.name, mon.term.Load())

	cliLog, wrkLog := newCounter(), newCounter()
	ld := &load{credit: make(chan struct{}, backlog), stop: make(chan struct{}), done: map[string]int{}}
	for range backlog {
		ld.credit <- struct{}{}
	}

	wctx, wcancel := context.WithCancel(ctx)
	var wwg sync.WaitGroup
	for range workers {
		w, err := worker.New(worker.Config{Brokers: eps, Service: service, Logger: slog.New(wrkLog), Context: wrkZC}, ld.handle)
		if err != nil {
			t.Fatalf("worker: %v", err)
		}
		wwg.Add(1)
		go func() { defer wwg.Done(); _ = w.Run(wctx) }()
	}
	defer func() { wcancel(); wwg.Wait() }()

	dial := func() *client.Client {
		cl, err := client.New(client.Config{Brokers: eps, Timeout: client.DefaultTimeout, Retries: client.DefaultRetries, Logger: slog.New(cliLog), Context: cliZC})
		if err != nil {
			t.Fatalf("client: %v", err)
		}
		t.Cleanup(func() { cl.Close() })
		ld.clients = append(ld.clients, cl)
		return cl
	}

	start := time.Now()
	loadAvg := &sampler{}
	loadAvg.sample()
	go mon.run(ctx)
	var swg, lwg sync.WaitGroup
	for i := range submitters {
		cl := dial()
		swg.Add(1)
		go func() { defer swg.Done(); ld.submitLoop(ctx, cl, i) }()
	}
	lstop := make(chan struct{})
	for i := range lookers {
		cl := dial()
		lwg.Add(1)
		go func() { defer lwg.Done(); ld.lookupLoop(ctx, cl, uint64(i), lstop) }()
	}

	// The run: sample the load average while it lasts.
	t.Logf("load running for %s (%d submitters, %d workers, %d lookup clients)", dur, submitters, workers, lookers)
	end := time.NewTimer(dur)
	tick := time.NewTicker(5 * time.Second)
	next := time.Now().Add(time.Minute)
	var freeze <-chan time.Time
	if stall > 0 {
		freeze = time.After(dur / 2)
	}
	fault := ""
run:
	for {
		select {
		case <-end.C:
			break run
		case <-freeze:
			fault = fmt.Sprintf("FAULT INJECTED (TITANIC_SOAK_STALL): %s frozen (SIGSTOP) for %s at %s", active.name, stall, time.Since(start).Round(time.Second))
			t.Log(fault)
			if err := active.proc.Signal(syscall.SIGSTOP); err != nil {
				t.Fatalf("SIGSTOP %s: %v", active.name, err)
			}
			select {
			case <-time.After(stall):
			case <-end.C:
				end.Reset(0)
			}
			if err := active.proc.Signal(syscall.SIGCONT); err != nil {
				t.Fatalf("SIGCONT %s: %v", active.name, err)
			}
		case <-tick.C:
			loadAvg.sample()
			if time.Now().After(next) {
				next = next.Add(time.Minute)
				t.Logf("%s: %d acks, %d jobs, load %.2f", time.Since(start).Round(time.Second), ld.ackCount(), ld.jobs.Load(), loadAvg.last())
			}
		}
	}
	tick.Stop()
	close(ld.stop)
	close(lstop)
	if !waitFor(&swg, 2*ackWithin) {
		t.Fatalf("submitters did not stop within %s%s", 2*ackWithin, diag())
	}
	ran := time.Since(start)
	lwg.Wait()
	loadAvg.sample()

	// The invariant: every acknowledged ticket is stored and answered with
	// its own reply, none lost.
	check := ld.checkAll(ctx, t, eps, cliZC)
	wcancel()
	wwg.Wait()
	mon.stop()
	ev := readEvents(nodes, start)

	r := report{
		dur: ran, ld: ld, check: check, mon: mon, ev: ev, load: loadAvg,
		cli: cliLog.snapshot(), wrk: wrkLog.snapshot(), initial: active.name, fault: fault,
	}
	for _, c := range ld.clients {
		s := c.Stats()
		r.stats.Calls += s.Calls
		r.stats.Retries += s.Retries
		r.stats.Failovers += s.Failovers
		r.stats.Refusals += s.Refusals
		r.stats.Stale += s.Stale
	}
	text := r.String()
	t.Log("\n" + text)
	if dir := os.Getenv("TITANIC_ARTIFACTS"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err == nil {
			err = os.WriteFile(filepath.Join(dir, "soak-pair.txt"), []byte(text), 0o644)
			if err != nil {
				t.Errorf("report: %v", err)
			}
		}
	}
	for _, f := range r.failures() {
		t.Error(f)
	}
}

// --- the pair -----------------------------------------------------------

type pairNode struct {
	name string
	host *netns.Host
	proc *netns.Process
}

func tails(nodes []*pairNode) string {
	var b strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&b, "\n--- %s (%s) ---\n%s\n", n.name, n.host.Addr, n.proc.Tail())
	}
	return b.String()
}

// status is a node's answer to titanic.cluster.
type status struct {
	ID, State, Leader string
	Term              uint64
	Voters            int
}

// monitor asks both nodes for their raft state every second, and counts
// every change of leader or term after the first whole observation.
type monitor struct {
	nodes   []*pairNode
	clients []*client.Client
	term    atomic.Uint64

	mu       sync.Mutex
	leader   string   // the leader seen when the pair was whole
	changes  []string // leader or term changes seen since, with their time
	terms    []uint64 // every term seen, in order
	polls    int
	misses   []string // a node that did not answer within the client's timeout
	quit     chan struct{}
	finished chan struct{}
}

func newMonitor(t *testing.T, zc *zsock.Context, nodes []*pairNode) *monitor {
	m := &monitor{nodes: nodes, quit: make(chan struct{}), finished: make(chan struct{})}
	for _, n := range nodes {
		// Direct: admin calls to this node whatever its role.
		cl, err := client.New(client.Config{Brokers: []string{n.host.Endpoint(5555)}, Timeout: time.Second, Retries: 1, Logger: slog.New(slog.DiscardHandler), Context: zc, Direct: true})
		if err != nil {
			t.Fatalf("monitor client: %v", err)
		}
		t.Cleanup(func() { cl.Close() })
		m.clients = append(m.clients, cl)
	}
	return m
}

func (m *monitor) status(ctx context.Context, i int) (status, error) {
	rep, err := m.clients[i].Request(ctx, "titanic.cluster", [][]byte{{}})
	if err != nil {
		return status{}, err
	}
	if len(rep) == 0 || string(rep[0]) != "200" {
		return status{}, fmt.Errorf("titanic.cluster answered %q", rep)
	}
	var st status
	for _, f := range rep[1:] {
		k, v, _ := strings.Cut(string(f), "=")
		switch k {
		case "id":
			st.ID = v
		case "state":
			st.State = v
		case "leader":
			st.Leader = v
		case "term":
			st.Term, _ = strconv.ParseUint(v, 10, 64)
		case "member":
			if strings.HasSuffix(v, ",voter") {
				st.Voters++
			}
		}
	}
	return st, nil
}

// waitWhole waits until one node leads raft with both as voters and
// serves, and the other follows it and has caught up; it returns the
// leader and records its term and ID as the baseline.
func (m *monitor) waitWhole(t *testing.T, ctx context.Context, within time.Duration, diag func() string) *pairNode {
	t.Helper()
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		lead, err := m.whole(ctx)
		if err == nil {
			return lead
		}
		last = err
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	t.Fatalf("pair not whole within %s: %v%s", within, last, diag())
	return nil
}

func (m *monitor) whole(ctx context.Context) (*pairNode, error) {
	var sts [2]status
	for i := range m.nodes {
		st, err := m.status(ctx, i)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.nodes[i].name, err)
		}
		sts[i] = st
	}
	li := slices.IndexFunc(sts[:], func(s status) bool { return s.State == "Leader" })
	if li < 0 {
		return nil, fmt.Errorf("no raft leader (%s, %s)", sts[0].State, sts[1].State)
	}
	fi := 1 - li
	switch {
	case sts[li].Voters != 2:
		return nil, fmt.Errorf("leader %s has %d voters", sts[li].ID, sts[li].Voters)
	case sts[fi].State != "Follower" || sts[fi].Leader != sts[li].ID:
		return nil, fmt.Errorf("%s is %s following %q", sts[fi].ID, sts[fi].State, sts[fi].Leader)
	case !strings.Contains(readFile(m.nodes[li].proc.Log), servingLine):
		return nil, fmt.Errorf("%s leads raft but does not serve yet", m.nodes[li].name)
	case !strings.Contains(readFile(m.nodes[fi].proc.Log), caughtUpLine):
		return nil, fmt.Errorf("%s has not caught up yet", m.nodes[fi].name)
	}
	m.mu.Lock()
	m.leader = sts[li].ID
	m.terms = []uint64{sts[li].Term}
	m.mu.Unlock()
	m.term.Store(sts[li].Term)
	return m.nodes[li], nil
}

// run polls both nodes every second until stop.
func (m *monitor) run(ctx context.Context) {
	defer close(m.finished)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-m.quit:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for i, n := range m.nodes {
			st, err := m.status(ctx, i)
			m.mu.Lock()
			m.polls++
			now := time.Now().Format("15:04:05.000")
			switch {
			case err != nil:
				m.misses = append(m.misses, fmt.Sprintf("%s %s: %v", now, n.name, err))
			default:
				leader := st.Leader
				if st.State == "Leader" {
					leader = st.ID
				}
				if leader != "" && leader != m.leader {
					m.changes = append(m.changes, fmt.Sprintf("%s %s: raft leader %s -> %s (term %d)", now, n.name, m.leader, leader, st.Term))
					m.leader = leader
				}
				// Term 0: a node reforming its raft has none to say.
				if st.Term != 0 && st.Term != m.terms[len(m.terms)-1] {
					m.changes = append(m.changes, fmt.Sprintf("%s %s: raft term %d -> %d (%s)", now, n.name, m.terms[len(m.terms)-1], st.Term, st.State))
					m.terms = append(m.terms, st.Term)
				}
			}
			m.mu.Unlock()
		}
	}
}

func (m *monitor) stop() {
	close(m.quit)
	<-m.finished
}

// --- the load -----------------------------------------------------------

type ack struct {
	key, body, ticket string
}

type load struct {
	credit  chan struct{}
	stop    chan struct{}
	clients []*client.Client

	mu        sync.Mutex
	acks      []ack
	lat       []time.Duration // per acknowledged submit, from its first try
	submitErr map[string]int  // errors of tries that were retried, by kind
	lost      []string        // submits not acknowledged within ackWithin
	done      map[string]int  // times each body ran
	lookups   map[string]int  // lookup outcomes
	unknown   []string        // acknowledged tickets a lookup called unknown (400)

	jobs atomic.Int64 // jobs run (counting reruns)
}

func (l *load) ackCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acks)
}

// handle is the echo workers' handler: it answers "echo:<body>" and frees
// a credit for the next submit.
func (l *load) handle(_ context.Context, req [][]byte) ([][]byte, error) {
	body := bytes.Join(req, nil)
	l.mu.Lock()
	l.done[string(body)]++
	l.mu.Unlock()
	l.jobs.Add(1)
	select {
	case l.credit <- struct{}{}:
	default:
	}
	return [][]byte{append([]byte("echo:"), body...)}, nil
}

func (l *load) count(m *map[string]int, k string) {
	l.mu.Lock()
	if *m == nil {
		*m = map[string]int{}
	}
	(*m)[k]++
	l.mu.Unlock()
}

// submitLoop submits tickets with keys "s<i>-<n>" one after another until
// stop, each with the same key until it is acknowledged; a submit started
// is always finished (acknowledged or given up), so no ticket is stored
// unacknowledged when the run stops.
func (l *load) submitLoop(ctx context.Context, cl *client.Client, i int) {
	for n := 0; ; n++ {
		select {
		case <-l.stop:
			return
		default:
		}
		select {
		case <-l.stop:
			return
		case <-l.credit:
		}
		key := fmt.Sprintf("s%d-%d", i, n)
		body := "soak " + key
		first := time.Now()
		for {
			tk, err := cl.Submit(ctx, service, [][]byte{[]byte(body)}, client.SubmitOptions{IdemKey: key})
			if err == nil {
				took := time.Since(first)
				l.mu.Lock()
				l.acks = append(l.acks, ack{key: key, body: body, ticket: tk})
				l.lat = append(l.lat, took)
				l.mu.Unlock()
				break
			}
			if ctx.Err() != nil {
				return
			}
			l.count(&l.submitErr, errKind(err))
			if time.Since(first) > ackWithin {
				l.mu.Lock()
				l.lost = append(l.lost, fmt.Sprintf("submit %s not acknowledged within %s: %v", key, ackWithin, err))
				l.mu.Unlock()
				return
			}
			if errors.Is(err, client.ErrServer) {
				// The broker answered at once (busy, not ready): pace.
				select {
				case <-time.After(20 * time.Millisecond):
				case <-ctx.Done():
					return
				}
			}
		}
	}
}

// lookupLoop looks up random acknowledged tickets until stop: each must be
// answered (its own reply) or pending, never unknown.
func (l *load) lookupLoop(ctx context.Context, cl *client.Client, seed uint64, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(seed, 7))
	for {
		select {
		case <-stop:
			return
		default:
		}
		l.mu.Lock()
		var a ack
		ok := len(l.acks) > 0
		if ok {
			a = l.acks[rng.IntN(len(l.acks))]
		}
		l.mu.Unlock()
		if !ok {
			select {
			case <-time.After(10 * time.Millisecond):
			case <-stop:
				return
			}
			continue
		}
		rep, err := cl.Reply(ctx, a.ticket, client.ReplyOptions{})
		switch {
		case err == nil && string(bytes.Join(rep, nil)) == "echo:"+a.body:
			l.count(&l.lookups, "200 answered")
		case err == nil:
			l.count(&l.lookups, "200 with a wrong reply")
			l.mu.Lock()
			l.unknown = append(l.unknown, fmt.Sprintf("%s (key %s) answered %q", a.ticket, a.key, rep))
			l.mu.Unlock()
		case errors.Is(err, client.ErrPending):
			l.count(&l.lookups, "300 pending")
		case errors.Is(err, client.ErrUnknown):
			l.count(&l.lookups, "400 unknown")
			l.mu.Lock()
			l.unknown = append(l.unknown, fmt.Sprintf("%s (key %s) answered 400 while acknowledged", a.ticket, a.key))
			l.mu.Unlock()
		default:
			l.count(&l.lookups, "error: "+errKind(err))
		}
	}
}

func errKind(err error) string {
	for _, e := range []error{client.ErrUnavailable, client.ErrServer, client.ErrUnknown, client.ErrPending, client.ErrClosed, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return err.Error()
}

// final is the outcome of the end-of-run check.
type final struct {
	checked, answered, stored int
	took                      time.Duration
	problems                  []string // lost or wrongly answered tickets, the first few
	extra                     int      // stored tickets never acknowledged
}

// checkAll looks up every acknowledged ticket until it is answered (up to
// five minutes in all, or a millisecond a ticket) and checks its reply, then lists the store: every
// acknowledged ticket must be there, and nothing else.
func (l *load) checkAll(ctx context.Context, t *testing.T, eps []string, zc *zsock.Context) final {
	t.Helper()
	began := time.Now()
	l.mu.Lock()
	acks := slices.Clone(l.acks)
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, max(5*time.Minute, time.Duration(len(acks))*time.Millisecond))
	defer cancel()
	var (
		f    final
		mu   sync.Mutex
		next atomic.Int64
		wg   sync.WaitGroup
	)
	note := func(s string) {
		mu.Lock()
		if len(f.problems) < 20 {
			f.problems = append(f.problems, s)
		}
		mu.Unlock()
	}
	for range 16 {
		cl, err := client.New(client.Config{Brokers: eps, Logger: slog.New(slog.DiscardHandler), Context: zc})
		if err != nil {
			t.Fatalf("client: %v", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.Close()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(acks) {
					return
				}
				a := acks[i]
				rep, err := cl.Reply(ctx, a.ticket, client.ReplyOptions{Wait: true, PollInterval: 100 * time.Millisecond})
				mu.Lock()
				f.checked++
				mu.Unlock()
				switch {
				case err != nil:
					note(fmt.Sprintf("LOST: acknowledged ticket %s (key %s) not answered: %v", a.ticket, a.key, err))
				case string(bytes.Join(rep, nil)) != "echo:"+a.body:
					note(fmt.Sprintf("ticket %s (key %s) answered %q, want %q", a.ticket, a.key, rep, "echo:"+a.body))
				default:
					mu.Lock()
					f.answered++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()

	cl, err := client.New(client.Config{Brokers: eps, Logger: slog.New(slog.DiscardHandler), Context: zc})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer cl.Close()
	byTicket := make(map[string]bool, len(acks))
	for _, a := range acks {
		byTicket[a.ticket] = true
	}
	stored := map[string]bool{}
	after := ""
	for {
		page, err := cl.List(ctx, client.ListOptions{After: after, Limit: 1000})
		if err != nil {
			note(fmt.Sprintf("list after %q: %v", after, err))
			break
		}
		for _, ti := range page {
			stored[ti.Ticket] = true
			after = ti.Ticket
			if !byTicket[ti.Ticket] {
				f.extra++
			}
		}
		if len(page) < 1000 {
			break
		}
	}
	f.stored = len(stored)
	for _, a := range acks {
		if !stored[a.ticket] {
			note(fmt.Sprintf("LOST: acknowledged ticket %s (key %s) is not listed", a.ticket, a.key))
		}
	}
	f.took = time.Since(began)
	return f
}

// --- logs ---------------------------------------------------------------

// events is what the brokers' logs say happened after the load started.
type events struct {
	bsChanges, toActive, peerSilent, servingOn, servingOff int
	raftLeader, raftElect, raftTrouble                     int
	lines                                                  []string // the lines counted, the first 80
}

func readEvents(nodes []*pairNode, since time.Time) events {
	var ev events
	for _, n := range nodes {
		harness.ForEachLine(n.proc.Log, func(line string) {
			m := logTime.FindStringSubmatch(line)
			if m == nil {
				return
			}
			at, err := time.Parse(time.RFC3339Nano, m[1])
			if err != nil || at.Before(since) {
				return
			}
			hit := true
			if c := bsChange.FindStringSubmatch(line); c != nil {
				ev.bsChanges++
				if c[2] == "ACTIVE" {
					ev.toActive++
				}
			} else {
				switch {
				case peerSilent.MatchString(line):
					ev.peerSilent++
				case servingOn.MatchString(line):
					ev.servingOn++
				case servingOff.MatchString(line):
					ev.servingOff++
				case raftLeader.MatchString(line):
					ev.raftLeader++
				case raftElect.MatchString(line):
					ev.raftElect++
				case raftTrouble.MatchString(line):
					ev.raftTrouble++
					if m := suppressed.FindStringSubmatch(line); m != nil {
						n, _ := strconv.Atoi(m[1])
						ev.raftTrouble += n
					}
				default:
					hit = false
				}
			}
			if hit && len(ev.lines) < 80 {
				ev.lines = append(ev.lines, n.name+": "+line)
			}
		})
	}
	return ev
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// --- in-process logs ----------------------------------------------------

// counter is a slog handler that counts the records of the clients or the
// workers by message (info and above), keeping the first few.
type counter struct {
	mu    sync.Mutex
	n     map[string]int
	first []string
}

func newCounter() *counter { return &counter{n: map[string]int{}} }

func (c *counter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (c *counter) WithAttrs([]slog.Attr) slog.Handler           { return c }
func (c *counter) WithGroup(string) slog.Handler                { return c }
func (c *counter) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[r.Message]++
	if len(c.first) < 20 {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s %s", r.Time.Format("15:04:05.000"), r.Level, r.Message)
		r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s", a); return true })
		c.first = append(c.first, b.String())
	}
	return nil
}

type counts struct {
	n     map[string]int
	first []string
}

func (c *counter) snapshot() counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := make(map[string]int, len(c.n))
	for k, v := range c.n {
		n[k] = v
	}
	return counts{n: n, first: slices.Clone(c.first)}
}

// --- load average -------------------------------------------------------

// sampler keeps the 1-minute load average, sampled during the run.
type sampler struct{ xs []float64 }

func (s *sampler) sample() {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return
	}
	if x, err := strconv.ParseFloat(f[0], 64); err == nil {
		s.xs = append(s.xs, x)
	}
}

func (s *sampler) last() float64 {
	if len(s.xs) == 0 {
		return 0
	}
	return s.xs[len(s.xs)-1]
}

func (s *sampler) String() string {
	if len(s.xs) == 0 {
		return "unknown"
	}
	sum := 0.0
	for _, x := range s.xs {
		sum += x
	}
	return fmt.Sprintf("1-min load average min %.2f / mean %.2f / max %.2f (%d samples) on %d CPUs",
		slices.Min(s.xs), sum/float64(len(s.xs)), slices.Max(s.xs), len(s.xs), runtime.NumCPU())
}

// --- the report ---------------------------------------------------------

type report struct {
	dur     time.Duration
	ld      *load
	check   final
	mon     *monitor
	ev      events
	load    *sampler
	cli     counts
	wrk     counts
	stats   client.Stats
	initial string
	fault   string // the stall injected, if any
}

func (r *report) String() string {
	l := r.ld
	l.mu.Lock()
	acks, lat, lost := len(l.acks), slices.Clone(l.lat), slices.Clone(l.lost)
	jobs, distinct, reruns := int(l.jobs.Load()), len(l.done), 0
	for _, n := range l.done {
		reruns += n - 1
	}
	subErr, lookups, unknown := l.submitErr, l.lookups, slices.Clone(l.unknown)
	l.mu.Unlock()
	r.mon.mu.Lock()
	changes, terms, polls, misses := slices.Clone(r.mon.changes), slices.Clone(r.mon.terms), r.mon.polls, slices.Clone(r.mon.misses)
	r.mon.mu.Unlock()

	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	secs := r.dur.Seconds()
	p("Binary Star pair soak: real titanic binary, primary pa and backup pb on two network-namespace hosts,")
	p("load from a third host; every broker setting the default (pair heartbeat 500ms, raft timeout 1s,")
	p("MDP heartbeat 2.5s); clients with the default timeout (%s) and retries (%d).", client.DefaultTimeout, client.DefaultRetries)
	if r.fault != "" {
		p("%s", r.fault)
	}
	p("load: %d submitters (durable, keyed, one at a time, at most %d tickets unrun), %d echo workers, %d lookup clients", submitters, backlog, workers, lookers)
	p("machine: %s", r.load)
	p("")
	p("duration                 %s", r.dur.Round(time.Second))
	p("submits acknowledged     %d (%.0f/s)", acks, float64(acks)/secs)
	p("jobs done                %d distinct (%.0f/s), %d reruns", distinct, float64(distinct)/secs, reruns)
	p("jobs run in all          %d", jobs)
	p("submit latency           p50 %s, p99 %s, max %s (from the first try to the ack)", pct(lat, 50), pct(lat, 99), pct(lat, 100))
	p("submit tries failed      %v (retried with the same key)", mapString(subErr))
	p("submits never acked      %d", len(lost))
	p("lookups during the run   %v", mapString(lookups))
	p("")
	if r.fault == "" {
		p("false failovers (no fault was injected, so each is one):")
	} else {
		p("failovers (a fault was injected: these are expected, not false):")
	}
	p("  binary star state changes after the start   %d (to ACTIVE: %d); peer-silent warnings %d", r.ev.bsChanges, r.ev.toActive, r.ev.peerSilent)
	p("  serving lines after the start                %d serving, %d not serving (initial active: %s)", r.ev.servingOn, r.ev.servingOff, r.initial)
	p("  raft leader / term changes (polled 1/s)      %d (terms seen %v, %d polls, %d unanswered)", len(changes), terms, polls, len(misses))
	p("  raft log: leader entries %d, elections %d, contact failures %d", r.ev.raftLeader, r.ev.raftElect, r.ev.raftTrouble)
	p("  client Stats().Failovers                     %d (calls %d, retries %d, refusals %d, stale %d)", r.stats.Failovers, r.stats.Calls, r.stats.Retries, r.stats.Refusals, r.stats.Stale)
	p("  client \"failing over\" log lines              %d", r.cli.n["failing over"])
	p("  worker logs (\"lost broker\" would be one)   %v", mapString(r.wrk.n))
	p("")
	p("invariant at the end: %d acknowledged tickets looked up, %d answered with their own reply, %d stored, %d stored but never acknowledged (%s)",
		r.check.checked, r.check.answered, r.check.stored, r.check.extra, r.check.took.Round(time.Millisecond))
	for _, s := range r.check.problems {
		p("  %s", s)
	}
	for _, s := range unknown {
		p("  during the run: %s", s)
	}
	for _, s := range lost {
		p("  %s", s)
	}
	if len(changes) > 0 {
		p("raft changes seen:")
		for _, s := range changes {
			p("  %s", s)
		}
	}
	if len(misses) > 0 {
		p("status polls unanswered (first 10):")
		for _, s := range misses[:min(10, len(misses))] {
			p("  %s", s)
		}
	}
	if len(r.cli.first) > 0 {
		p("client log lines (first %d):", len(r.cli.first))
		for _, s := range r.cli.first {
			p("  %s", s)
		}
	}
	if len(r.ev.lines) > 0 {
		p("broker log lines counted above (first %d):", len(r.ev.lines))
		for _, s := range r.ev.lines {
			p("  %s", s)
		}
	}
	p("")
	if f := r.failures(); len(f) > 0 {
		p("FAIL: %s", strings.Join(f, "; "))
	} else {
		p("PASS: no failover, nothing lost")
	}
	return b.String()
}

// failures are the reasons the run fails.
func (r *report) failures() []string {
	var out []string
	add := func(n int, what string) {
		if n > 0 {
			out = append(out, fmt.Sprintf("%d %s", n, what))
		}
	}
	r.ld.mu.Lock()
	add(len(r.ld.lost), "submits never acknowledged")
	add(len(r.ld.unknown), "acknowledged tickets answered 400 or wrongly during the run")
	acks := len(r.ld.acks)
	r.ld.mu.Unlock()
	add(len(r.check.problems), "acknowledged tickets lost or wrongly answered at the end (first 20 listed)")
	add(acks-r.check.answered, "acknowledged tickets not answered at the end")
	add(r.check.extra, "stored tickets never acknowledged")
	add(r.ev.bsChanges, "binary star state changes")
	add(r.ev.servingOn+r.ev.servingOff, "serving changes")
	r.mon.mu.Lock()
	add(len(r.mon.changes), "raft leader or term changes")
	r.mon.mu.Unlock()
	add(r.ev.raftLeader, "raft leader elections in the logs")
	add(int(r.stats.Failovers), "client failovers")
	add(r.cli.n["failing over"], "client \"failing over\" log lines")
	if acks == 0 {
		out = append(out, "no submit was acknowledged")
	}
	return out
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(i, len(s)-1))].Round(10 * time.Microsecond)
}

func mapString(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%q: %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// --- helpers ------------------------------------------------------------

// newContext makes a ZeroMQ context whose connections are made from host,
// closed at cleanup (after the clients made on it: cleanups run last
// first).
func newContext(t *testing.T, host *netns.Host) *zsock.Context {
	t.Helper()
	// The context's I/O thread, which makes its connections, starts on
	// the calling thread: Host.Do runs it in the host's namespace.
	var zc *zsock.Context
	if err := host.Do(func() (err error) { zc, err = zsock.NewContext(); return err }); err != nil {
		t.Fatalf("zmq context: %v", err)
	}
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() { _ = zc.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("zmq context not terminated within 30s: a socket is still open")
		}
	})
	return zc
}

func waitFor(wg *sync.WaitGroup, within time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(within):
		return false
	}
}
