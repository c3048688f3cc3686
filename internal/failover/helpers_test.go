package failover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/netns"
	"github.com/titanicmq/titanic/worker"
)

// Timing shared by every broker of these tests: MDP heartbeats every
// 200ms, raft heartbeat/election timeout 300ms, Binary Star heartbeat
// 200ms (the peer is lost after 400ms).
var fastFlags = []string{"--heartbeat", "200ms", "--raft-timeout", "300ms", "--log-level", "debug"}

// clientTimeout is the clients' per-try timeout. Binary Star wants clients
// to wait longer than the peer timeout (400ms) before they turn to the
// other broker, or their vote comes too early and is refused.
const clientTimeout = 500 * time.Millisecond

// quiet drops the in-process clients' and workers' logs (failovers are
// expected here); the brokers' logs are in their files.
var quiet = slog.New(slog.DiscardHandler)

// --- brokers ----------------------------------------------------------------

// node is one broker host and every process that ran on it (one per
// start), so that the logs of all its lives can be read at the end.
type node struct {
	name  string
	host  *netns.Host
	dir   string
	args  []string
	procs []*netns.Process
	// restores are the first life after each restore of a backup
	// (backupRestore): a restore starts a new raft history, whose terms
	// count from 1 again.
	restores []int
}

func newNode(n *netns.Net, name string, t *testing.T) *node {
	return &node{name: name, host: n.Host(name), dir: t.TempDir()}
}

// endpoint is the broker's client endpoint.
func (n *node) endpoint() string { return n.host.Endpoint(5555) }

// start runs the broker (again) with n.args and waits until it is ready.
func (n *node) start(t *testing.T) {
	t.Helper()
	name := fmt.Sprintf("%s-%d", n.name, len(n.procs))
	n.procs = append(n.procs, n.host.Broker(t, name, n.dir, n.args...))
}

// proc is the broker process of the current (or last) life.
func (n *node) proc() *netns.Process { return n.procs[len(n.procs)-1] }

// running reports whether the current process is alive.
func (n *node) running() bool { return len(n.procs) > 0 && !n.proc().Exited() }

// kill SIGKILLs the current process and waits for it.
func (n *node) kill() { n.proc().Kill() }

// logs returns the output of every life of the node, oldest first.
func (n *node) logs() string {
	var b strings.Builder
	for i, p := range n.procs {
		data, err := os.ReadFile(p.Log)
		if err != nil {
			fmt.Fprintf(&b, "[%s life %d: %v]\n", n.name, i, err)
			continue
		}
		b.Write(data)
	}
	return b.String()
}

// diag is the tail of every node's current log, for failure messages.
func diag(nodes ...*node) string {
	var b strings.Builder
	for _, n := range nodes {
		if len(n.procs) == 0 {
			continue
		}
		state := "running"
		if n.proc().Exited() {
			state = "exited"
		}
		fmt.Fprintf(&b, "\n--- %s (%s, %s) ---\n%s\n", n.name, n.host.Addr, state, n.proc().Tail())
	}
	return b.String()
}

func endpoints(nodes ...*node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.endpoint()
	}
	return out
}

// serving is one start of serving logged by a node ("serving: ...
// term=N"): in which raft history (a restore starts a new one:
// node.restores), which term, whether the node led that term alone (its
// fenced term as the only voter of its raft), when, and when the node
// next moved its raft state aside (zero if it did not).
type serving struct {
	history  int
	term     uint64
	solo     bool
	node     string
	at, left time.Time
}

