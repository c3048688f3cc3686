package upgrade

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/internal/netns"
	"github.com/titanicmq/titanic/internal/rawmdp"
	"github.com/titanicmq/titanic/worker"
)

// binaries returns the previous release's binary (built from git history,
// cached) and the current one. It skips only when the history is absent.
func binaries(t *testing.T) (prev Release, oldBin, newBin string) {
	t.Helper()
	prev, oldBin = previous(t)
	return prev, oldBin, harness.Binary(t)
}

// previous builds (or finds cached) the previous release's binary.
func previous(t *testing.T) (Release, string) {
	t.Helper()
	root := RepoRoot()
	rel, err := Latest(root)
	if err != nil {
		t.Fatalf("RELEASES: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, built, took, err := Build(ctx, root, CacheDir(), rel.Commit, rel.Version)
	if errors.Is(err, ErrNoHistory) {
		t.Skipf("cannot build release %s: %v", rel.Version, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if built {
		t.Logf("built release %s (%s) in %s: %s", rel.Version, rel.Commit[:9], took.Round(time.Millisecond), bin)
	}
	return rel, bin
}

// Timing of every broker (both versions take these flags): MDP heartbeats
// every 200ms, raft timeout 300ms.
var fastFlags = []string{"--heartbeat", "200ms", "--raft-timeout", "300ms", "--log-level", "debug"}

const clientTimeout = 500 * time.Millisecond

var quiet = slog.New(slog.DiscardHandler)

// --- nodes ------------------------------------------------------------------

// node is one broker host and every process that ran on it, each with the
// binary it ran.
type node struct {
	name  string
	host  *netns.Host
	dir   string
	args  []string
	procs []*netns.Process
	bins  []string // "old" or "new", per life
}

func newNode(n *netns.Net, name string, t *testing.T) *node {
	return &node{name: name, host: n.Host(name), dir: t.TempDir()}
}

func (n *node) endpoint() string { return n.host.Endpoint(5555) }

// start runs the broker with bin (labelled which) on the node's data and
// waits until it is ready; the error says why it is not.
func (n *node) start(t *testing.T, which, bin string) error {
	t.Helper()
	name := fmt.Sprintf("%s-%d-%s", n.name, len(n.procs), which)
	p, err := n.host.TryBrokerBin(t, bin, name, n.dir, n.args...)
	n.procs = append(n.procs, p)
	n.bins = append(n.bins, which)
	return err
}

// mustStart is start that fails the test with every node's log.
func (n *node) mustStart(t *testing.T, which, bin string, all ...*node) {
	t.Helper()
	if err := n.start(t, which, bin); err != nil {
		t.Fatalf("start %s with the %s binary: %v%s", n.name, which, err, diag(all...))
	}
}

func (n *node) proc() *netns.Process { return n.procs[len(n.procs)-1] }
func (n *node) which() string        { return n.bins[len(n.bins)-1] }
func (n *node) kill()                { n.proc().Kill() }

// stop is a clean shutdown (SIGTERM), as an operator upgrading would do.
func (n *node) stop(t *testing.T) {
	t.Helper()
	if err := n.proc().Stop(10 * time.Second); err != nil {
		var ee interface{ ExitCode() int }
		if !errors.As(err, &ee) {
			t.Logf("stop %s: %v", n.name, err)
		}
	}
}

// lifeLog is the output of the node's current process.
func (n *node) lifeLog() string {
	b, _ := os.ReadFile(n.proc().Log)
	return string(b)
}

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
		fmt.Fprintf(&b, "\n--- %s (%s binary, %s, %s) ---\n%s\n", n.name, n.which(), n.host.Addr, state, n.proc().Tail())
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

// stampRE matches the timestamps of a log line (slog's and raft's own).
var stampRE = regexp.MustCompile(`\d{4}-\d\d-\d\dT[0-9:.]+Z`)

// warnings returns the nodes' log lines (all lives) at WARN or ERROR,
// each distinct line once (timestamps aside) with its count, for the
// report of what an old and a new node said to each other.
func warnings(nodes ...*node) string {
	var b strings.Builder
	for _, n := range nodes {
		for i, p := range n.procs {
			data, _ := os.ReadFile(p.Log)
			var order []string
			count := map[string]int{}
			for line := range strings.Lines(string(data)) {
				if !strings.Contains(line, "level=WARN") && !strings.Contains(line, "level=ERROR") {
					continue
				}
				k := strings.TrimSpace(stampRE.ReplaceAllString(line, "T"))
				if count[k] == 0 {
					order = append(order, k)
				}
				count[k]++
			}
			for _, k := range order {
				fmt.Fprintf(&b, "%s life %d (%s) x%d: %s\n", n.name, i, n.bins[i], count[k], k)
			}
		}
	}
	return b.String()
}

// keepLogs copies every life's log of nodes to $TITANIC_ARTIFACTS (or a
// directory it makes under the temp dir) when the test fails, so that a
// finding can be read in full after the test's temp dirs are gone.
func keepLogs(t *testing.T, nodes ...*node) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		dir := os.Getenv("TITANIC_ARTIFACTS")
		if dir == "" {
			var err error
			if dir, err = os.MkdirTemp("", "titanic-mixed-"); err != nil {
				return
			}
		}
		prefix := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
		for _, n := range nodes {
			for i, p := range n.procs {
				data, err := os.ReadFile(p.Log)
				if err != nil {
					continue
				}
				_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%s-%d-%s.log", prefix, n.name, i, n.bins[i])), data, 0o644)
			}
		}
		t.Logf("node logs kept in %s", dir)
	})
}

// --- raw 9/TSP client -----------------------------------------------------

// rawClient is a spec client (rawmdp.Client: what an old client, or one
// in another language, does) with a context of its own.
type rawClient struct {
	*rawmdp.Client
	zctx *zmq.Context
}

func newRawClient(t *testing.T, endpoints []string, timeout time.Duration) *rawClient {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatalf("zmq context: %v", err)
	}
	return &rawClient{Client: rawmdp.New(zctx, endpoints, timeout), zctx: zctx}
}

