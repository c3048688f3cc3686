package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/internal/nodetest"
	"github.com/titanicmq/titanic/worker"
)

var quietLog = slog.New(slog.DiscardHandler)

// cluster is an in-process titanic node (package titanic/node) on a
// fixed endpoint, so that it can be stopped and restarted on the same
// data, as a crashed and restarted shard. The endpoint's port is the
// test's until it ends (harness.ReservedEndpoint).
type cluster struct {
	t   *testing.T
	ep  string
	dir string
	n   *nodetest.Node // nil while stopped
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{t: t, ep: harness.ReservedEndpoint(t), dir: t.TempDir()}
	c.start()
	t.Cleanup(c.stop)
	return c
}

func (c *cluster) start() {
	c.t.Helper()
	cfg := nodetest.Config(c.dir)
	cfg.Broker.Endpoints = []string{c.ep}
	cfg.Store.NoSync = true
	c.n = nodetest.Start(c.t, cfg)
}

// stop stops the node as a crash would for its clients: it answers
// nothing from then on.
func (c *cluster) stop() {
	if c.n == nil {
		return
	}
	c.n.Stop()
	c.n = nil
}

// Timeouts of the tests' clients: patient where no shard dies, short
// where one does (a dead shard costs a call timeout × retries).
const (
	patient = time.Second
	short   = 250 * time.Millisecond
)