// servings reads, from every life of every node, the lines a broker logs
// when it starts to serve, and when it moves its raft state aside
// (replica.Node.Resync: "raft state moved aside; rejoining as a new
// member"), and the term fenced for a raft it is the only voter of
// ("only voter of its raft: its next term is fenced ... term=N").
//
// A node of a pair that yields after a split brain hands its fork over
// and then moves its raft state aside: the terms it served in that fork
// end there, in a raft nobody runs any more, and it rejoins its peer's
// raft as a new member with no term of its own. The peer's raft may then
// reach the same term number by an election of the two (the solo terms
// are fenced apart, primary odd and backup even, an election of two is
// not): pa served term 4 of its raft at 21:03:09.024 after pb, which had
// served term 4 alone, had moved that raft aside at 21:03:07.414
// (TestPairPausedActiveAnswersQueuedSubmits).
func servings(nodes ...*node) []serving {
	serve := regexp.MustCompile(`^time=(\S+) .*msg="serving: [^"]*".* term=(\d+)`)
	aside := regexp.MustCompile(`^time=(\S+) .*msg="raft state moved aside; rejoining as a new member"`)
	fenced := regexp.MustCompile(`msg="only voter of its raft: its next term is fenced".* term=(\d+)`)
	var out []serving
	for _, n := range nodes {
		open := len(out)    // this node's servings not yet followed by a move aside
		var soloTerm uint64 // the term fenced for this node's solo raft, if it runs one
		for life, p := range n.procs {
			h := 0
			for _, r := range n.restores {
				if life >= r {
					h++
				}
			}
			data, _ := os.ReadFile(p.Log)
			for line := range strings.Lines(string(data)) {
				if m := aside.FindStringSubmatch(line); m != nil {
					at, _ := time.Parse(time.RFC3339Nano, m[1])
					for i := open; i < len(out); i++ {
						out[i].left = at
					}
					open, soloTerm = len(out), 0
					continue
				}
				if m := fenced.FindStringSubmatch(line); m != nil {
					soloTerm, _ = strconv.ParseUint(m[1], 10, 64)
					continue
				}
				m := serve.FindStringSubmatch(line)
				if m == nil {
					continue
				}
				at, _ := time.Parse(time.RFC3339Nano, m[1])
				term, _ := strconv.ParseUint(m[2], 10, 64)
				out = append(out, serving{history: h, term: term, solo: term == soloTerm, node: n.name, at: at})
			}
		}
	}
	return out
}

// sameRaft reports whether two servings of one term number by two nodes
// can be of one raft: neither led it alone in a raft it had moved aside
// before the other started to serve it. A term led in a raft of several
// stays one raft's: a member that moved its raft state aside does not
// make a later leader of the same term in that raft any less of a split
// brain.
func sameRaft(a, b serving) bool {
	gone := func(x, y serving) bool { return x.solo && !x.left.IsZero() && !y.at.IsZero() && x.left.Before(y.at) }
	return !gone(a, b) && !gone(b, a)
}

// servingTerms returns, per raft history (a restore starts a new one:
// node.restores), oldest first, the nodes that served in each term.
func servingTerms(nodes ...*node) []map[uint64][]string {
	var out []map[uint64][]string
	for _, s := range servings(nodes...) {
		for len(out) <= s.history {
			out = append(out, map[uint64][]string{})
		}
		if !slices.Contains(out[s.history][s.term], s.node) {
			out[s.history][s.term] = append(out[s.history][s.term], s.node)
		}
	}
	return out
}

// splitBrains returns a message for every term two nodes logged that
// they served in one raft (of one raft history, and neither in a raft it
// had moved aside before the other served: see servings).
func splitBrains(nodes ...*node) []string {
	ss := servings(nodes...)
	split := map[[2]uint64][]string{} // (history, term) -> nodes
	var keys [][2]uint64
	for i, a := range ss {
		for _, b := range ss[i+1:] {
			if a.node == b.node || a.history != b.history || a.term != b.term || !sameRaft(a, b) {
				continue
			}
			k := [2]uint64{uint64(a.history), a.term}
			if _, ok := split[k]; !ok {
				keys = append(keys, k)
			}
			for _, who := range []string{a.node, b.node} {
				if !slices.Contains(split[k], who) {
					split[k] = append(split[k], who)
				}
			}
		}
	}
	var out []string
	for _, k := range keys {
		after := ""
		if k[0] > 0 {
			after = fmt.Sprintf(" (of the raft history begun by restore %d)", k[0])
		}
		out = append(out, fmt.Sprintf("split brain: nodes %v all served in raft term %d%s", split[k], k[1], after))
	}
	return out
}

// checkOneServerPerTerm fails the test when two nodes served in one term
// of one raft (splitBrains), and returns the terms served in the last
// raft history.
func checkOneServerPerTerm(t *testing.T, nodes ...*node) map[uint64][]string {
	t.Helper()
	for _, msg := range splitBrains(nodes...) {
		t.Error(msg)
	}
	histories := servingTerms(nodes...)
	if len(histories) == 0 {
		return map[uint64][]string{}
	}
	return histories[len(histories)-1]
}

// --- cluster status ---------------------------------------------------------

// status is a node's answer to titanic.cluster.
type status struct {
	ID, Endpoint, State, Leader string
	Term, Last, Commit, Applied uint64
	Members                     []string // "id,addr,voter|nonvoter"
}

func (s status) voters() []string {
	var out []string
	for _, m := range s.Members {
		f := strings.Split(m, ",")
		if len(f) == 3 && f[2] == "voter" {
			out = append(out, f[0])
		}
	}
	slices.Sort(out)
	return out
}

