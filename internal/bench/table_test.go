package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker/zsock"
	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
)

// The table of issue 10 (`make bench` prints it with
// `go run ./internal/bench/table`): durable jobs/s with 1, 8 and 64
// workers while 64 clients submit, and durable submits/s from 1, 8 and 64
// clients, on a single node, a pair and a 3-node group. Clients and
// workers are spec-only: a 9/TSP client is a DEALER sending 7/MDP client
// requests to titanic.request and titanic.reply (no idempotency keys, no
// titanic.wait, one request in flight), a worker is a DEALER speaking
// MDPW01. Every deployment is the built binary (TITANIC_BIN, else built
// once), one process per node on 127.0.0.1 with every timing the default
// (a Binary Star pair, a raft group), the load in the test process.

// tableModes are the table's deployments, in its order.
var tableModes = []struct {
	name   string
	voters int // 0: single node
}{{"single", 0}, {"pair", 2}, {"group3", 3}}

var workerCounts = []int{1, 8, 64}

// rpcTimeout bounds every spec-only request: on loopback a missing answer
// is a failure, not a reason to retry.
const rpcTimeout = 30 * time.Second

// target is a broker under load: its endpoint, its titanic commit
// counter (batches: one bbolt transaction each on a single node, one raft
// entry in a pair or group) and its worker count for the bench service.
type target struct {
	endpoint string
	commits  func(b *testing.B) uint64
	workers  func(b *testing.B) int
	stop     func()
	// brokerCPU is the broker process's CPU time so far (false: not
	// known apart from the load's, when it runs in the test process).
	brokerCPU func() (time.Duration, bool)
}

// cpuMark is the CPU time used so far by the test process (the load) and
// by the brokers' processes.
type cpuMark struct {
	load, broker time.Duration
	brokerKnown  bool
}

func (t *target) cpuMark() cpuMark {
	m := cpuMark{load: processCPU()}
	m.broker, m.brokerKnown = t.brokerCPU()
	return m
}

