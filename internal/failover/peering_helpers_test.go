package failover

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/netns"
)

// Peering tests: each cluster is one broker on its own host, peered with
// the others through its cloud frontend and state publisher; its workers
// are `titanic worker` processes on a host of their own ("<name>w") that
// answer "<CLUSTER>:<body>" and note every body they start in an
// execution log. Clients run in the test process (netns.Net.Attach).

const (
	peerSvc       = "pwork" // the service the clusters share
	peerCloudPort = 5570
	peerStatePort = 5571
	peerOpsPort   = 8080
	peerOpsToken  = "peering-test-token"
	peerClient    = 2 * time.Second // clients' per-try timeout: brokers answer at once here
)

// peerFlags are every peered broker's timings: MDP heartbeat 200ms (the
// peering state period stays at its 1s default: a peer is dead after 3s).
var peerFlags = []string{"--heartbeat", "200ms", "--log-level", "debug"}

// peerCluster is one peered cluster: its broker node, the host of its workers
// and their execution log.
type peerCluster struct {
	*node
	name    string // peering name (upper case), and the prefix of its workers' replies
	net     *netns.Net
	wh      *netns.Host // made by the first startWorkers
	execLog string
	workers []*netns.Process
}

// peeredClusters makes a broker host (named after the cluster, in lower
// case) for each cluster, attaches the test process, and sets every broker's
// arguments to peer with all the others. Brokers are not started.
func peeredClusters(t *testing.T, names ...string) []*peerCluster {
	t.Helper()
	n := netns.New(t)
	var cs []*peerCluster
	for _, name := range names {
		lower := strings.ToLower(name)
		c := &peerCluster{node: newNode(n, lower, t), name: name, net: n}
		c.execLog = filepath.Join(t.TempDir(), "exec-"+name+".log")
		cs = append(cs, c)
	}
	n.Attach()
	for _, c := range cs {
		var peers []string
		for _, o := range cs {
			if o != c {
				peers = append(peers, o.name+"="+o.cloud()+"+"+o.state())
			}
		}
		c.args = append([]string{
			"--peering-name", c.name, "--peering-cloud-listen", c.cloud(), "--peering-state-listen", c.state(),
			"--peering-peers", strings.Join(peers, ","),
			"--http-listen", fmt.Sprintf("%s:%d", c.host.Addr, peerOpsPort), "--http-token", peerOpsToken,
		}, peerFlags...)
	}
	return cs
}

func (c *peerCluster) cloud() string { return c.host.Endpoint(peerCloudPort) }
func (c *peerCluster) state() string { return c.host.Endpoint(peerStatePort) }

// startWorkers starts n `titanic worker` processes of peerSvc on the
// cluster's worker host. Each answers "<CLUSTER>:<body>" after a pause
// chosen by the body: "hold…" sleeps hold, "slow…" 2s, anything else 50ms.
func (c *peerCluster) startWorkers(t *testing.T, n int, hold time.Duration) {
	t.Helper()
	if c.wh == nil {
		c.wh = c.net.Host(c.host.Name + "w")
	}
	script := `read -r x; printf '%s\n' "$x" >> "$1"; ` +
		`case "$x" in hold*) sleep "$3";; slow*) sleep 2;; *) sleep 0.05;; esac; printf '%s:%s' "$2" "$x"`
	for i := range n {
		p := c.wh.Start(t, fmt.Sprintf("%s-worker%d", c.name, i), "worker running",
			"worker", "--broker", c.endpoint(), "--heartbeat", "200ms", "--timeout", "1m", peerSvc, "--",
			"sh", "-c", script, "sh", c.execLog, c.name, strconv.FormatFloat(hold.Seconds(), 'f', 3, 64))
		c.workers = append(c.workers, p)
	}
}

// execs returns how many times the cluster's workers started each body.
func (c *peerCluster) execs() map[string]int {
	data, _ := os.ReadFile(c.execLog)
	out := map[string]int{}
	for line := range strings.Lines(string(data)) {
		if l := strings.TrimSpace(line); l != "" {
			out[l]++
		}
	}
	return out
}