// clusterStatus asks one broker for titanic.cluster, with one short try.
// statusOf is clusterStatus of a node that is up, asked until it answers
// (one ask of 300 ms can go unanswered on a loaded machine).
func statusOf(t *testing.T, ctx context.Context, n *node, dg func() string) status {
	t.Helper()
	var st status
	eventually(t, 10*time.Second, "titanic.cluster answered by "+n.name, func() error {
		var err error
		st, err = clusterStatus(ctx, n.endpoint())
		return err
	}, dg)
	return st
}

func clusterStatus(ctx context.Context, endpoint string) (status, error) {
	c, err := client.New(client.Config{Brokers: []string{endpoint}, Timeout: 300 * time.Millisecond, Retries: 1, Logger: quiet})
	if err != nil {
		return status{}, err
	}
	defer c.Close()
	rep, err := c.Request(ctx, "titanic.cluster", [][]byte{{}})
	if err != nil {
		return status{}, err
	}
	if len(rep) == 0 || string(rep[0]) != "200" {
		return status{}, fmt.Errorf("titanic.cluster answered %q", rep)
	}
	var st status
	num := func(v string) uint64 { x, _ := strconv.ParseUint(v, 10, 64); return x }
	for _, f := range rep[1:] {
		k, v, _ := strings.Cut(string(f), "=")
		switch k {
		case "id":
			st.ID = v
		case "endpoint":
			st.Endpoint = v
		case "state":
			st.State = v
		case "leader":
			st.Leader = v
		case "term":
			st.Term = num(v)
		case "last":
			st.Last = num(v)
		case "commit":
			st.Commit = num(v)
		case "applied":
			st.Applied = num(v)
		case "member":
			st.Members = append(st.Members, v)
		}
	}
	return st, nil
}

// eventually calls f every 50ms until it returns nil or within passes,
// then fails the test with what f last said.
func eventually(t *testing.T, within time.Duration, what string, f func() error, diagf func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v%s", what, within, err, diagf())
		}
		<-tick.C
	}
}

// --- load -------------------------------------------------------------------

// ack is a submit a broker acknowledged.
type ack struct {
	key, body, ticket string
	at                time.Time
}

// load runs keyed submitters: each retries the same idempotency key until
// it is acknowledged, across failovers, so every ticket in the store has
// an ack, and a key that made two tickets shows up as an extra ticket.
type load struct {
	mu      sync.Mutex
	acks    []ack
	changed chan struct{} // closed and replaced at each ack
	errs    chan error
	stop    chan struct{}
	wg      sync.WaitGroup
	stats   []*client.Client
}

// startLoad starts n submitters on brokers, whose clients wait timeout
// for each answer; keys are "k<submitter>-<n>".
func startLoad(t *testing.T, ctx context.Context, brokers []string, n int, timeout time.Duration) *load {
	t.Helper()
	return startLoadKeys(t, ctx, brokers, n, timeout, "k")
}

// startLoadKeys is startLoad with keys "<prefix><submitter>-<n>".
func startLoadKeys(t *testing.T, ctx context.Context, brokers []string, n int, timeout time.Duration, prefix string) *load {
	t.Helper()
	l := &load{changed: make(chan struct{}), errs: make(chan error, n), stop: make(chan struct{})}
	for s := range n {
		cl, err := client.New(client.Config{Brokers: brokers, Timeout: timeout, Retries: 10, Logger: quiet})
		if err != nil {
			t.Fatalf("client: %v", err)
		}
		t.Cleanup(func() { cl.Close() })
		l.stats = append(l.stats, cl)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				key := fmt.Sprintf("%s%d-%d", prefix, s, i)
				body := "body of " + key
				deadline := time.Now().Add(60 * time.Second)
				for {
					tk, err := cl.Submit(ctx, "echo", [][]byte{[]byte(body)}, client.SubmitOptions{IdemKey: key})
					if err == nil {
						l.add(ack{key: key, body: body, ticket: tk, at: time.Now()})
						break
					}
					if ctx.Err() != nil {
						return
					}
					if time.Now().After(deadline) || !(errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrServer)) {
						l.errs <- fmt.Errorf("submit %s: not acknowledged within 60s: %w", key, err)
						return
					}
					if errors.Is(err, client.ErrServer) {
						// "not stored", "not ready": the broker answered
						// at once; pace the retries.
						select {
						case <-time.After(20 * time.Millisecond):
						case <-ctx.Done():
							return
						}
					}
				}
			}
		}()
	}
	return l
}

func (l *load) add(a ack) {
	l.mu.Lock()
	l.acks = append(l.acks, a)
	ch := l.changed
	l.changed = make(chan struct{})
	l.mu.Unlock()
	close(ch)
}

