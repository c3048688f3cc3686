package titanic_test

// Conformance of 9/TSP as the Guide's ticlient and titanic clients speak
// it: raw frames on REQ and DEALER sockets, written from the specs (7/MDP
// client and worker framing, 9/TSP services and codes), against a real
// broker with the titanic service. Nothing here uses package client or
// worker.

import (
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/internal/nodetest"
	"github.com/titanicmq/titanic/titanic"
)

const recvWait = 5 * time.Second

type node struct {
	t    *testing.T
	ep   string
	zctx *zmq.Context
}

// startNode runs a node (package titanic/node, as `titanic broker` wires
// it) on a free port, with the titanic service configured by cfg.
func startNode(t *testing.T, cfg titanic.Config) *node {
	t.Helper()
	nc := nodetest.Config(t.TempDir())
	nc.Service = cfg
	// The raw workers here beat only in answer to the broker's
	// heartbeats, and only while the test reads them: at nodetest's
	// 100 ms the broker expired an idle one (silent 300 ms, as it
	// should) when the loaded test stalled that long, and the test got
	// DISCONNECT instead of its REQUEST (TestTSPRedeliveryAfterWorkerLoss,
	// waiting out the retry's backoff: 5 runs in 40 under -race on two
	// busy cores). A worker's loss is still found at the broker's next
	// heartbeat to it, which its closed connection cannot take.
	nc.Broker.HeartbeatInterval = time.Second
	nd := nodetest.Start(t, nc)
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = zctx.Term() })
	return &node{t: t, ep: nd.Endpoint(), zctx: zctx}
}

func (n *node) socket(kind zmq.Type) *zmq.Socket {
	n.t.Helper()
	s, err := n.zctx.NewSocket(kind)
	if err != nil {
		n.t.Fatal(err)
	}
	_ = s.SetLinger(0)
	_ = s.SetRcvtimeo(recvWait)
	if err := s.Connect(n.ep); err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { _ = s.Close() })
	return s
}

func bs(s ...string) []any {
	out := make([]any, len(s))
	for i, x := range s {
		out[i] = x
	}
	return out
}

// tspRequest sends a 7/MDP client request on a REQ socket, as the Guide's
// mdcliapi does, and returns the body of the reply after checking its
// MDPC01 header and service frame.
func tspRequest(t *testing.T, req *zmq.Socket, service string, body ...string) []string {
	t.Helper()
	if _, err := req.SendMessage(append(bs("MDPC01", service), bs(body...)...)...); err != nil {
		t.Fatalf("send %s: %v", service, err)
	}
	msg, err := req.RecvMessage(0)
	if err != nil {
		t.Fatalf("%s %q: no reply within %s: %v", service, body, recvWait, err)
	}
	if len(msg) < 3 || msg[0] != "MDPC01" || msg[1] != service {
		t.Fatalf("%s: reply frames %q, want [MDPC01 %s ...]", service, msg, service)
	}
	return msg[2:]
}

// rawWorker is a 7/MDP worker on a DEALER socket, as the Guide's mdwrkapi.
type rawWorker struct {
	t *testing.T
	s *zmq.Socket
}

func (n *node) worker(service string) *rawWorker {
	s := n.socket(zmq.DEALER)
	if _, err := s.SendMessage("", "MDPW01", "\x01", service); err != nil {
		n.t.Fatal(err)
	}
	return &rawWorker{t: n.t, s: s}
}

// request waits for a REQUEST, skipping heartbeats, and returns the client
// address frame and the body.
func (w *rawWorker) request() (string, []string) {
	w.t.Helper()
	deadline := time.Now().Add(recvWait)
	for time.Now().Before(deadline) {
		msg, err := w.s.RecvMessage(0)
		if err != nil {
			break
		}
		if len(msg) < 3 || msg[0] != "" || msg[1] != "MDPW01" {
			w.t.Fatalf("worker got %q, not MDPW01", msg)
		}
		switch msg[2] {
		case "\x04":
			_, _ = w.s.SendMessage("", "MDPW01", "\x04")
			continue
		case "\x02":
			if len(msg) < 6 || msg[4] != "" {
				w.t.Fatalf("REQUEST frames %q", msg)
			}
			return msg[3], msg[5:]
		default:
			w.t.Fatalf("worker got command %q", msg[2])
		}
	}
	w.t.Fatalf("no REQUEST within %s", recvWait)
	return "", nil
}

func (w *rawWorker) send(cmd, client string, body ...string) {
	w.t.Helper()
	if _, err := w.s.SendMessage(append(bs("", "MDPW01", cmd, client, ""), bs(body...)...)...); err != nil {
		w.t.Fatal(err)
	}
}