// startTarget starts the broker of a mode as real binaries on 127.0.0.1,
// every timing the default: one node; a Binary Star pair (primary and
// backup, raft between them); or a 3-node raft group. The load talks to
// the node that serves (the pair's active, the group's leader), found by
// its /healthz; broker-cpu-us/op counts every node's process.
func startTarget(b *testing.B, voters int) *target {
	b.Helper()
	type node struct {
		name, ep, http string
		args           []string
		p              *harness.Process
	}
	var nodes []*node
	switch voters {
	case 0:
		nodes = []*node{{name: "single"}}
	case 2:
		type ports struct{ ep, state, raft string }
		mk := func() ports { return ports{harness.FreeEndpoint(b), harness.FreeEndpoint(b), harness.FreeAddr(b)} }
		pp, bp := mk(), mk()
		pairNode := func(role string, self, peer ports) *node {
			return &node{name: role, ep: self.ep, args: []string{"--pair", role, "--state-listen", self.state, "--raft-bind", self.raft,
				"--peer-state", peer.state, "--peer-raft", peer.raft, "--peer-listen", peer.ep}}
		}
		nodes = []*node{pairNode("primary", pp, bp), pairNode("backup", bp, pp)}
	default:
		var peers []string
		for i := 1; i <= voters; i++ {
			raftAddr := harness.FreeAddr(b)
			n := &node{name: fmt.Sprintf("n%d", i), args: []string{"--raft", "--node-id", fmt.Sprintf("n%d", i), "--raft-bind", raftAddr}}
			nodes = append(nodes, n)
			peers = append(peers, n.name+"="+raftAddr)
		}
		for _, n := range nodes {
			n.args = append(n.args, "--peers", strings.Join(peers, ","))
		}
	}
	for _, n := range nodes {
		if n.ep == "" {
			n.ep = harness.FreeEndpoint(b)
		}
		n.http = harness.FreeAddr(b)
	}
	// A node says it is ready once bound, before it has a quorum or has
	// heard its peer: one after the other is enough.
	for _, n := range nodes {
		n.p = harness.Broker(b, "bench-"+n.name, n.ep, b.TempDir(), append([]string{"--http-listen", n.http}, n.args...)...)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	get := func(b *testing.B, n *node, path string, v any) {
		b.Helper()
		resp, err := hc.Get("http://" + n.http + path)
		if err != nil {
			b.Fatalf("GET %s on %s: %v\n%s", path, n.name, err, n.p.Tail())
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("GET %s on %s: %s", path, n.name, resp.Status)
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			b.Fatalf("GET %s on %s: %v", path, n.name, err)
		}
	}
	// The serving node answers /healthz 200 (the others 503); the HTTP
	// listener may come up just after the broker's socket.
	var serving *node
	deadline := time.Now().Add(30 * time.Second)
	for serving == nil {
		for _, n := range nodes {
			resp, err := hc.Get("http://" + n.http + "/healthz")
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				serving = n
				break
			}
		}
		if serving != nil {
			break
		}
		if time.Now().After(deadline) {
			var logs strings.Builder
			for _, n := range nodes {
				fmt.Fprintf(&logs, "--- %s\n%s\n", n.name, n.p.Tail())
			}
			b.Fatalf("no node serves within 30s:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &target{
		endpoint: serving.ep,
		brokerCPU: func() (time.Duration, bool) {
			var sum time.Duration
			for _, n := range nodes {
				d, ok := pidCPU(n.p.PID())
				if !ok {
					return 0, false
				}
				sum += d
			}
			return sum, true
		},
		commits: func(b *testing.B) uint64 {
			var st struct {
				Commits uint64 `json:"commits"`
			}
			get(b, serving, "/api/v1/stats", &st)
			return st.Commits
		},
		workers: func(b *testing.B) int {
			var ws struct {
				Workers []struct {
					Service string `json:"service"`
					Workers int    `json:"workers"`
				} `json:"workers"`
			}
			get(b, serving, "/api/v1/workers", &ws)
			for _, w := range ws.Workers {
				if w.Service == service {
					return w.Workers
				}
			}
			return 0
		},
		stop: func() {
			for _, n := range nodes {
				if err := n.p.Stop(10 * time.Second); err != nil {
					b.Errorf("stop %s: %v", n.name, err)
				}
			}
		},
	}
}

// tspClient is a spec-only 9/TSP client: one DEALER socket, one request
// in flight, owned by one goroutine at a time. It waits for an answer in
// Go's network poller (zsock.Readable on the socket's ZMQ_FD) and moves
// each message in one cgo call (zsock.Frames), as the broker and the Go
// client do: the wire is plain 7/MDP, but the load costs the shared cores
// less than one OS thread per client blocked in zmq_poll would.
type tspClient struct {
	sock   *zmq.Socket
	wire   *wire
	header []byte
}

// wire sends and receives whole messages on one socket, waiting in Go's
// poller when it can (zmq_poll when the descriptor cannot be watched).
type wire struct {
	frames *zsock.Frames
	ready  *zsock.Readable
	poller *zmq.Poller
}

func newWire(s *zmq.Socket) *wire {
	w := &wire{frames: zsock.NewFrames(s)}
	if r, err := zsock.NewReadable(s); err == nil {
		w.ready = r
	} else {
		w.poller = zmq.NewPoller()
		w.poller.Add(s, zmq.POLLIN)
	}
	return w
}

// recv waits until deadline for a message: nil, nil when none came.
func (w *wire) recv(deadline time.Time) ([][]byte, error) {
	for {
		msg, err := w.frames.Recv(zmq.DONTWAIT)
		if err == nil || zmq.AsErrno(err) != zmq.Errno(syscall.EAGAIN) {
			return msg, err
		}
		if w.ready != nil {
			err = w.ready.Wait(deadline)
			if errors.Is(err, zsock.ErrTimeout) {
				return nil, nil
			}
		} else {
			var polled []zmq.Polled
			polled, err = w.poller.Poll(time.Until(deadline))
			if err == nil && len(polled) == 0 {
				return nil, nil
			}
		}
		if err != nil {
			return nil, err
		}
	}
}

func (w *wire) close() {
	if w.ready != nil {
		_ = w.ready.Close()
	}
}

func newTSPClient(zctx *zmq.Context, endpoint string) (*tspClient, error) {
	s, err := zctx.NewSocket(zmq.DEALER)
	if err != nil {
		return nil, err
	}
	_ = s.SetLinger(0)
	if err := s.Connect(endpoint); err != nil {
		s.Close()
		return nil, err
	}
	return &tspClient{sock: s, wire: newWire(s), header: []byte("MDPC01")}, nil
}

// call sends one 7/MDP client request and returns the reply's body (the
// frames after the service name).
func (c *tspClient) call(svc string, body ...[]byte) ([][]byte, error) {
	msg := append([][]byte{nil, c.header, []byte(svc)}, body...)
	if _, err := c.wire.frames.Send(msg, 0); err != nil {
		return nil, fmt.Errorf("send %s: %w", svc, err)
	}
	rep, err := c.wire.recv(time.Now().Add(rpcTimeout))
	if err != nil {
		return nil, fmt.Errorf("receive %s: %w", svc, err)
	}
	if rep == nil {
		return nil, fmt.Errorf("%s: no answer within %s", svc, rpcTimeout)
	}
	if len(rep) < 4 || len(rep[0]) != 0 || string(rep[1]) != "MDPC01" || string(rep[2]) != svc {
		return nil, fmt.Errorf("%s: malformed answer %q", svc, rep)
	}
	return rep[3:], nil
}

// request is titanic.request: the ticket, once the request is durable.
func (c *tspClient) request() (string, error) {
	rep, err := c.call("titanic.request", []byte(service), make([]byte, bodySize))
	if err != nil {
		return "", err
	}
	if len(rep) != 2 || string(rep[0]) != "200" {
		return "", fmt.Errorf("titanic.request: answered %q", rep)
	}
	return string(rep[1]), nil
}

// errPending is a 300 from titanic.reply.
var errPending = errors.New("pending")

// reply is one titanic.reply lookup.
func (c *tspClient) reply(ticket string) error {
	rep, err := c.call("titanic.reply", []byte(ticket))
	if err != nil {
		return err
	}
	switch {
	case len(rep) == 2 && string(rep[0]) == "200" && len(rep[1]) == bodySize:
		return nil
	case len(rep) >= 1 && string(rep[0]) == "300":
		return errPending
	}
	return fmt.Errorf("titanic.reply %s: answered %q", ticket, rep)
}

// fetch polls titanic.reply until the ticket's reply is there, backing
// off from 1ms to 16ms while it is pending.
func (c *tspClient) fetch(ticket string) error {
	wait := time.Millisecond
	deadline := time.Now().Add(10 * time.Minute)
	for {
		err := c.reply(ticket)
		if !errors.Is(err, errPending) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still pending after 10 minutes", ticket)
		}
		time.Sleep(wait)
		wait = min(2*wait, 16*time.Millisecond)
	}
}

// tspClients connects count spec-only clients on one ZeroMQ context,
// closed (with the context) by the returned function.
func tspClients(b *testing.B, endpoint string, count int) ([]*tspClient, func()) {
	b.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		b.Fatal(err)
	}
	cs := make([]*tspClient, 0, count)
	closeAll := func() {
		for _, c := range cs {
			c.wire.close()
			_ = c.sock.Close()
		}
		_ = zctx.Term()
	}
	for range count {
		c, err := newTSPClient(zctx, endpoint)
		if err != nil {
			closeAll()
			b.Fatal(err)
		}
		cs = append(cs, c)
	}
	return cs, closeAll
}