// count returns the number of acks so far.
func (l *load) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acks)
}

// waitCount waits until at least target submits are acknowledged.
func (l *load) waitCount(t *testing.T, target int, within time.Duration, what string, diagf func() string) {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		l.mu.Lock()
		n, ch := len(l.acks), l.changed
		l.mu.Unlock()
		if n >= target {
			return
		}
		select {
		case <-ch:
		case err := <-l.errs:
			t.Fatalf("%s: %v%s", what, err, diagf())
		case <-timer.C:
			t.Fatalf("%s: %d acks of %d within %s%s", what, n, target, within, diagf())
		}
	}
}

// progress waits for n more acks.
func (l *load) progress(t *testing.T, n int, within time.Duration, what string, diagf func() string) {
	t.Helper()
	l.waitCount(t, l.count()+n, within, what, diagf)
}

// finish stops the submitters, waits for them and returns every ack.
func (l *load) finish(t *testing.T, diagf func() string) []ack {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	select {
	case err := <-l.errs:
		t.Fatalf("%v%s", err, diagf())
	default:
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.acks)
}

// clientStats sums the submitters' client counters.
func (l *load) clientStats() client.Stats {
	var s client.Stats
	for _, c := range l.stats {
		x := c.Stats()
		s.Calls += x.Calls
		s.Retries += x.Retries
		s.Failovers += x.Failovers
		s.Refusals += x.Refusals
		s.Stale += x.Stale
	}
	return s
}

// echoWorkers runs n in-process workers of "echo" on brokers; they answer
// "echo:<body>". They stop when ctx is done; the test waits for them.
// They heartbeat as the brokers of fastFlags do.
func echoWorkers(t *testing.T, ctx context.Context, brokers []string, n int) {
	t.Helper()
	echoWorkersBeating(t, ctx, brokers, n, 200*time.Millisecond)
}

// echoWorkersBeating is echoWorkers for brokers that heartbeat every hb.
func echoWorkersBeating(t *testing.T, ctx context.Context, brokers []string, n int, hb time.Duration) {
	t.Helper()
	runWorkers(t, ctx, brokers, n, hb, func(_ context.Context, req [][]byte) ([][]byte, error) {
		return [][]byte{append([]byte("echo:"), bytes.Join(req, nil)...)}, nil
	})
}

