package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
)

// Peering faults: real brokers (bin/titanic) on 127.0.0.1, and raw zmq
// sockets standing in for a peer that misbehaves.

// waitLog waits (bounded) until p's log has a line containing s.
func waitLog(t *testing.T, p *harness.Process, s string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		b, _ := os.ReadFile(p.Log)
		if bytes.Contains(b, []byte(s)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log within %s\n%s", s, within, p.Tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fakePeer is a raw stand-in for peer B: a ROUTER bound at B's cloud
// endpoint (routing id "B") and a PUB at its state endpoint. It is driven
// from the test goroutine only (zmq sockets are not thread-safe).
type fakePeer struct {
	t          *testing.T
	ctx        *zmq.Context
	front, pub *zmq.Socket
	run        string
	closed     bool
}

func newFakePeer(t *testing.T, c *peerCluster) *fakePeer {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	fp := &fakePeer{t: t, ctx: zctx, run: "fake1"}
	t.Cleanup(fp.close)
	if fp.front, err = zctx.NewSocket(zmq.ROUTER); err != nil {
		t.Fatal(err)
	}
	_ = fp.front.SetLinger(0)
	_ = fp.front.SetIdentity(c.name)
	_ = fp.front.SetRouterMandatory(1)
	if err := fp.front.Bind(c.cloud); err != nil {
		t.Fatal(err)
	}
	if fp.pub, err = zctx.NewSocket(zmq.PUB); err != nil {
		t.Fatal(err)
	}
	_ = fp.pub.SetLinger(0)
	if err := fp.pub.Bind(c.state); err != nil {
		t.Fatal(err)
	}
	return fp
}

func (fp *fakePeer) close() {
	if fp.closed {
		return
	}
	fp.closed = true
	for _, s := range []*zmq.Socket{fp.front, fp.pub} {
		if s != nil {
			_ = s.Close()
		}
	}
	_ = fp.ctx.Term()
}

// state publishes B's state: spare capacity of service, and held jobs of
// origin.
func (fp *fakePeer) state(service string, spare int, origin string, held int) {
	msg := []any{"TPEER01", "STATE", "B", fp.run, service, strconv.Itoa(spare)}
	if held > 0 {
		msg = append(msg, "", origin, service, strconv.Itoa(held))
	}
	if _, err := fp.pub.SendMessage(msg...); err != nil {
		fp.t.Fatalf("publish state: %v", err)
	}
}

// heardBy publishes B's state (spare for service) every 50 ms until
// the broker of a logs B up, within 15 s.
func (fp *fakePeer) heardBy(a *peerCluster, service string, spare int) {
	fp.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		fp.state(service, spare, "", 0)
		lb, _ := os.ReadFile(a.p.Log)
		if bytes.Contains(lb, []byte(`msg="peer up"`)) {
			return
		}
		if time.Now().After(deadline) {
			fp.t.Fatalf("A never heard B\n%s", a.p.Tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// awaitRequest publishes B's state (spare 1 for service) every 100 ms
// until a REQUEST arrives on the cloud front, and returns its frames
// (origin, "", TPEER01, REQUEST, token, service, body...).
func (fp *fakePeer) awaitRequest(service string, within time.Duration) [][]byte {
	fp.t.Helper()
	poller := zmq.NewPoller()
	poller.Add(fp.front, zmq.POLLIN)
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		fp.state(service, 1, "", 0)
		polled, err := poller.Poll(100 * time.Millisecond)
		if err != nil {
			fp.t.Fatal(err)
		}
		if len(polled) == 0 {
			continue
		}
		msg, err := fp.front.RecvMessageBytes(0)
		if err != nil {
			fp.t.Fatal(err)
		}
		if len(msg) >= 6 && string(msg[3]) == "REQUEST" {
			return msg
		}
	}
	fp.t.Fatalf("no request forwarded to the fake peer within %s", within)
	return nil
}

// submitJob submits body to "echo" at ep, and returns the client, a
// context that ends with the test (within a minute), and the ticket.
func submitJob(t *testing.T, ep, body string) (*client.Client, context.Context, string) {
	t.Helper()
	cl := newClient(t, ep)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	tk, err := cl.Submit(ctx, "echo", [][]byte{[]byte(body)}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cl, ctx, tk
}

// TestPeeringOneSidedConfigFailsLoudly: C lists A as a peer, A does not
// list C yet (a cluster being added: C is configured first, A restarted
// with the new list later). A publishes its capacity to anyone who
// subscribes, so C books A's idle worker. A refuses C's requests with a
// FAIL that says why, and logs it: C's ticket fails at once with that
// reason instead of waiting out a peer lease per attempt with no word of
// why on either side.
func TestPeeringOneSidedConfigFailsLoudly(t *testing.T) {
	cs := newPeerClusters(t, "A", "C")
	a, c := cs[0], cs[1]
	a.start(t, []*peerCluster{a}) // no peers yet
	// Peer leases (60 s) longer than the test's wait: only A's answer
	// can end the attempts in time.
	c.start(t, cs, "--lease-timeout", "60s", "--backoff-base", "100ms", "--backoff-max", "200ms")
	harness.Start(t, "worker-a", "worker running", "worker", "--broker", a.ep, "--heartbeat", "200ms", "echo", "--", "cat")
	waitLog(t, c.p, `msg="peer up"`, 15*time.Second)
	cl, ctx, tk := submitJob(t, c.ep, "job")
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := cl.Status(ctx, tk)
		if err != nil {
			t.Fatal(err)
		}
		if st.State == "failed" {
			if !strings.Contains(st.Reason, "not a configured peer") {
				t.Fatalf("ticket %s failed with %q; want the reason to say C is not a configured peer of A", tk, st.Reason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ticket %s at C still %s after 20 s, with A (which does not list C) refusing it\nA:\n%s\nC:\n%s", tk, st.State, a.p.Tail(), c.p.Tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitLog(t, a.p, "not a configured peer", 5*time.Second)
}

// TestPeerAnswerWithUnknownCommandKeepsLease: peer B answers a job it was
// sent with a message whose command is neither REPLY nor FAIL (a newer or
// buggy peer), then goes away for good. A must keep its lease for the job
// until B is lost or the lease runs out, and then hand the ticket to its
// own worker; dropping the lease on that message would leave the ticket
// dispatched, wedged until A restarts.
func TestPeerAnswerWithUnknownCommandKeepsLease(t *testing.T) {
	cs := newPeerClusters(t, "A", "B")
	a, b := cs[0], cs[1]
	fp := newFakePeer(t, b)
	a.start(t, cs, "--lease-timeout", "2s", "--backoff-base", "-1s")
	cl, ctx, tk := submitJob(t, a.ep, "job")
	req := fp.awaitRequest("echo", 15*time.Second)
	if _, err := fp.front.SendMessage(req[0], "", "TPEER01", "PROGRESS", req[4]); err != nil {
		t.Fatal(err)
	}
	fp.state("echo", 0, "", 0)
	fp.close()
	harness.Start(t, "worker-a", "worker running", "worker", "--broker", a.ep, "--heartbeat", "200ms", "echo", "--", "cat")
	waitLog(t, a.p, `msg="peer lost`, 15*time.Second)
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	rep, err := cl.Reply(rctx, tk, client.ReplyOptions{Wait: true})
	if err != nil {
		st, serr := cl.Status(ctx, tk)
		t.Fatalf("ticket %s not answered within 20 s of B's loss, with a local worker idle: %v; status %+v %v\nA:\n%s", tk, err, st, serr, a.p.Tail())
	}
	if string(bytes.Join(rep, nil)) != "job" {
		t.Fatalf("reply %q", rep)
	}
}

// dealerAt connects a raw DEALER of routing id (none: "") to endpoint
// ep; it is closed when the test ends.
func dealerAt(t *testing.T, ep, id string) *zmq.Socket {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	d, err := zctx.NewSocket(zmq.DEALER)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(); _ = zctx.Term() })
	_ = d.SetLinger(0)
	if id != "" {
		_ = d.SetIdentity(id)
	}
	if err := d.Connect(ep); err != nil {
		t.Fatal(err)
	}
	return d
}

// httpGet returns the body of a 200 answer to GET url.
func httpGet(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v %s", url, resp.StatusCode, err, b)
	}
	return b
}

// peerCapacity returns the capacity of peer that the cluster API at
// httpAddr reports (0 for a peer it says is dead), and the API's answer.
func peerCapacity(t *testing.T, httpAddr, peer string) (int, string) {
	t.Helper()
	body := httpGet(t, "http://"+httpAddr+"/api/v1/cluster")
	var cj struct {
		Peers []struct {
			Name     string `json:"name"`
			Capacity int    `json:"capacity"`
			Alive    *bool  `json:"alive"`
		} `json:"peers"`
	}
	if err := json.Unmarshal(body, &cj); err != nil {
		t.Fatalf("cluster JSON %s: %v", body, err)
	}
	for _, p := range cj.Peers {
		if p.Name == peer {
			if p.Alive != nil && !*p.Alive {
				return 0, string(body)
			}
			return p.Capacity, string(body)
		}
	}
	t.Fatalf("peer %s not in %s", peer, body)
	return 0, ""
}

// TestPeerReplyOverMaxMessageSizeRefused: A runs with --max-message-size
// 1MiB, under which a worker's larger reply is refused (README, Limits).
// A peer's REPLY of 4 MiB on the cloud link must be refused as well, not
// taken whole and recorded as the ticket's reply.
func TestPeerReplyOverMaxMessageSizeRefused(t *testing.T) {
	cs := newPeerClusters(t, "A", "B")
	a, b := cs[0], cs[1]
	fp := newFakePeer(t, b)
	a.start(t, cs, "--max-message-size", "1MiB")
	cl, ctx, tk := submitJob(t, a.ep, "job")
	req := fp.awaitRequest("echo", 15*time.Second)
	big := bytes.Repeat([]byte("x"), 4<<20)
	if _, err := fp.front.SendMessage(req[0], "", "TPEER01", "REPLY", req[4], big); err != nil {
		t.Fatal(err)
	}
	// Give A the time to take it (or refuse it), keeping B alive.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st, err := cl.Status(ctx, tk)
		if err == nil && st.State == "done" {
			break
		}
		fp.state("echo", 0, "A", 1)
		time.Sleep(100 * time.Millisecond)
	}
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	defer rcancel()
	rep, err := cl.Reply(rctx, tk, client.ReplyOptions{})
	if err == nil && len(bytes.Join(rep, nil)) > 1<<20 {
		t.Fatalf("ticket %s done with a %d-byte reply from peer B, over A's --max-message-size of 1 MiB (a local worker's such reply is refused)", tk, len(bytes.Join(rep, nil)))
	}
	if err != nil && !errors.Is(err, client.ErrPending) && !errors.Is(err, context.DeadlineExceeded) {
		t.Logf("reply: %v", err)
	}
}

// TestCloudEndpointFrameOverMaxMessageSizeRefused: anyone who reaches A's
// cloud endpoint (no peer name needed: the frame is read before its
// sender is checked) sends one 128 MiB frame. A runs with
// --max-message-size 1MiB, which must bound the cloud endpoint as it does
// the client endpoint (README: a larger frame drops the connection), not
// take the frame into memory.
func TestCloudEndpointFrameOverMaxMessageSizeRefused(t *testing.T) {
	cs := newPeerClusters(t, "A", "B")
	a := cs[0]
	a.start(t, cs, "--max-message-size", "1MiB")
	base := peakRSS(t, a.p.PID())
	d := dealerAt(t, a.cloud, "X")
	if _, err := d.SendMessage("", make([]byte, 128<<20)); err != nil {
		t.Fatal(err)
	}
	// Until A would have taken it in (its high-water mark jumps), 10 s.
	limit := base + 64<<20
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if hwm := peakRSS(t, a.p.PID()); hwm > limit {
			t.Fatalf("one 128 MiB frame sent to A's cloud endpoint by an unknown sender took A's peak memory from %d MiB to %d MiB, though --max-message-size is 1 MiB", base>>20, hwm>>20)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if a.p.Exited() {
		t.Fatalf("A exited:\n%s", a.p.Tail())
	}
}

// TestCloudRequestHugeTokensNotQueued: plain requests queued at a broker
// are bounded in bytes (README, Limits: 256 MiB). A request that comes on
// the cloud endpoint is held with its token in its route: a sender that
// names itself as a configured peer (the cloud endpoint takes anyone)
// must not queue 4 MiB tokens with a 1-byte body past the bound.
func TestCloudRequestHugeTokensNotQueued(t *testing.T) {
	cs := newPeerClusters(t, "A", "B")
	a := cs[0]
	httpA := harness.FreeAddr(t)
	a.start(t, cs, "--http-listen", httpA, "--log-level", "info") // B never runs
	d := dealerAt(t, a.cloud, "B")
	const n, tokenSize = 80, 4 << 20
	tok := bytes.Repeat([]byte("t"), tokenSize)
	for i := range n {
		copy(tok, fmt.Sprintf("%08d", i))
		if _, err := d.SendMessage("", "TPEER01", "REQUEST", tok, "nobody", "x"); err != nil {
			t.Fatal(err)
		}
	}
	queued := func() int {
		var st struct {
			Workers []struct {
				Service  string `json:"service"`
				Requests int    `json:"requests"`
			} `json:"workers"`
		}
		if err := json.Unmarshal(httpGet(t, "http://"+httpA+"/api/v1/workers"), &st); err != nil {
			t.Fatal(err)
		}
		for _, w := range st.Workers {
			if w.Service == "nobody" {
				return w.Requests
			}
		}
		return 0
	}
	// Until A has read them all (queued or dropped: the count stops
	// moving), within 20 s.
	last, since := -1, time.Now()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		q := queued()
		if q != last {
			last, since = q, time.Now()
		}
		if q == n || time.Since(since) > 2*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if held := int64(last) * tokenSize; held > 256<<20 {
		t.Fatalf("A queued %d cloud requests of a %d MiB token each (%d MiB), past the 256 MiB bound on queued plain requests", last, tokenSize>>20, held>>20)
	}
}

// TestPeerStateServiceNamesDoNotLeak: peer B's state names a different
// set of services in each message (500 names of 200 bytes; a peer whose
// workers come and go, or a hostile one). A's broker forgets each set
// once the next state no longer names it; so must its titanic
// dispatcher, or A's memory grows by the names for as long as it runs.
func TestPeerStateServiceNamesDoNotLeak(t *testing.T) {
	cs := newPeerClusters(t, "A", "B")
	a, b := cs[0], cs[1]
	fp := newFakePeer(t, b)
	httpA := harness.FreeAddr(t)
	a.start(t, cs, "--http-listen", httpA, "--log-level", "info")
	fp.heardBy(a, "warmup", 1)
	rss := func() int64 {
		v, err := harness.ProcStatus(a.p.PID(), "VmRSS")
		if err != nil {
			t.Skip(err)
		}
		return v
	}
	base := rss()
	pad := strings.Repeat("s", 190)
	const rounds, per = 2000, 500
	for r := range rounds {
		msg := []any{"TPEER01", "STATE", "B", fp.run}
		for i := range per {
			msg = append(msg, fmt.Sprintf("%s-%d-%d", pad, r, i), "1")
		}
		if _, err := fp.pub.SendMessage(msg...); err != nil {
			t.Fatal(err)
		}
		if r%50 == 0 {
			time.Sleep(20 * time.Millisecond) // below the PUB's high-water mark
		}
	}
	// The last state names none of those: every name is gone at A's
	// broker once A reports its capacity (7, which no state before had).
	fp.state("final", 7, "", 0)
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, body := peerCapacity(t, httpA, "B")
		if n == 7 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A has not read B's last state within 30 s: %s\n%s", body, a.p.Tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	grown := rss() - base
	if grown > 256<<20 {
		t.Fatalf("A's resident memory grew by %d MiB after B's states named %d services in turn, none of them still named", grown>>20, rounds*per)
	}
	t.Logf("A grew by %d MiB", grown>>20)
}

// TestWorkerServiceNamesDoNotLeak is TestPeerStateServiceNamesDoNotLeak
// from the client endpoint, which anyone may reach (no peering needed):
// one connection sends READY for a new service name (200 bytes) and
// DISCONNECT, 300,000 times. The broker forgets each service as its
// worker leaves, and so must the titanic dispatcher.
func TestWorkerServiceNamesDoNotLeak(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	p := harness.Broker(t, "A", ep, t.TempDir(), "--log-level", "info")
	d := dealerAt(t, ep, "")
	rss := func() int64 {
		v, err := harness.ProcStatus(p.PID(), "VmRSS")
		if err != nil {
			t.Skip(err)
		}
		return v
	}
	// A round trip (mmi.service): the broker has read everything sent
	// before it.
	sync := func() {
		t.Helper()
		if _, err := d.SendMessage("", "MDPC01", "mmi.service", "x"); err != nil {
			t.Fatal(err)
		}
		_ = d.SetRcvtimeo(30 * time.Second)
		for {
			msg, err := d.RecvMessage(0)
			if err != nil {
				t.Fatalf("no answer to mmi.service: %v", err)
			}
			if len(msg) >= 3 && msg[2] == "mmi.service" {
				return
			}
		}
	}
	sync()
	base := rss()
	pad := strings.Repeat("w", 190)
	const n = 300000
	for i := range n {
		if _, err := d.SendMessage("", "MDPW01", "\x01", fmt.Sprintf("%s-%d", pad, i)); err != nil {
			t.Fatal(err)
		}
		if _, err := d.SendMessage("", "MDPW01", "\x05"); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 0 {
			sync()
		}
	}
	sync()
	grown := rss() - base
	if grown > 128<<20 {
		t.Fatalf("the broker's resident memory grew by %d MiB after %d workers came and went, each for a service of its own, none left", grown>>20, n)
	}
	t.Logf("grew by %d MiB", grown>>20)
}

// TestPeerClaimingCapacityItNeverUsesCannotFailTickets: peer B advertises
// a spare capacity of 1,000,000 for "echo" in every state and takes every
// job without ever counting it as held or answering it (a hostile or
// broken peer). A has a worker of its own. Once B's leases run out
// uncounted, A must stop booking B for every pending ticket, or the
// tickets burn their attempts on B and fail, never run, while A's own
// worker could have answered them all in a few seconds.
func TestPeerClaimingCapacityItNeverUsesCannotFailTickets(t *testing.T) {
	cs := newPeerClusters(t, "A", "B")
	a, b := cs[0], cs[1]
	fp := newFakePeer(t, b)
	a.start(t, cs, "--lease-timeout", "1s", "--backoff-base", "100ms", "--backoff-max", "200ms")
	harness.Start(t, "worker-a", "worker running", "worker", "--broker", a.ep, "--heartbeat", "200ms", "echo", "--", "sh", "-c", "sleep 0.1; cat")
	cl := newClient(t, a.ep)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fp.heardBy(a, "echo", 1000000)
	const n = 20
	var tks []string
	for i := range n {
		tk, err := cl.Submit(ctx, "echo", [][]byte{fmt.Appendf(nil, "j%d", i)}, client.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tks = append(tks, tk)
	}
	// B keeps advertising, takes every request, answers none, for 15 s:
	// 5 attempts of 1 s leases and 100-200 ms pauses fit in it.
	poller := zmq.NewPoller()
	poller.Add(fp.front, zmq.POLLIN)
	taken := 0
	end := time.Now().Add(15 * time.Second)
	for time.Now().Before(end) {
		fp.state("echo", 1000000, "", 0)
		polled, err := poller.Poll(100 * time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		for range polled {
			for {
				msg, err := fp.front.RecvMessageBytes(zmq.DONTWAIT)
				if err != nil {
					break
				}
				if len(msg) >= 6 && string(msg[3]) == "REQUEST" {
					taken++
				}
			}
		}
	}
	var failed []string
	for _, tk := range tks {
		st, err := cl.Status(ctx, tk)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != "done" {
			failed = append(failed, tk+": "+st.State+" "+st.Reason)
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d tickets not done after 15 s (B took %d requests, answered none; A's own worker was there all along):\n%s", len(failed), n, taken, strings.Join(failed, "\n"))
	}
}

// metric returns the value of the unlabelled metric name at httpAddr's
// /metrics ("" when absent).
func metric(t *testing.T, httpAddr, name string) string {
	t.Helper()
	for l := range strings.Lines(string(httpGet(t, "http://"+httpAddr+"/metrics"))) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), name+" "); ok {
			return v
		}
	}
	return ""
}

// TestDeadPeerCapacityNotReported: once A has declared its peer B lost
// (B's broker and worker killed), A's cluster API and metrics must not
// report B's last advertised capacity as if B could take work; the
// cluster API says B is dead, and names its endpoints.
func TestDeadPeerCapacityNotReported(t *testing.T) {
	cs := newPeerClusters(t, "A", "B")
	a, b := cs[0], cs[1]
	httpA := harness.FreeAddr(t)
	a.start(t, cs, "--http-listen", httpA)
	b.start(t, cs)
	w := harness.Start(t, "worker-b", "worker running", "worker", "--broker", b.ep, "--heartbeat", "200ms", "echo", "--", "cat")
	deadline := time.Now().Add(15 * time.Second)
	for {
		n, body := peerCapacity(t, httpA, "B")
		if n == 1 {
			if !strings.Contains(body, `"alive":true`) || !strings.Contains(body, `"addr":"`+b.cloud+`"`) || !strings.Contains(body, `"state":"`+b.state+`"`) {
				t.Fatalf("the cluster API does not say B is alive, at %s and %s: %s", b.cloud, b.state, body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A never reported B's idle worker: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.p.Kill()
	w.Kill()
	waitLog(t, a.p, `msg="peer lost`, 15*time.Second)
	body := string(httpGet(t, "http://"+httpA+"/api/v1/cluster"))
	m := metric(t, httpA, "titanic_peer_capacity")
	if !strings.Contains(body, `"alive":false`) || !strings.Contains(body, `"capacity":0`) || m != "0" {
		t.Fatalf("after A logged B lost (B's broker and worker killed): /api/v1/cluster says %s, titanic_peer_capacity %s; want B dead, capacity 0", body, m)
	}
}

// TestSubmitWaitAtCloudFrontNoFalseWarning: A is a cloud front (README:
// "a broker with no workers of its own and only peers"), B has the
// workers of "echo". `titanic submit --wait` at A must not warn "no
// worker serves" (8/MMI at A) while B's worker answers it at once.
func TestSubmitWaitAtCloudFrontNoFalseWarning(t *testing.T) {
	cs := newPeerClusters(t, "A", "B")
	a, b := cs[0], cs[1]
	a.start(t, cs)
	b.start(t, cs)
	harness.Start(t, "worker-b", "worker running", "worker", "--broker", b.ep, "--heartbeat", "200ms", "echo", "--", "cat")
	waitLog(t, a.p, `msg="peer up"`, 15*time.Second)
	// Until A has B's state naming echo: a first ticket is answered.
	cl, ctx, tk := submitJob(t, a.ep, "first")
	if _, err := cl.Reply(ctx, tk, client.ReplyOptions{Wait: true}); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := cliStderr(t, "", "submit", "--broker", a.ep, "--wait", "echo", "second")
	if code != 0 || stdout != "second" {
		t.Fatalf("submit --wait: exit %d, reply %q\n%s", code, stdout, stderr)
	}
	if strings.Contains(stderr, "no worker serves") {
		t.Fatalf("submit --wait at the cloud front A, answered by peer B's worker, warned: %s", strings.TrimSpace(stderr))
	}
}

// TestLateReplyOfLostPeerRecorded: peer B takes A's job and goes silent
// for longer than the peer liveness (3 s): A declares B lost and gives
// its lease up (the ticket waits: B was its only worker). Then B answers
// the job, and its state comes again. README (Guarantees): a lease from
// an earlier dispatch that ends late "ends nothing but itself. Its reply
// is recorded if it is the first": the ticket is answered by B's reply,
// not sent to B again as if it had none.
func TestLateReplyOfLostPeerRecorded(t *testing.T) {
	cs := newPeerClusters(t, "A", "B")
	a, b := cs[0], cs[1]
	fp := newFakePeer(t, b)
	a.start(t, cs)
	cl, ctx, tk := submitJob(t, a.ep, "job")
	req := fp.awaitRequest("echo", 15*time.Second)
	waitLog(t, a.p, `msg="peer lost`, 15*time.Second)
	if _, err := fp.front.SendMessage(req[0], "", "TPEER01", "REPLY", req[4], "late"); err != nil {
		t.Fatal(err)
	}
	// B is back, advertising its worker, and counts the requests it gets.
	poller := zmq.NewPoller()
	poller.Add(fp.front, zmq.POLLIN)
	again := 0
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := cl.Status(ctx, tk)
		if err != nil {
			t.Fatal(err)
		}
		if st.State == "done" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ticket %s still %s 10 s after B's late reply (%d requests sent to B again)\nA:\n%s", tk, st.State, again, a.p.Tail())
		}
		fp.state("echo", 1, "", 0)
		polled, err := poller.Poll(50 * time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(polled) > 0 {
			if msg, err := fp.front.RecvMessageBytes(0); err == nil && len(msg) >= 6 && string(msg[3]) == "REQUEST" {
				again++
			}
		}
	}
	rep, err := cl.Reply(ctx, tk, client.ReplyOptions{})
	if err != nil || string(bytes.Join(rep, nil)) != "late" {
		t.Fatalf("ticket %s answered %q %v; want B's late reply", tk, rep, err)
	}
}

// TestLateReplyOfStoppedPeerRecorded: B's worker runs A's job; B's broker
// is SIGSTOPped for longer than the peer liveness (3 s), and shorter than
// its worker's (6 s), and then SIGCONTed. The worker finished meanwhile,
// so B sends its reply on to A, which gave B's lease up when B went
// silent (the ticket then waits for a worker: B has its only one). README
// (Guarantees): a lease from an earlier dispatch that ends late "ends
// nothing but itself. Its reply is recorded if it is the first": the
// ticket is answered by that reply, and the job does not run again.
func TestLateReplyOfStoppedPeerRecorded(t *testing.T) {
	cs := newPeerClusters(t, "A", "B")
	a, b := cs[0], cs[1]
	a.start(t, cs)
	// B and its worker heartbeat every 2 s (silent for 6 s: dead), so
	// that the worker keeps its connection through B's stop.
	b.p = harness.Broker(t, b.name, b.ep, b.dir, "--peering-name", b.name, "--peering-cloud-listen", b.cloud,
		"--peering-state-listen", b.state, "--peering-peers", a.name+"="+a.cloud+"+"+a.state, "--heartbeat", "2s", "--log-level", "debug")
	execLog := t.TempDir() + "/exec.log"
	harness.Start(t, "worker-b", "worker running", "worker", "--broker", b.ep, "--heartbeat", "2s", "echo", "--",
		"sh", "-c", `read -r x; printf '%s\n' "$x" >> "$1"; sleep 1; printf '%s' "$x"`, "sh", execLog)
	waitLog(t, a.p, `msg="peer up"`, 15*time.Second)
	// Until A has heard B's worker: one ticket through.
	cl, ctx, tk0 := submitJob(t, a.ep, "warmup")
	if _, err := cl.Reply(ctx, tk0, client.ReplyOptions{Wait: true}); err != nil {
		t.Fatal(err)
	}
	tk, err := cl.Submit(ctx, "echo", [][]byte{[]byte("job")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The job reaches B's worker; B stops.
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(execLog)
		if strings.Contains(string(data), "job\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job never reached B's worker\n%s", b.p.Tail())
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.p.Signal(syscall.SIGSTOP)
	waitLog(t, a.p, `msg="peer lost`, 15*time.Second)
	b.p.Signal(syscall.SIGCONT)
	rep, err := cl.Reply(ctx, tk, client.ReplyOptions{Wait: true})
	if err != nil || string(bytes.Join(rep, nil)) != "job" {
		t.Fatalf("reply %q %v", rep, err)
	}
	data, _ := os.ReadFile(execLog)
	if runs := strings.Count(string(data), "job\n"); runs != 1 {
		t.Fatalf("the job ran %d times on B; its first run's reply reached A (B's first message after SIGCONT)\nA:\n%s\nB:\n%s", runs, a.p.Tail(), b.p.Tail())
	}
}