// mdpWorkers starts count spec-only 7/MDP echo workers on one ZeroMQ
// context (a goroutine owns each socket) and waits until the broker has
// them all. The returned function stops them.
func mdpWorkers(b *testing.B, t *target, count int) func() {
	b.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	stop := func() {
		cancel()
		wg.Wait()
		_ = zctx.Term()
	}
	for range count {
		s, err := zctx.NewSocket(zmq.DEALER)
		if err == nil {
			_ = s.SetLinger(0)
			err = s.Connect(t.endpoint)
		}
		if err != nil {
			stop()
			b.Fatalf("mdp worker: %v", err)
		}
		wg.Go(func() {
			defer s.Close()
			if err := mdpEcho(ctx, s); err != nil {
				b.Errorf("mdp worker: %v", err)
			}
		})
	}
	deadline := time.Now().Add(20 * time.Second)
	for t.workers(b) < count {
		if time.Now().After(deadline) {
			stop()
			b.Fatalf("only %d of %d workers registered within 20s", t.workers(b), count)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return stop
}

// mdpEcho runs a 7/MDP echo worker of service on s until ctx ends.
func mdpEcho(ctx context.Context, s *zmq.Socket) error {
	header := []byte("MDPW01")
	w := newWire(s)
	defer w.close()
	if _, err := w.frames.Send([][]byte{nil, header, {mdpwReady}, []byte(service)}, 0); err != nil {
		return err
	}
	for ctx.Err() == nil {
		msg, err := w.recv(time.Now().Add(50 * time.Millisecond))
		if err != nil || len(msg) < 3 || len(msg[2]) != 1 {
			continue
		}
		switch msg[2][0] {
		case mdpwRequest: // [empty, header, REQUEST, client, empty, body...]
			if len(msg) < 5 {
				continue
			}
			reply := append([][]byte{nil, header, {mdpwReply}, msg[3], nil}, msg[5:]...)
			if _, err := w.frames.Send(reply, 0); err != nil {
				return fmt.Errorf("send reply: %w", err)
			}
		case mdpwHeartbeat:
			_, _ = w.frames.Send([][]byte{nil, header, {mdpwHeartbeat}}, 0)
		case mdpwDisconnect:
			return errors.New("disconnected by the broker")
		}
	}
	_, _ = w.frames.Send([][]byte{nil, header, {mdpwDisconnect}}, 0)
	return nil
}

// reportTable reports a table row's metrics: the rate (unit
// "<what>s/s"), p50 and p99 submit latency, commits per op, x-fsync, and
// the CPU spent per op since before: load-cpu-us/op, the test process's
// (the spec-only load), and broker-cpu-us/op, that of every broker
// process of the deployment.
func reportTable(b *testing.B, t *target, what string, ops int, lats []time.Duration, elapsed time.Duration, commits uint64, before cpuMark) {
	after := t.cpuMark()
	if load := after.load - before.load; load > 0 {
		b.ReportMetric(float64(load.Microseconds())/float64(ops), "load-cpu-us/op")
	}
	if after.brokerKnown && before.brokerKnown {
		b.ReportMetric(float64((after.broker-before.broker).Microseconds())/float64(ops), "broker-cpu-us/op")
	}
	slices.Sort(lats)
	rate := float64(ops) / elapsed.Seconds()
	b.ReportMetric(rate, what+"s/s")
	b.ReportMetric(percentile(lats, 0.50), "p50-ms")
	b.ReportMetric(percentile(lats, 0.99), "p99-ms")
	b.ReportMetric(float64(commits)/float64(ops), "commits/op")
	b.ReportMetric(rate/rawFsyncRate(b), "x-fsync")
}

// BenchmarkTableJobs: durable jobs per second end to end, from the first
// titanic.request to the last reply fetched by a client with
// titanic.reply, while 64 spec-only clients submit (one request in flight
// each; a client submits its share, then fetches its replies) and 1, 8 or
// 64 spec-only echo workers answer.
func BenchmarkTableJobs(b *testing.B) {
	rawFsyncRate(b)
	for _, mode := range tableModes {
		for _, nw := range workerCounts {
			t := startTarget(b, mode.voters)
			stopWorkers := mdpWorkers(b, t, nw)
			cs, closeClients := tspClients(b, t.endpoint, jobClients)
			// Connect every client, and let the workers answer, before
			// the clock starts.
			for _, c := range cs {
				ticket, err := c.request()
				if err == nil {
					err = c.fetch(ticket)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.Run(fmt.Sprintf("mode=%s/workers=%d/clients=%d", mode.name, nw, jobClients), func(b *testing.B) {
				before := t.commits(b)
				cpu := t.cpuMark()
				var (
					next   atomic.Int64
					failed atomic.Bool
					wg     sync.WaitGroup
					lats   = make([][]time.Duration, len(cs))
				)
				b.ResetTimer()
				start := time.Now()
				for i, c := range cs {
					wg.Go(func() {
						var tickets []string
						for next.Add(1) <= int64(b.N) && !failed.Load() {
							t0 := time.Now()
							ticket, err := c.request()
							if err != nil {
								failed.Store(true)
								b.Error(err)
								return
							}
							lats[i] = append(lats[i], time.Since(t0))
							tickets = append(tickets, ticket)
						}
						for _, ticket := range tickets {
							if err := c.fetch(ticket); err != nil {
								failed.Store(true)
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				reportTable(b, t, "job", b.N, slices.Concat(lats...), elapsed, t.commits(b)-before, cpu)
			})
			closeClients()
			stopWorkers()
			t.stop()
		}
	}
}

// BenchmarkTableSubmit: durable submits per second (titanic.request,
// answered once the request is durable) from 1, 8 and 64 spec-only
// clients, one request in flight each, no worker for the service.
func BenchmarkTableSubmit(b *testing.B) {
	rawFsyncRate(b)
	for _, mode := range tableModes {
		for _, nc := range clientCounts {
			t := startTarget(b, mode.voters)
			cs, closeClients := tspClients(b, t.endpoint, nc)
			for _, c := range cs {
				if _, err := c.request(); err != nil {
					b.Fatal(err)
				}
			}
			b.Run(fmt.Sprintf("mode=%s/clients=%d", mode.name, nc), func(b *testing.B) {
				before := t.commits(b)
				cpu := t.cpuMark()
				var (
					next   atomic.Int64
					failed atomic.Bool
					wg     sync.WaitGroup
					lats   = make([][]time.Duration, len(cs))
				)
				b.ResetTimer()
				start := time.Now()
				for i, c := range cs {
					wg.Go(func() {
						for next.Add(1) <= int64(b.N) && !failed.Load() {
							t0 := time.Now()
							if _, err := c.request(); err != nil {
								failed.Store(true)
								b.Error(err)
								return
							}
							lats[i] = append(lats[i], time.Since(t0))
						}
					})
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				reportTable(b, t, "submit", b.N, slices.Concat(lats...), elapsed, t.commits(b)-before, cpu)
			})
			closeClients()
			t.stop()
		}
	}
}

// BenchmarkTablePipelined: durable submits per second from one Go client
// with -bench.window submits in flight (SubmitAsync, acknowledged as they
// become durable), against the built binary as every other row of the
// table: the broker in a process of its own, with its defaults (its
// collector settings among them), the client in the test process;
// latencies as submitPipelined takes them.
func BenchmarkTablePipelined(b *testing.B) {
	rawFsyncRate(b)
	t := startTarget(b, 0)
	defer t.stop()
	c, err := client.New(client.Config{Brokers: []string{t.endpoint}, Timeout: 5 * time.Second, Retries: 3, Logger: quiet, MaxPending: *window})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Submit(context.Background(), service, body(), submitOptions()); err != nil {
		b.Fatal(err)
	}
	b.Run(fmt.Sprintf("mode=single/window=%d", *window), func(b *testing.B) {
		before := t.commits(b)
		cpu := t.cpuMark()
		lats, elapsed := submitPipelined(b, c)
		reportTable(b, t, "submit", b.N, lats, elapsed, t.commits(b)-before, cpu)
	})
}