// runWorkers runs n workers of "echo" that answer with h, until ctx is
// done; the test waits for them.
func runWorkers(t *testing.T, ctx context.Context, brokers []string, n int, hb time.Duration, h worker.Handler) {
	t.Helper()
	var wg sync.WaitGroup
	for range n {
		w, err := worker.New(worker.Config{
			Brokers: brokers, Service: "echo",
			HeartbeatInterval: hb, ReconnectDelay: 100 * time.Millisecond, Logger: quiet,
		}, h)
		if err != nil {
			t.Fatalf("worker: %v", err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Run(ctx) }()
	}
	t.Cleanup(wg.Wait)
}

// --- the invariant ----------------------------------------------------------

// checkAcks asserts the invariant: every acknowledged ticket is answered
// with its own body (so none is lost), no ticket was acknowledged for two
// keys, and the store holds no ticket that was never acknowledged (so no
// idempotency key made a second ticket).
func checkAcks(t *testing.T, ctx context.Context, brokers []string, acks []ack, diagf func() string) {
	t.Helper()
	checkAcksUnacked(t, ctx, brokers, acks, 0, diagf)
}

// checkAcksUnacked is checkAcks for a store that may also hold up to
// unacked tickets no submit was acknowledged for: unkeyed submits whose
// call failed (a caller's new call makes a new key, so a ticket the
// failed call stored stays beside the one acknowledged).
func checkAcksUnacked(t *testing.T, ctx context.Context, brokers []string, acks []ack, unacked int, diagf func() string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	byTicket := map[string]ack{}
	byKey := map[string]string{}
	for _, a := range acks {
		if prev, dup := byTicket[a.ticket]; dup {
			t.Fatalf("ticket %s acknowledged for two keys, %s and %s", a.ticket, prev.key, a.key)
		}
		if prev, dup := byKey[a.key]; dup {
			t.Fatalf("key %s acknowledged twice, tickets %s and %s", a.key, prev, a.ticket)
		}
		byTicket[a.ticket] = a
		byKey[a.key] = a.ticket
	}

	// Every ack is answered with its own body.
	answerAll(t, ctx, acks, diagf, func() *client.Client {
		cl, err := client.New(client.Config{Brokers: brokers, Timeout: clientTimeout, Retries: 20, Logger: quiet})
		if err != nil {
			t.Fatalf("client: %v", err)
		}
		return cl
	}, func(a ack, reply string) error {
		if want := "echo:" + a.body; reply != want {
			return fmt.Errorf("ticket %s (key %s) answered %q, want %q", a.ticket, a.key, reply, want)
		}
		return nil
	})

	// The store holds exactly the acknowledged tickets.
	cl, err := client.New(client.Config{Brokers: brokers, Timeout: clientTimeout, Retries: 20, Logger: quiet})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer cl.Close()
	stored := map[string]bool{}
	var strays []string
	after := ""
	for {
		page, err := cl.List(ctx, client.ListOptions{After: after, Limit: 1000})
		if err != nil {
			t.Fatalf("list after %q: %v%s", after, err, diagf())
		}
		for _, ti := range page {
			stored[ti.Ticket] = true
			after = ti.Ticket
			if _, ok := byTicket[ti.Ticket]; !ok {
				strays = append(strays, fmt.Sprintf("%s (%s, %s)", ti.Ticket, ti.Service, ti.State))
			}
		}
		if len(page) < 1000 {
			break
		}
	}
	if len(strays) > unacked {
		t.Errorf("%d stored tickets were never acknowledged, at most %d may be (unkeyed submits whose call failed): an idempotency key made two tickets: %v",
			len(strays), unacked, strays)
	}
	for tk, a := range byTicket {
		if !stored[tk] {
			t.Errorf("LOST: acknowledged ticket %s (key %s) is not listed", tk, a.key)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// percentile returns the p-th percentile (0..100) of ds, nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// outage returns how long submits went unanswered around a fault at time
// at: the longest interval between consecutive acks from the last ack at
// or before at through the next n acks after it. (The first acks after
// at may be answers the dead broker sent just before it died: the plain
// "first ack after the fault" would then measure nothing.)
func outage(acks []ack, at time.Time, n int) time.Duration {
	times := make([]time.Time, len(acks))
	for i, a := range acks {
		times[i] = a.at
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	i := 0
	for i+1 < len(times) && !times[i+1].After(at) {
		i++
	}
	var longest time.Duration
	for j := i + 1; j < len(times) && j <= i+n; j++ {
		longest = max(longest, times[j].Sub(times[j-1]))
	}
	return longest
}

// answerAll waits for the reply of every ack with a few readers in
// parallel (clients made by dial, closed at the end) and hands each to
// check; the first unanswered ack or check error fails the test, with
// diagf's diagnostics.
func answerAll(t *testing.T, ctx context.Context, acks []ack, diagf func() string, dial func() *client.Client, check func(a ack, reply string) error) {
	t.Helper()
	inParallel(t, len(acks), 4, dial, diagf, func(cl *client.Client, i int) error {
		a := acks[i]
		rep, err := cl.Reply(ctx, a.ticket, client.ReplyOptions{Wait: true, PollInterval: 100 * time.Millisecond})
		if err != nil {
			return fmt.Errorf("LOST: acknowledged ticket %s (key %s, acked at %s) not answered: %w",
				a.ticket, a.key, a.at.Format("15:04:05.000"), err)
		}
		return check(a, string(bytes.Join(rep, nil)))
	})
}

// inParallel runs do for 0..n-1 on workers goroutines, each with its own
// client made by dial (closed at the end); the first error stops the
// feeding and fails the test, with diagf's diagnostics.
func inParallel(t *testing.T, n, workers int, dial func() *client.Client, diagf func() string, do func(cl *client.Client, i int) error) {
	t.Helper()
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		cl := dial()
		defer cl.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := do(cl, i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var firstErr error
feed:
	for i := range n {
		select {
		case next <- i:
		case firstErr = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr == nil {
		select {
		case firstErr = <-errs:
		default:
		}
	}
	if firstErr != nil {
		t.Fatalf("%v%s", firstErr, diagf())
	}
}

// longOnly skips t unless the long fault suite runs (TITANIC_JEPSEN=long,
// as make jepsen sets it): a variant of a scenario that a shorter test
// covers already, kept out of make test's time on two cores.
func longOnly(t *testing.T) {
	t.Helper()
	if os.Getenv("TITANIC_JEPSEN") != "long" {
		t.Skip("a longer variant of a scenario other tests cover: run with TITANIC_JEPSEN=long (make jepsen)")
	}
}

// rounds is how many rounds of its fault a test runs: short in make test
// (the suite keeps within its time), long with TITANIC_JEPSEN=long (make
// jepsen runs the FAILOVER_LONG tests so).
func rounds(short, long int) int {
	if os.Getenv("TITANIC_JEPSEN") == "long" {
		return long
	}
	return short
}