// peerDiag is the tail of every broker's current log and of the
// workers', for failure messages.
func peerDiag(cs ...*peerCluster) string {
	var nodes []*node
	for _, c := range cs {
		nodes = append(nodes, c.node)
	}
	var b strings.Builder
	b.WriteString(diag(nodes...))
	for _, c := range cs {
		for _, w := range c.workers {
			fmt.Fprintf(&b, "\n--- %s ---\n%s\n", w.Name, w.Tail())
		}
	}
	return b.String()
}

// --- the operations API ----------------------------------------------------

// opsGet reads a JSON endpoint of the cluster's operations API.
func (c *peerCluster) opsGet(ctx context.Context, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:%d%s", c.host.Addr, peerOpsPort, path), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+peerOpsToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s on %s: %s", path, c.name, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// peerCapacity is the spare capacity the cluster last heard each peer
// advertise (GET /api/v1/cluster).
func (c *peerCluster) peerCapacity(ctx context.Context) (map[string]int, error) {
	var st struct {
		Peers []struct {
			Name     string `json:"name"`
			Capacity int    `json:"capacity"`
		} `json:"peers"`
	}
	if err := c.opsGet(ctx, "/api/v1/cluster", &st); err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, p := range st.Peers {
		out[p.Name] = p.Capacity
	}
	return out, nil
}

// peerWorkers is the cluster broker's view of peerSvc's workers.
type peerWorkers struct {
	Workers, Idle, Busy, Requests int
}

func (c *peerCluster) workersNow(ctx context.Context) (peerWorkers, error) {
	var st struct {
		Workers []struct {
			Service  string `json:"service"`
			Workers  int    `json:"workers"`
			Idle     int    `json:"idle"`
			Busy     int    `json:"busy"`
			Requests int    `json:"requests"`
		} `json:"workers"`
	}
	if err := c.opsGet(ctx, "/api/v1/workers", &st); err != nil {
		return peerWorkers{}, err
	}
	for _, w := range st.Workers {
		if w.Service == peerSvc {
			return peerWorkers{w.Workers, w.Idle, w.Busy, w.Requests}, nil
		}
	}
	return peerWorkers{}, nil
}

// peerCounters are the cluster's titanic counters (GET /api/v1/stats).
type peerCounters struct {
	Submits      uint64 `json:"submits"`
	Dispatches   uint64 `json:"dispatches"`
	Redeliveries uint64 `json:"redeliveries"`
	Replies      uint64 `json:"replies"`
	LateReplies  uint64 `json:"late_replies"`
	Failures     uint64 `json:"failures"`
}

func (c *peerCluster) countersNow(ctx context.Context) (peerCounters, error) {
	var st peerCounters
	err := c.opsGet(ctx, "/api/v1/stats", &st)
	return st, err
}

// --- submitting -------------------------------------------------------------

// newClient is a client of the brokers for the test's own lookups.
func newPeerClient(t *testing.T, brokers ...string) *client.Client {
	t.Helper()
	cl, err := client.New(client.Config{Brokers: brokers, Timeout: peerClient, Retries: 10, Logger: quiet})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// peerSubmitBatch submits n tickets of peerSvc to brokers with conc keyed
// submitters: key "<tag>-<i>", body "<tag>-<i>" (so the tag's prefix
// picks the workers' pause). Each key is retried until acknowledged
// (within 30s). It returns the acks in key order.
func peerSubmitBatch(t *testing.T, ctx context.Context, brokers []string, tag string, n, conc int, diagf func() string) []ack {
	t.Helper()
	acks := make([]ack, n)
	inParallel(t, n, conc, func() *client.Client { return newPeerClient(t, brokers...) }, diagf, func(cl *client.Client, i int) error {
		key := fmt.Sprintf("%s-%d", tag, i)
		a, err := peerSubmitOne(ctx, cl, key, key)
		if err != nil {
			return err
		}
		acks[i] = a
		return nil
	})
	return acks
}

// peerSubmitOne submits body under key until the broker acknowledges it.
func peerSubmitOne(ctx context.Context, cl *client.Client, key, body string) (ack, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		tk, err := cl.Submit(ctx, peerSvc, [][]byte{[]byte(body)}, client.SubmitOptions{IdemKey: key})
		if err == nil {
			return ack{key: key, body: body, ticket: tk, at: time.Now()}, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) || !(errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrServer)) {
			return ack{}, fmt.Errorf("submit %s: not acknowledged: %w", key, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startPeerLoad runs n keyed submitters of peerSvc on brokers until finish,
// each pausing pace between acks; keys and bodies are "<tag><s>-<i>".
func startPeerLoad(t *testing.T, ctx context.Context, brokers []string, tag string, n int, pace time.Duration) *load {
	t.Helper()
	l := &load{changed: make(chan struct{}), errs: make(chan error, n), stop: make(chan struct{})}
	for s := range n {
		cl := newPeerClient(t, brokers...)
		l.stats = append(l.stats, cl)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				case <-time.After(pace):
				}
				key := fmt.Sprintf("%s%d-%d", tag, s, i)
				a, err := peerSubmitOne(ctx, cl, key, key)
				if err != nil {
					if ctx.Err() == nil {
						l.errs <- err
					}
					return
				}
				l.add(a)
			}
		}()
	}
	return l
}

// peerAcks returns the acks of l so far.
func peerAcks(l *load) []ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.acks)
}