func newSharded(t *testing.T, cs []*cluster, timeout time.Duration, opts ...client.ShardOption) *client.Sharded {
	t.Helper()
	var cfgs []client.Config
	for _, c := range cs {
		cfgs = append(cfgs, client.Config{Brokers: []string{c.ep}, Timeout: timeout, Retries: 3, Logger: quietLog})
	}
	s, err := client.NewSharded(cfgs, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func shardOf(t *testing.T, ticket string) int {
	t.Helper()
	i, _, err := client.ParseShardTicket(ticket)
	if err != nil {
		t.Fatalf("ticket %q: %v", ticket, err)
	}
	return i
}

// echoMulti serves service "echo" on every cluster with one Multi worker
// answering "echo:<body>".
func echoMulti(t *testing.T, cs []*cluster) {
	t.Helper()
	var clusters [][]string
	for _, c := range cs {
		clusters = append(clusters, []string{c.ep})
	}
	m, err := worker.NewMulti(clusters, worker.Config{
		Service: "echo", HeartbeatInterval: 100 * time.Millisecond, ReconnectDelay: 50 * time.Millisecond, Logger: quietLog,
	}, func(_ context.Context, req [][]byte) ([][]byte, error) {
		return [][]byte{append([]byte("echo:"), bytes.Join(req, nil)...)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestParseShardTicket(t *testing.T) {
	const hex = "0190f6c5e0a87b3c9d2e4f5a6b7c8d9e"
	for _, tc := range []struct {
		in     string
		shard  int
		ticket string
	}{
		{"0:" + hex, 0, hex},
		{"2:" + hex, 2, hex},
		{"17:" + strings.ToUpper(hex), 17, hex},
		{"1:0190f6c5-e0a8-7b3c-9d2e-4f5a6b7c8d9e", 1, hex},
	} {
		i, tk, err := client.ParseShardTicket(tc.in)
		if err != nil || i != tc.shard || tk != tc.ticket {
			t.Errorf("ParseShardTicket(%q) = %d, %q, %v; want %d, %q", tc.in, i, tk, err, tc.shard, tc.ticket)
		}
	}
	for _, bad := range []string{"", hex, ":" + hex, "-1:" + hex, "01:" + hex, "x:" + hex, "1:" + hex[:31], "1:" + hex + "0", "1:" + hex[:31] + "g", "1234567:" + hex, "1:2:" + hex} {
		if _, _, err := client.ParseShardTicket(bad); !errors.Is(err, client.ErrUnknown) {
			t.Errorf("ParseShardTicket(%q) = %v, want ErrUnknown", bad, err)
		}
	}
	if got := client.ShardTicket(3, hex); got != "3:"+hex {
		t.Errorf("ShardTicket = %q", got)
	}
}

// TestShardForIsStable pins the hash: a change would send existing keys to
// other shards, where their tickets are unknown.
func TestShardForIsStable(t *testing.T) {
	s, err := client.NewSharded([]client.Config{{Brokers: []string{"tcp://127.0.0.1:1"}}, {Brokers: []string{"tcp://127.0.0.1:2"}}, {Brokers: []string{"tcp://127.0.0.1:3"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := map[string]int{"": 2, "a": 1, "order-1": 0, "order-2": 1, "order-3": 1, "user:42": 1}
	for k, w := range want {
		if got := s.ShardFor(k); got != w {
			t.Errorf("ShardFor(%q) = %d, want %d", k, got, w)
		}
	}
	// Adding a shard moves only the keys the new shard wins.
	s4, err := client.NewSharded([]client.Config{{Brokers: []string{"tcp://127.0.0.1:1"}}, {Brokers: []string{"tcp://127.0.0.1:2"}}, {Brokers: []string{"tcp://127.0.0.1:3"}}, {Brokers: []string{"tcp://127.0.0.1:4"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s4.Close()
	moved := 0
	for i := range 4000 {
		k := fmt.Sprintf("key-%d", i)
		a, b := s.ShardFor(k), s4.ShardFor(k)
		if a != b {
			if b != 3 {
				t.Fatalf("key %q moved from shard %d to %d, not to the new shard", k, a, b)
			}
			moved++
		}
	}
	if moved < 800 || moved > 1200 {
		t.Errorf("%d of 4000 keys moved to the 4th shard, want about 1000", moved)
	}
}

func TestNewShardedConfig(t *testing.T) {
	for name, cfgs := range map[string][]client.Config{
		"none":      nil,
		"no broker": {{Brokers: []string{"tcp://127.0.0.1:1"}}, {}},
		"shared":    {{Brokers: []string{"tcp://127.0.0.1:1"}}, {Brokers: []string{"tcp://127.0.0.1:2", "tcp://127.0.0.1:1"}}},
		"empty":     {{Brokers: []string{""}}},
	} {
		if s, err := client.NewSharded(cfgs); !errors.Is(err, client.ErrConfig) {
			if s != nil {
				s.Close()
			}
			t.Errorf("%s: NewSharded = %v, want ErrConfig", name, err)
		}
	}
}

// TestShardedSpreadAndRoute: 3,000 keyed submits over 3 shards land on
// each key's home shard, within ±15% of even; a key submitted again gets
// its first ticket; unkeyed submits go round robin; lookups go to the
// ticket's shard; List merges the shards in ticket order with paging.
func TestShardedSpreadAndRoute(t *testing.T) {
	cs := []*cluster{newCluster(t), newCluster(t), newCluster(t)}
	s := newSharded(t, cs, patient)
	ctx := ctxFor(t, time.Minute)

	const n, submitters = 3000, 12
	tickets := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, submitters)
	for g := range submitters {
		wg.Go(func() {
			for i := g; i < n; i += submitters {
				tk, err := s.Submit(ctx, "job", [][]byte{fmt.Appendf(nil, "body %d", i)}, client.SubmitOptions{IdemKey: fmt.Sprintf("order-%d", i)})
				if err != nil {
					errs <- fmt.Errorf("submit %d: %w", i, err)
					return
				}
				tickets[i] = tk
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	counts := make([]int, 3)
	for i, tk := range tickets {
		got := shardOf(t, tk)
		if want := s.ShardFor(fmt.Sprintf("order-%d", i)); got != want {
			t.Fatalf("key order-%d went to shard %d, its home is %d", i, got, want)
		}
		counts[got]++
	}
	t.Logf("3000 keyed submits per shard: %v", counts)
	for i, c := range counts {
		if c < 850 || c > 1150 {
			t.Errorf("shard %d got %d of 3000 keyed submits, want 1000 ± 15%%", i, c)
		}
	}
	// Each shard stored exactly its keys.
	for i, c := range cs {
		rows := listAll(t, ctx, s.Shard(i))
		if len(rows) != counts[i] {
			t.Errorf("shard %d (%s) stores %d tickets, want %d", i, c.ep, len(rows), counts[i])
		}
	}
	// The same key again: the same shard, the same ticket; with another
	// body, a conflict naming that ticket (as a shard ticket).
	for i := range 50 {
		tk, err := s.Submit(ctx, "job", [][]byte{fmt.Appendf(nil, "body %d", i)}, client.SubmitOptions{IdemKey: fmt.Sprintf("order-%d", i)})
		if err != nil || tk != tickets[i] {
			t.Fatalf("resubmit of order-%d = %q, %v; want %q", i, tk, err, tickets[i])
		}
		var kc *client.KeyConflictError
		if _, err := s.Submit(ctx, "job", [][]byte{[]byte("again")}, client.SubmitOptions{IdemKey: fmt.Sprintf("order-%d", i)}); !errors.As(err, &kc) || kc.Ticket != tickets[i] {
			t.Fatalf("order-%d with another body: %v, want a key conflict naming %s", i, err, tickets[i])
		}
	}

	// No key: round robin.
	var rr []int
	for range 9 {
		tk, err := s.Submit(ctx, "job", [][]byte{[]byte("rr")}, client.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		rr = append(rr, shardOf(t, tk))
	}
	for i := 3; i < len(rr); i++ {
		if rr[i] != rr[i-3] || rr[i] == rr[i-1] {
			t.Fatalf("unkeyed submits went to shards %v, want a round robin", rr)
		}
	}

	// Lookups go to the ticket's shard.
	for _, tk := range tickets[:30] {
		st, err := s.Status(ctx, tk)
		if err != nil || st.Ticket != tk || st.Service != "job" || st.State != "pending" {
			t.Fatalf("status %s = %+v, %v", tk, st, err)
		}
		if _, err := s.Reply(ctx, tk, client.ReplyOptions{}); !errors.Is(err, client.ErrPending) {
			t.Fatalf("reply %s = %v, want ErrPending", tk, err)
		}
		// The same ticket named after another shard is unknown there.
		i, raw, _ := client.ParseShardTicket(tk)
		if _, err := s.Status(ctx, client.ShardTicket((i+1)%3, raw)); !errors.Is(err, client.ErrUnknown) {
			t.Fatalf("status of %s on the wrong shard = %v, want ErrUnknown", tk, err)
		}
	}
	_, raw, _ := client.ParseShardTicket(tickets[0])
	if _, err := s.Status(ctx, client.ShardTicket(3, raw)); !errors.Is(err, client.ErrUnknown) {
		t.Fatalf("status of a ticket of shard 3 (of 3) = %v, want ErrUnknown", err)
	}
	if err := s.CloseTicket(ctx, tickets[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Status(ctx, tickets[0]); !errors.Is(err, client.ErrUnknown) {
		t.Fatalf("status of a closed ticket = %v, want ErrUnknown", err)
	}

	// List: every ticket once, in (ticket, shard) order, across pages.
	var listed []string
	after := ""
	for {
		page, err := s.List(ctx, client.ListOptions{After: after, Limit: 700})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page {
			listed = append(listed, r.Ticket)
			after = r.Ticket
		}
		if len(page) < 700 {
			break
		}
	}
	if want := n - 1 + 9; len(listed) != want {
		t.Fatalf("List returned %d tickets, want %d", len(listed), want)
	}
	key := func(tk string) string { i, raw, _ := client.ParseShardTicket(tk); return fmt.Sprintf("%s/%d", raw, i) }
	if !slices.IsSortedFunc(listed, func(a, b string) int { return strings.Compare(key(a), key(b)) }) {
		t.Fatal("List is not in ticket order")
	}
	seen := map[string]bool{}
	for _, tk := range listed {
		if seen[tk] {
			t.Fatalf("List returned %s twice", tk)
		}
		seen[tk] = true
	}
	for _, tk := range tickets[1:] {
		if !seen[tk] {
			t.Fatalf("List missed %s", tk)
		}
	}
	// Filters go through.
	page, err := s.List(ctx, client.ListOptions{Service: "nosuch"})
	if err != nil || len(page) != 0 {
		t.Fatalf("List of another service = %v, %v", page, err)
	}
}

// TestShardDown: with one shard stopped, unkeyed submits go on to the
// other two without error, lookups of its tickets fail with
// ErrShardUnavailable (not ErrUnknown), keyed submits homed there fail
// (or, with WithKeyedFallback, go to the key's next shard), and once it
// restarts its tickets are answered and it takes submits again.
func TestShardDown(t *testing.T) {
	cs := []*cluster{newCluster(t), newCluster(t), newCluster(t)}
	s := newSharded(t, cs, short, client.WithProbeInterval(100*time.Millisecond))
	fb := newSharded(t, cs, short, client.WithKeyedFallback(), client.WithProbeInterval(100*time.Millisecond))
	ctx := ctxFor(t, time.Minute)

	var before []string
	for i := range 30 {
		tk, err := s.Submit(ctx, "echo", [][]byte{fmt.Appendf(nil, "before %d", i)}, client.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, tk)
	}
	cs[1].stop()

	start := time.Now()
	var during []string
	for i := range 30 {
		tk, err := s.Submit(ctx, "echo", [][]byte{fmt.Appendf(nil, "during %d", i)}, client.SubmitOptions{})
		if err != nil {
			t.Fatalf("unkeyed submit %d with shard 1 down: %v", i, err)
		}
		if shardOf(t, tk) == 1 {
			t.Fatalf("unkeyed submit went to the stopped shard: %s", tk)
		}
		during = append(during, tk)
	}
	t.Logf("30 unkeyed submits with a shard down took %s", time.Since(start).Round(time.Millisecond))
	if s.Healthy(1) {
		t.Fatal("shard 1 is not seen down")
	}
	on := map[int]int{}
	for _, tk := range during {
		on[shardOf(t, tk)]++
	}
	if on[0] < 14 || on[2] < 14 {
		t.Errorf("unkeyed submits with shard 1 down went %v, want an even split over 0 and 2", on)
	}

	// Lookups of the down shard's tickets: shard unavailable.
	var onDown []string
	for _, tk := range before {
		if shardOf(t, tk) == 1 {
			onDown = append(onDown, tk)
		}
	}
	if len(onDown) == 0 {
		t.Fatal("no ticket on shard 1")
	}
	for name, call := range map[string]func(string) error{
		"status": func(tk string) error { _, err := s.Status(ctx, tk); return err },
		"reply":  func(tk string) error { _, err := s.Reply(ctx, tk, client.ReplyOptions{Wait: true}); return err },
		"wait":   func(tk string) error { _, err := s.Wait(ctx, tk, client.WaitOptions{}); return err },
		"close":  func(tk string) error { return s.CloseTicket(ctx, tk) },
	} {
		err := call(onDown[0])
		if !errors.Is(err, client.ErrShardUnavailable) || !errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrUnknown) {
			t.Errorf("%s of a ticket of the down shard = %v, want ErrShardUnavailable", name, err)
		}
	}
	if _, err := s.List(ctx, client.ListOptions{}); !errors.Is(err, client.ErrShardUnavailable) {
		t.Errorf("List with a shard down = %v, want ErrShardUnavailable", err)
	}
	// The other shards answer as usual.
	if _, err := s.Status(ctx, during[0]); err != nil {
		t.Fatal(err)
	}

	// Keyed submits homed on the down shard: refused by default, moved to
	// the key's next shard with the fallback, the same one each time.
	key := ""
	for i := 0; key == ""; i++ {
		if k := fmt.Sprintf("k%d", i); s.ShardFor(k) == 1 {
			key = k
		}
	}
	if _, err := s.Submit(ctx, "echo", [][]byte{[]byte("keyed")}, client.SubmitOptions{IdemKey: key}); !errors.Is(err, client.ErrShardUnavailable) {
		t.Fatalf("keyed submit homed on the down shard = %v, want ErrShardUnavailable", err)
	}
	ftk, err := fb.Submit(ctx, "echo", [][]byte{[]byte("keyed")}, client.SubmitOptions{IdemKey: key})
	if err != nil {
		t.Fatalf("keyed submit with fallback: %v", err)
	}
	if got := shardOf(t, ftk); got == 1 {
		t.Fatalf("fallback submit went to the down shard")
	}
	again, err := fb.Submit(ctx, "echo", [][]byte{[]byte("keyed")}, client.SubmitOptions{IdemKey: key})
	if err != nil || again != ftk {
		t.Fatalf("fallback resubmit = %q, %v; want %q", again, err, ftk)
	}

	// Restart: its tickets are answered, and it takes new work again.
	cs[1].start()
	echoMulti(t, cs)
	for _, tk := range append(append(before, during...), ftk) {
		rep, err := s.Reply(ctx, tk, client.ReplyOptions{Wait: true})
		if err != nil {
			t.Fatalf("reply %s after the restart: %v", tk, err)
		}
		if !strings.HasPrefix(string(bytes.Join(rep, nil)), "echo:") {
			t.Fatalf("reply %s = %q", tk, rep)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for !s.Healthy(1) {
		if time.Now().After(deadline) {
			t.Fatal("shard 1 not seen healthy again")
		}
		time.Sleep(20 * time.Millisecond)
	}
	on = map[int]int{}
	for range 9 {
		tk, err := s.Submit(ctx, "echo", [][]byte{[]byte("after")}, client.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		on[shardOf(t, tk)]++
	}
	if on[0] != 3 || on[1] != 3 || on[2] != 3 {
		t.Errorf("unkeyed submits after the restart went %v, want 3 to each shard", on)
	}
	if _, err := s.Submit(ctx, "echo", [][]byte{[]byte("keyed")}, client.SubmitOptions{IdemKey: key}); err != nil {
		t.Fatalf("keyed submit homed on the restarted shard: %v", err)
	}
	// The documented price of the fallback: with its home back, the key
	// goes home again, where the fallback ticket is unknown.
	for deadline := time.Now().Add(5 * time.Second); !fb.Healthy(1); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("shard 1 not seen healthy again by the fallback client")
		}
	}
	home, err := fb.Submit(ctx, "echo", [][]byte{[]byte("keyed")}, client.SubmitOptions{IdemKey: key})
	if err != nil || shardOf(t, home) != 1 || home == ftk {
		t.Fatalf("fallback client's resubmit with the home shard back = %q, %v; want a ticket of shard 1", home, err)
	}
}

// TestShardsAllDown: with every shard down a submit fails with
// ErrShardUnavailable, and the probe notices a shard that comes back.
func TestShardsAllDown(t *testing.T) {
	cs := []*cluster{newCluster(t), newCluster(t)}
	s := newSharded(t, cs, short, client.WithProbeInterval(50*time.Millisecond))
	ctx := ctxFor(t, 30*time.Second)
	cs[0].stop()
	cs[1].stop()
	_, err := s.Submit(ctx, "echo", [][]byte{[]byte("x")}, client.SubmitOptions{})
	if !errors.Is(err, client.ErrShardUnavailable) || !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("submit with every shard down = %v, want ErrShardUnavailable", err)
	}
	if s.Healthy(0) || s.Healthy(1) {
		t.Fatal("shards not seen down")
	}
	cs[1].start()
	deadline := time.Now().Add(5 * time.Second)
	for !s.Healthy(1) {
		if time.Now().After(deadline) {
			t.Fatal("the probe did not see shard 1 back")
		}
		time.Sleep(20 * time.Millisecond)
	}
	tk, err := s.Submit(ctx, "echo", [][]byte{[]byte("x")}, client.SubmitOptions{})
	if err != nil || shardOf(t, tk) != 1 {
		t.Fatalf("submit with shard 1 back = %q, %v", tk, err)
	}
	if s.Healthy(0) {
		t.Fatal("shard 0 seen healthy while stopped")
	}
}

func listAll(t *testing.T, ctx context.Context, c *client.Client) []client.TicketInfo {
	t.Helper()
	var out []client.TicketInfo
	after := ""
	for {
		page, err := c.List(ctx, client.ListOptions{After: after, Limit: 1000})
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		out = append(out, page...)
		if len(page) < 1000 {
			return out
		}
		after = page[len(page)-1].Ticket
	}
}