// close releases the socket and the context.
func (c *rawClient) close() {
	c.Close()
	_ = c.zctx.Term()
}

// status is a node's answer to titanic.cluster (both versions answer it).
type status struct {
	ID, State, Leader     string
	Term, Commit, Applied uint64
	Members               []string
	Fields                map[string]string
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

func clusterStatus(t *testing.T, ctx context.Context, endpoint string) (status, error) {
	c := newRawClient(t, []string{endpoint}, 300*time.Millisecond)
	defer c.close()
	rep, err := c.Call(ctx, "titanic.cluster", []byte{})
	if err != nil {
		return status{}, err
	}
	if len(rep) == 0 || string(rep[0]) != "200" {
		return status{}, fmt.Errorf("titanic.cluster answered %q", rep)
	}
	st := status{Fields: map[string]string{}}
	num := func(v string) uint64 { x, _ := strconv.ParseUint(v, 10, 64); return x }
	for _, f := range rep[1:] {
		k, v, _ := strings.Cut(string(f), "=")
		st.Fields[k] = v
		switch k {
		case "id":
			st.ID = v
		case "state":
			st.State = v
		case "leader":
			st.Leader = v
		case "term":
			st.Term = num(v)
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

// eventually calls f every 100ms until it returns nil, or fails the test
// after within with what f last said.
func eventually(t *testing.T, within time.Duration, what string, f func() error, diagf func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v%s", what, within, err, diagf())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// --- load -------------------------------------------------------------------

type ack struct {
	key, body, ticket string
	at                time.Time
}

// load runs keyed raw submitters (titanic.submit [key | service | body]):
// each retries its key until acknowledged, so a key that made two tickets
// shows up as a ticket nobody acknowledged.
type load struct {
	mu      sync.Mutex
	acks    []ack
	changed chan struct{}
	errs    chan error
	stop    chan struct{}
	wg      sync.WaitGroup
}

func startLoad(t *testing.T, ctx context.Context, brokers []string, n int) *load {
	t.Helper()
	return startKeyedLoad(t, ctx, brokers, n, "")
}

// startKeyedLoad is startLoad whose idempotency keys start with prefix, so
// that several loads against one cluster never share a key.
func startKeyedLoad(t *testing.T, ctx context.Context, brokers []string, n int, prefix string) *load {
	t.Helper()
	l := &load{changed: make(chan struct{}), errs: make(chan error, n), stop: make(chan struct{})}
	for s := range n {
		c := newRawClient(t, brokers, clientTimeout)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer c.close()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				key := fmt.Sprintf("%sk%d-%d", prefix, s, i)
				body := "body of " + key
				deadline := time.Now().Add(60 * time.Second)
				var last string
				for {
					if ctx.Err() != nil {
						return
					}
					if time.Now().After(deadline) {
						l.errs <- fmt.Errorf("submit %s: not acknowledged within 60s; last answer: %s", key, last)
						return
					}
					rep, err := c.Call(ctx, "titanic.submit", []byte(key), []byte("echo"), []byte(body))
					if err != nil {
						last = err.Error()
						continue
					}
					last = fmt.Sprintf("%q", rep)
					if string(rep[0]) == "200" && len(rep) >= 2 {
						l.add(ack{key: key, body: body, ticket: string(rep[1]), at: time.Now()})
						break
					}
					if string(rep[0]) == "400" {
						l.errs <- fmt.Errorf("submit %s: refused: %q", key, rep)
						return
					}
					// 500 (not ready, not the leader): the other node,
					// paced.
					c.Next()
					time.Sleep(20 * time.Millisecond)
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

func (l *load) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acks)
}

// progress waits for n more acks.
func (l *load) progress(t *testing.T, n int, within time.Duration, what string, diagf func() string) {
	t.Helper()
	target := l.count() + n
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		l.mu.Lock()
		got, ch := len(l.acks), l.changed
		l.mu.Unlock()
		if got >= target {
			return
		}
		select {
		case <-ch:
		case err := <-l.errs:
			t.Fatalf("%s: %v%s", what, err, diagf())
		case <-timer.C:
			t.Fatalf("%s: %d acks of %d within %s%s", what, got, target, within, diagf())
		}
	}
}

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

// echoWorkers runs n workers of "echo" (the worker library: plain 7/MDP)
// answering "echo:<body>".
func echoWorkers(t *testing.T, ctx context.Context, brokers []string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for range n {
		w, err := worker.New(worker.Config{
			Brokers: brokers, Service: "echo",
			HeartbeatInterval: 200 * time.Millisecond, ReconnectDelay: 100 * time.Millisecond, Logger: quiet,
		}, func(_ context.Context, req [][]byte) ([][]byte, error) {
			return [][]byte{append([]byte("echo:"), bytes.Join(req, nil)...)}, nil
		})
		if err != nil {
			t.Fatalf("worker: %v", err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Run(ctx) }()
	}
	t.Cleanup(wg.Wait)
}

// --- the invariant ----------------------------------------------------------

// checkAcks asserts that every acknowledged ticket is answered with its
// own body (titanic.reply, polled; none lost), that no ticket was acked
// for two keys, and that the store lists no ticket nobody acknowledged.
func checkAcks(t *testing.T, ctx context.Context, brokers []string, acks []ack, diagf func() string) {
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
		byTicket[a.ticket], byKey[a.key] = a, a.ticket
	}

	next := make(chan ack)
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for range 4 {
		c := newRawClient(t, brokers, clientTimeout)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.close()
			for a := range next {
				if err := awaitReply(ctx, c, a); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var firstErr error
feed:
	for _, a := range acks {
		select {
		case next <- a:
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

	c := newRawClient(t, brokers, clientTimeout)
	defer c.close()
	stored := map[string]bool{}
	after := ""
	for {
		var page [][]byte
		for {
			rep, err := c.Call(ctx, "titanic.list", []byte{}, []byte{}, []byte(after), []byte("1000"))
			if ctx.Err() != nil {
				t.Fatalf("list after %q: %v%s", after, ctx.Err(), diagf())
			}
			if err == nil && len(rep) > 0 && string(rep[0]) == "200" {
				page = rep[1:]
				break
			}
			if err == nil {
				c.Next()
			}
			time.Sleep(50 * time.Millisecond)
		}
		for _, line := range page {
			f := strings.Fields(string(line))
			if len(f) == 0 {
				continue
			}
			stored[f[0]] = true
			after = f[0]
			if _, ok := byTicket[f[0]]; !ok {
				t.Errorf("stored ticket %q was never acknowledged: an idempotency key made two tickets", line)
			}
		}
		if len(page) < 1000 {
			break
		}
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

// awaitReply polls titanic.reply for a's ticket until it is answered,
// and checks the answer.
func awaitReply(ctx context.Context, c *rawClient, a ack) error {
	var last string
	for {
		rep, err := c.Call(ctx, "titanic.reply", []byte(a.ticket))
		if ctx.Err() != nil {
			return fmt.Errorf("LOST: acknowledged ticket %s (key %s, acked at %s) not answered; last answer %s",
				a.ticket, a.key, a.at.Format("15:04:05.000"), last)
		}
		if err != nil {
			last = err.Error()
			continue
		}
		last = fmt.Sprintf("%q", rep)
		switch string(rep[0]) {
		case "200":
			got := string(bytes.Join(rep[1:], nil))
			if want := "echo:" + a.body; got != want {
				return fmt.Errorf("ticket %s (key %s) answered %q, want %q", a.ticket, a.key, got, want)
			}
			return nil
		case "500":
			if len(rep) > 1 && strings.HasPrefix(string(rep[1]), "failed: ") {
				return fmt.Errorf("ticket %s (key %s) failed: %q", a.ticket, a.key, rep)
			}
			c.Next()
		case "400":
			// Unknown on a node that has not applied it yet: the other.
			c.Next()
		}
		time.Sleep(50 * time.Millisecond)
	}
}