// peerAcksBetween returns the acks made in [from, to).
func peerAcksBetween(acks []ack, from, to time.Time) []ack {
	var out []ack
	for _, a := range acks {
		if !a.at.Before(from) && a.at.Before(to) {
			out = append(out, a)
		}
	}
	return out
}

// --- the invariant ----------------------------------------------------------

// peerAnswer is an acknowledged ticket's recorded reply.
type peerAnswer struct {
	ack
	by    string // the cluster whose worker answered
	reply string
}

// checkPeerAnswers asserts that every ack is answered, all within 30s,
// with "<CLUSTER>:<its body>" for a cluster in from, and returns the
// answers by ticket. Several readers in parallel.
func checkPeerAnswers(t *testing.T, ctx context.Context, brokers []string, acks []ack, from []string, diagf func() string) map[string]peerAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	out := map[string]peerAnswer{}
	answerAll(t, ctx, acks, diagf, func() *client.Client { return newPeerClient(t, brokers...) }, func(a ack, got string) error {
		by, body, _ := strings.Cut(got, ":")
		if body != a.body || !slices.Contains(from, by) {
			return fmt.Errorf("ticket %s (key %s) answered %q, want \"<one of %v>:%s\"", a.ticket, a.key, got, from, a.body)
		}
		mu.Lock()
		out[a.ticket] = peerAnswer{ack: a, by: by, reply: got}
		mu.Unlock()
		return nil
	})
	return out
}

// peerSplit counts answers per cluster.
func peerSplit(ans map[string]peerAnswer, acks []ack) map[string]int {
	out := map[string]int{}
	for _, a := range acks {
		out[ans[a.ticket].by]++
	}
	return out
}

// checkPeerStore asserts that the brokers' store holds exactly the acked
// tickets, each acked for one key, all done.
func checkPeerStore(t *testing.T, ctx context.Context, brokers []string, acks []ack, diagf func() string) {
	t.Helper()
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
	cl := newPeerClient(t, brokers...)
	stored := map[string]bool{}
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
				t.Errorf("stored ticket %s (%s, %s) was never acknowledged", ti.Ticket, ti.Service, ti.State)
			} else if ti.State != "done" {
				t.Errorf("ticket %s is %s, want done", ti.Ticket, ti.State)
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

// checkPeerRepliesStable reads every answer again: the recorded reply must be
// the one read before (the first reply won; nothing answered it twice).
func checkPeerRepliesStable(t *testing.T, ctx context.Context, brokers []string, ans map[string]peerAnswer, diagf func() string) {
	t.Helper()
	cl := newPeerClient(t, brokers...)
	for tk, a := range ans {
		rep, err := cl.Reply(ctx, tk, client.ReplyOptions{})
		if err != nil {
			t.Fatalf("ticket %s (key %s): second read: %v%s", tk, a.key, err, diagf())
		}
		if got := string(bytes.Join(rep, nil)); got != a.reply {
			t.Fatalf("ticket %s (key %s) answered twice: first %q, now %q%s", tk, a.key, a.reply, got, diagf())
		}
	}
}