func isTicket(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

// waitFor asks titanic.reply until the code is want.
func waitFor(t *testing.T, req *zmq.Socket, ticket, want string) []string {
	t.Helper()
	deadline := time.Now().Add(recvWait)
	for {
		r := tspRequest(t, req, "titanic.reply", ticket)
		if r[0] == want {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("titanic.reply %s = %q, want %s within %s", ticket, r, want, recvWait)
		}
		time.Sleep(10 * time.Millisecond) // polling is the protocol here
	}
}

func TestTSPLifeCycle(t *testing.T) {
	n := startNode(t, titanic.Config{})
	req := n.socket(zmq.REQ)

	if r := tspRequest(t, req, "mmi.service", "titanic.request"); r[0] != "200" {
		t.Fatalf("mmi.service titanic.request = %q, want 200", r)
	}
	// The Guide's ticlient: [service | body] → [200 | ticket].
	r := tspRequest(t, req, "titanic.request", "echo", "hello", "", "\x00\xff")
	if len(r) != 2 || r[0] != "200" || !isTicket(r[1]) {
		t.Fatalf("titanic.request = %q, want [200 ticket(32 hex)]", r)
	}
	ticket := r[1]
	if r := tspRequest(t, req, "titanic.reply", ticket); r[0] != "300" {
		t.Fatalf("titanic.reply before any worker = %q, want 300", r)
	}

	w := n.worker("echo")
	client, body := w.request()
	if client != ticket || len(body) != 3 || body[0] != "hello" || body[1] != "" || body[2] != "\x00\xff" {
		t.Fatalf("REQUEST client %q body %q; want ticket %s and the submitted frames", client, body, ticket)
	}
	if r := tspRequest(t, req, "titanic.reply", ticket); r[0] != "300" {
		t.Fatalf("titanic.reply while the worker holds it = %q, want 300", r)
	}
	w.send("\x03", client, "HELLO", "")
	r = waitFor(t, req, ticket, "200")
	if len(r) != 3 || r[1] != "HELLO" || r[2] != "" {
		t.Fatalf("titanic.reply = %q, want [200 HELLO \"\"]", r)
	}
	if r := tspRequest(t, req, "titanic.close", ticket); len(r) != 1 || r[0] != "200" {
		t.Fatalf("titanic.close = %q, want [200]", r)
	}
	if r := tspRequest(t, req, "titanic.reply", ticket); r[0] != "400" {
		t.Fatalf("titanic.reply after close = %q, want 400", r)
	}
	if r := tspRequest(t, req, "titanic.close", ticket); r[0] != "200" {
		t.Fatalf("second titanic.close = %q, want 200", r)
	}
}

func TestTSPBadRequests(t *testing.T) {
	n := startNode(t, titanic.Config{})
	req := n.socket(zmq.REQ)
	unknown := strings.Repeat("0", 32)
	cases := []struct {
		service string
		body    []string
		want    string
	}{
		{"titanic.request", []string{"echo"}, "400"},  // no body frame
		{"titanic.request", []string{"", "x"}, "400"}, // empty service
		{"titanic.request", []string{"mmi.service", "x"}, "400"},
		{"titanic.request", []string{"titanic.reply", "x"}, "400"},
		{"titanic.request", []string{strings.Repeat("s", 256), "x"}, "400"},
		{"titanic.reply", []string{""}, "400"},
		{"titanic.reply", []string{"not-a-ticket"}, "400"},
		{"titanic.reply", []string{unknown}, "400"},
		{"titanic.reply", []string{unknown, unknown}, "400"},
		{"titanic.close", []string{""}, "200"},
		{"titanic.close", []string{unknown}, "200"},
		{"titanic.nothing", []string{"x"}, "400"},
		// No body frame at all, which 7/MDP does not allow: the broker
		// answers for its own services rather than drop it in silence.
		{"titanic.request", nil, "400"},
		{"titanic.reply", nil, "400"},
	}
	for _, c := range cases {
		r := tspRequest(t, req, c.service, c.body...)
		if r[0] != c.want {
			t.Errorf("%s %q = %q, want %s", c.service, c.body, r, c.want)
		}
		if c.want != "200" && (len(r) != 2 || r[1] == "") {
			t.Errorf("%s %q = %q: want a text frame saying why", c.service, c.body, r)
		}
	}
	// The service frame missing altogether (only the header): 7/MDP calls
	// that invalid; the broker drops it. A DEALER sees no answer, and the
	// broker still serves the next request.
	d := n.socket(zmq.DEALER)
	_, _ = d.SendMessage("", "MDPC01")
	if r := tspRequest(t, req, "titanic.reply", unknown); r[0] != "400" {
		t.Fatalf("broker stopped answering after a malformed request: %q", r)
	}
}

func TestTSPFailureVisible(t *testing.T) {
	n := startNode(t, titanic.Config{MaxAttempts: 2, NoWorkerTimeout: 200 * time.Millisecond})
	req := n.socket(zmq.REQ)

	// A worker that reports failure twice: the ticket fails for good.
	r := tspRequest(t, req, "titanic.request", "flaky", "x")
	ticket := r[1]
	w := n.worker("flaky")
	for i := range 2 {
		client, _ := w.request()
		if client != ticket {
			t.Fatalf("attempt %d: client %q, want %s", i+1, client, ticket)
		}
		w.send("\x0f", client, "boom")
	}
	r = waitFor(t, req, ticket, "500")
	if len(r) != 2 || !strings.HasPrefix(r[1], "failed: ") || !strings.Contains(r[1], "boom") {
		t.Fatalf("failed ticket = %q, want [500 \"failed: ...boom\"]", r)
	}

	// No worker ever registers: the ticket fails once NoWorkerTimeout
	// has passed.
	r = tspRequest(t, req, "titanic.request", "ghost", "x")
	r = waitFor(t, req, r[1], "500")
	if !strings.HasPrefix(r[1], "failed: no worker") {
		t.Fatalf("ticket of a service without workers = %q", r)
	}
}

// A worker that dies holding a ticket (here: a DEALER closed without a
// word) loses its lease; the ticket is redelivered to the next worker.
func TestTSPRedeliveryAfterWorkerLoss(t *testing.T) {
	n := startNode(t, titanic.Config{})
	req := n.socket(zmq.REQ)
	ticket := tspRequest(t, req, "titanic.request", "job", "work")[1]
	w1 := n.worker("job")
	if c, _ := w1.request(); c != ticket {
		t.Fatalf("first dispatch %q", c)
	}
	_ = w1.s.Close()
	w2 := n.worker("job")
	c, body := w2.request()
	if c != ticket || body[0] != "work" {
		t.Fatalf("redelivery %q %q", c, body)
	}
	w2.send("\x03", c, "done")
	waitFor(t, req, ticket, "200")
}
