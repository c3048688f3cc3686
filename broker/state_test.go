package broker

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker/mdp"
)

// These tests drive the socket-free protocol state with explicit times and
// record what it sends.

type sent struct {
	to     string
	frames [][]byte
}

func (s sent) String() string { return fmt.Sprintf("%s <- %q", s.to, s.frames) }

// recorder is a sendFunc that records messages; fail makes sends to a peer
// return an error.
type recorder struct {
	out  []sent
	fail map[string]error
}

func (r *recorder) send(to string, frames [][]byte) error {
	if err := r.fail[to]; err != nil {
		return err
	}
	// A deep copy: the state reuses frames for its next message.
	own := make([][]byte, len(frames))
	for i, f := range frames {
		own[i] = bytes.Clone(f)
	}
	r.out = append(r.out, sent{to, own})
	return nil
}

func (r *recorder) take() []sent {
	out := r.out
	r.out = nil
	return out
}

// fakeSource is a Source with per-service job lists that records calls.
type fakeSource struct {
	jobs      map[string][]Job
	completed []string // "leaseID token body"
	failed    []string // "leaseID token reason"
	unsent    []string // "leaseID token reason"
	workers   []string // "service=n"
}

func newFakeSource() *fakeSource { return &fakeSource{jobs: make(map[string][]Job)} }

func (f *fakeSource) add(service, token string, body ...string) {
	f.jobs[service] = append(f.jobs[service], Job{Token: []byte(token), Body: frames(body...)})
}

func (f *fakeSource) Next(service, _ string) (Job, bool) {
	q := f.jobs[service]
	if len(q) == 0 {
		return Job{}, false
	}
	f.jobs[service] = q[1:]
	return q[0], true
}

func (f *fakeSource) Completed(l Lease, reply [][]byte) {
	f.completed = append(f.completed, fmt.Sprintf("%d %s %s", l.ID, l.Token, bytes.Join(reply, []byte(","))))
}

func (f *fakeSource) Failed(l Lease, reason string) {
	f.failed = append(f.failed, fmt.Sprintf("%d %s %s", l.ID, l.Token, reason))
}

func (f *fakeSource) Unsent(l Lease, reason string) {
	f.unsent = append(f.unsent, fmt.Sprintf("%d %s %s", l.ID, l.Token, reason))
}

func (f *fakeSource) Workers(service string, n int) {
	f.workers = append(f.workers, fmt.Sprintf("%s=%d", service, n))
}

type handlerFunc func(Request) [][]byte

func (h handlerFunc) ServeMDP(r Request) [][]byte { return h(r) }
func (h handlerFunc) Serves(string) bool          { return true }

func frames(parts ...string) [][]byte {
	out := make([][]byte, len(parts))
	for i, p := range parts {
		out[i] = []byte(p)
	}
	return out
}

// Messages as the broker receives them (identity first) and sends them.
func in(from string, f [][]byte) [][]byte { return append([][]byte{[]byte(from)}, f...) }
func ready(svc string) [][]byte           { return mdp.WorkerCommand(mdp.Ready, []byte(svc)) }
func heartbeat() [][]byte                 { return mdp.WorkerCommand(mdp.Heartbeat) }
func disconnect() [][]byte                { return mdp.WorkerCommand(mdp.Disconnect) }
func request(svc string, body ...string) [][]byte {
	return mdp.ClientRequest(svc, frames(body...)...)
}
func workerReply(client string, body ...string) [][]byte {
	return mdp.WorkerEnvelope(mdp.Reply, []byte(client), frames(body...)...)
}
func workerFail(client, reason string) [][]byte {
	return mdp.WorkerEnvelope(mdp.Fail, []byte(client), []byte(reason))
}
func toWorker(client string, body ...string) [][]byte {
	return mdp.WorkerEnvelope(mdp.Request, []byte(client), frames(body...)...)
}
func toClient(svc string, body ...string) [][]byte { return mdp.ClientReply(svc, frames(body...)...) }

// step is one input to the state at a time since t0, and exactly what the
// state must send in response. A step without from is a tick (or, with
// release or wake set, that command).
type step struct {
	at      time.Duration
	from    string
	msg     [][]byte
	release uint64
	wake    string
	want    []sent
}

var t0 = time.Unix(1_000_000, 0)

func testConfig() Config {
	c := DefaultConfig()
	c.HeartbeatInterval = 100 * time.Millisecond
	c.HeartbeatLiveness = 3
	c.LeaseTimeout = time.Second
	c.RequestExpiry = 500 * time.Millisecond
	c.MaxQueue = 2
	return c
}

type fixture struct {
	s   *state
	rec *recorder
	src *fakeSource
}

func newFixture(t *testing.T, withSource bool) *fixture {
	t.Helper()
	rec := &recorder{fail: map[string]error{}}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := &fixture{rec: rec}
	var src Source
	if withSource {
		f.src = newFakeSource()
		src = f.src
	}
	echo := handlerFunc(func(r Request) [][]byte {
		if r.Service == "titanic.later" {
			return nil
		}
		return append([][]byte{[]byte("handled")}, r.Body...)
	})
	f.s = newState(testConfig(), log, rec.send, src, []prefixHandler{{prefix: "titanic.", h: echo}})
	return f
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (f *fixture) run(t *testing.T, steps []step) {
	t.Helper()
	for i, st := range steps {
		now := t0.Add(st.at)
		switch {
		case st.from != "":
			f.s.receive(now, in(st.from, st.msg))
		case st.release != 0:
			f.s.release(now, st.release)
		case st.wake != "":
			f.s.wake(now, st.wake)
		default:
			f.s.tick(now)
		}
		got := f.rec.take()
		if !equalSent(got, st.want) {
			t.Fatalf("step %d (at %s, from %q, %q):\n got  %v\n want %v", i, st.at, st.from, st.msg, got, st.want)
		}
	}
}

func equalSent(a, b []sent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].to != b[i].to || len(a[i].frames) != len(b[i].frames) {
			return false
		}
		for j := range a[i].frames {
			if !bytes.Equal(a[i].frames[j], b[i].frames[j]) {
				return false
			}
		}
	}
	return true
}

func out(to string, f [][]byte) sent { return sent{to, f} }

func TestStatePlain(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
		check func(t *testing.T, c Counters)
	}{{
		name: "request queued until a worker registers, reply relayed",
		steps: []step{
			{from: "C", msg: request("echo", "hi")},
			{from: "W", msg: ready("echo"), want: []sent{out("W", toWorker("C", "hi"))}},
			{from: "W", msg: workerReply("C", "hi", "there"), want: []sent{out("C", toClient("echo", "hi", "there"))}},
		},
		check: func(t *testing.T, c Counters) {
			if c.RequestsDispatched != 1 || c.RepliesRelayed != 1 || c.Requests != 1 {
				t.Errorf("counters %+v", c)
			}
		},
	}, {
		name: "LRU: the worker idle longest gets the next request",
		steps: []step{
			{from: "W1", msg: ready("echo")},
			{from: "W2", msg: ready("echo")},
			{from: "W3", msg: ready("echo")},
			{from: "C1", msg: request("echo", "1"), want: []sent{out("W1", toWorker("C1", "1"))}},
			{from: "W1", msg: workerReply("C1", "r"), want: []sent{out("C1", toClient("echo", "r"))}},
			{from: "C2", msg: request("echo", "2"), want: []sent{out("W2", toWorker("C2", "2"))}},
			{from: "C3", msg: request("echo", "3"), want: []sent{out("W3", toWorker("C3", "3"))}},
			{from: "C4", msg: request("echo", "4"), want: []sent{out("W1", toWorker("C4", "4"))}},
		},
	}, {
		// 7/MDP: a valid but unexpected command is answered DISCONNECT.
		// The worker would otherwise wait for work, heartbeating, while
		// the broker held its request for good.
		name: "reply for another client: DISCONNECT, and the request it held is lost",
		steps: []step{
			{from: "W", msg: ready("echo")},
			{from: "C", msg: request("echo", "x"), want: []sent{out("W", toWorker("C", "x"))}},
			{from: "W", msg: workerReply("X", "forged"), want: []sent{out("W", disconnect())}},
			{from: "W", msg: workerReply("C", "ok"), want: []sent{out("W", disconnect())}},
			{from: "W2", msg: ready("echo")},
			{from: "W2", msg: workerReply("C", "idle"), want: []sent{out("W2", disconnect())}},
		},
		check: func(t *testing.T, c Counters) {
			if c.StaleReplies != 2 || c.RequestsLost != 1 || c.RepliesRelayed != 0 {
				t.Errorf("stale replies %d, lost %d, relayed %d; want 2, 1, 0", c.StaleReplies, c.RequestsLost, c.RepliesRelayed)
			}
		},
	}, {
		// A READY it cannot take is refused out loud: the worker would
		// otherwise believe itself registered and wait for ever.
		name: "READY for a service name over the limit: DISCONNECT",
		steps: []step{
			{from: "W", msg: ready(strings.Repeat("s", mdp.MaxServiceName+1)), want: []sent{out("W", disconnect())}},
			{from: "W", msg: ready(strings.Repeat("s", mdp.MaxServiceName))},
		},
		check: func(t *testing.T, c Counters) {
			if c.Malformed != 1 {
				t.Errorf("malformed %d, want 1", c.Malformed)
			}
		},
	}, {
		name: "second READY, commands before READY, reserved services: DISCONNECT",
		steps: []step{
			{from: "W", msg: ready("echo")},
			{from: "W", msg: ready("echo"), want: []sent{out("W", disconnect())}},
			{from: "W", msg: heartbeat(), want: []sent{out("W", disconnect())}},
			{from: "U", msg: workerReply("C", "x"), want: []sent{out("U", disconnect())}},
			{from: "U", msg: workerFail("C", "x"), want: []sent{out("U", disconnect())}},
			{from: "U", msg: disconnect()},
			{from: "M", msg: ready("mmi.foo"), want: []sent{out("M", disconnect())}},
			{from: "T", msg: ready("titanic.request"), want: []sent{out("T", disconnect())}},
			{from: "C", msg: request("mmi.service", "echo"), want: []sent{out("C", toClient("mmi.service", "404"))}},
		},
		check: func(t *testing.T, c Counters) {
			if c.DisconnectsSent != 6 {
				t.Errorf("disconnects %d, want 6", c.DisconnectsSent)
			}
		},
	}, {
		name: "MMI",
		steps: []step{
			{from: "C", msg: request("mmi.service", "echo"), want: []sent{out("C", toClient("mmi.service", "404"))}},
			{from: "W", msg: ready("echo")},
			{from: "C", msg: request("mmi.service", "echo"), want: []sent{out("C", toClient("mmi.service", "200"))}},
			{from: "C", msg: request("echo", "busy"), want: []sent{out("W", toWorker("C", "busy"))}},
			{from: "C", msg: request("mmi.service", "echo"), want: []sent{out("C", toClient("mmi.service", "200"))}},
			{from: "C", msg: request("mmi.service", "titanic.request"), want: []sent{out("C", toClient("mmi.service", "200"))}},
			{from: "C", msg: request("mmi.service", "mmi.service"), want: []sent{out("C", toClient("mmi.service", "200"))}},
			{from: "C", msg: request("mmi.service", "other"), want: []sent{out("C", toClient("mmi.service", "404"))}},
			{from: "C", msg: request("mmi.foo", "x"), want: []sent{out("C", toClient("mmi.foo", "501"))}},
			{from: "W", msg: disconnect()},
			{from: "C", msg: request("mmi.service", "echo"), want: []sent{out("C", toClient("mmi.service", "404"))}},
		},
	}, {
		name: "a request without a body: answered for the broker's own services, dropped for a worker's",
		steps: []step{
			{from: "C", msg: request("mmi.service"), want: []sent{out("C", toClient("mmi.service", "404"))}},
			{from: "C", msg: request("titanic.request"), want: []sent{out("C", toClient("titanic.request", "handled", ""))}},
			{from: "W", msg: ready("echo")},
			{from: "C", msg: request("echo")},
		},
		check: func(t *testing.T, c Counters) {
			if c.Malformed != 3 || c.RequestsDispatched != 0 {
				t.Errorf("counters %+v", c)
			}
		},
	}, {
		name: "a registered worker that breaks 7/MDP is disconnected at once",
		steps: []step{
			{from: "W", msg: ready("echo")},
			{from: "C", msg: request("echo", "x"), want: []sent{out("W", toWorker("C", "x"))}},
			// A REPLY without a body frame.
			{from: "W", msg: mdp.WorkerEnvelope(mdp.Reply, []byte("C")), want: []sent{out("W", disconnect())}},
			{from: "W", msg: heartbeat(), want: []sent{out("W", disconnect())}},
		},
		check: func(t *testing.T, c Counters) {
			if c.Malformed != 1 || c.RequestsLost != 1 {
				t.Errorf("counters %+v", c)
			}
		},
	}, {
		name: "handler answers at once or later",
		steps: []step{
			{from: "C", msg: request("titanic.request", "a", "b"), want: []sent{out("C", toClient("titanic.request", "handled", "a", "b"))}},
			{from: "C", msg: request("titanic.later", "a")},
		},
		check: func(t *testing.T, c Counters) {
			if c.HandlerRequests != 2 || c.HandlerReplies != 1 {
				t.Errorf("counters %+v", c)
			}
		},
	}, {
		name: "plain request expires",
		steps: []step{
			{from: "C", msg: request("echo", "old")},
			{at: 499 * time.Millisecond},
			{at: 500 * time.Millisecond},
			{at: 600 * time.Millisecond, from: "W", msg: ready("echo")},
		},
		check: func(t *testing.T, c Counters) {
			if c.RequestsExpired != 1 {
				t.Errorf("expired %d, want 1", c.RequestsExpired)
			}
		},
	}, {
		name: "queue bounded by MaxQueue",
		steps: []step{
			{from: "C1", msg: request("echo", "1")},
			{from: "C2", msg: request("echo", "2")},
			{from: "C3", msg: request("echo", "3")},
			{from: "W", msg: ready("echo"), want: []sent{out("W", toWorker("C1", "1"))}},
			{from: "W", msg: workerReply("C1", "r"), want: []sent{out("C1", toClient("echo", "r")), out("W", toWorker("C2", "2"))}},
			{from: "W", msg: workerReply("C2", "r"), want: []sent{out("C2", toClient("echo", "r"))}},
		},
		check: func(t *testing.T, c Counters) {
			if c.RequestsDropped != 1 {
				t.Errorf("dropped %d, want 1", c.RequestsDropped)
			}
		},
	}, {
		name: "heartbeats every interval, expiry after interval x liveness",
		steps: []step{
			{from: "W", msg: ready("echo")},
			{at: 50 * time.Millisecond},
			{at: 100 * time.Millisecond, want: []sent{out("W", heartbeat())}},
			{at: 150 * time.Millisecond, from: "W", msg: heartbeat()},
			{at: 175 * time.Millisecond},
			{at: 200 * time.Millisecond, want: []sent{out("W", heartbeat())}},
			{at: 300 * time.Millisecond, want: []sent{out("W", heartbeat())}},
			{at: 400 * time.Millisecond, want: []sent{out("W", heartbeat())}},
			{at: 450 * time.Millisecond},
			{at: 451 * time.Millisecond, want: []sent{out("W", disconnect())}},
			{at: 460 * time.Millisecond, from: "C", msg: request("mmi.service", "echo"), want: []sent{out("C", toClient("mmi.service", "404"))}},
		},
		check: func(t *testing.T, c Counters) {
			if c.WorkersExpired != 1 {
				t.Errorf("expired workers %d, want 1", c.WorkersExpired)
			}
		},
	}, {
		name: "no heartbeat when a request went out within the interval",
		steps: []step{
			{from: "W", msg: ready("echo")},
			{at: 90 * time.Millisecond, from: "C", msg: request("echo", "x"), want: []sent{out("W", toWorker("C", "x"))}},
			{at: 100 * time.Millisecond},
			{at: 190 * time.Millisecond, want: []sent{out("W", heartbeat())}},
		},
	}, {
		name: "busy worker that never heartbeats keeps its request until LeaseTimeout",
		steps: []step{
			{from: "W", msg: ready("echo")},
			{from: "C", msg: request("echo", "slow"), want: []sent{out("W", toWorker("C", "slow"))}},
			{at: 500 * time.Millisecond, want: []sent{out("W", heartbeat())}},
			{at: 1000 * time.Millisecond, want: []sent{out("W", heartbeat())}},
			{at: 1001 * time.Millisecond, want: []sent{out("W", disconnect())}},
			{at: 1002 * time.Millisecond, from: "W", msg: workerReply("C", "late"), want: []sent{out("W", disconnect())}},
		},
		check: func(t *testing.T, c Counters) {
			if c.LeasesExpired != 1 || c.RequestsLost != 1 {
				t.Errorf("counters %+v", c)
			}
		},
	}, {
		name: "FAIL of a plain request drops it; the worker is idle again",
		steps: []step{
			{from: "W", msg: ready("echo")},
			{from: "C1", msg: request("echo", "1"), want: []sent{out("W", toWorker("C1", "1"))}},
			{from: "C2", msg: request("echo", "2")},
			{from: "W", msg: workerFail("C1", "no"), want: []sent{out("W", toWorker("C2", "2"))}},
		},
		check: func(t *testing.T, c Counters) {
			if c.RequestsFailed != 1 {
				t.Errorf("failed %d, want 1", c.RequestsFailed)
			}
		},
	}, {
		name: "malformed messages are dropped and counted",
		steps: []step{
			{from: "X", msg: frames("garbage")},
			{from: "X", msg: frames("", "MDPC01", "", "x")},
			{from: "X", msg: frames("", "MDPC01", strings.Repeat("s", 300), "x")},
			{from: "X", msg: frames("", "MDPW01")},
			{from: "X", msg: frames("", "MDPW01", "\x02", "c", "", "x")},
			{from: "W", msg: ready("echo")},
			{from: "C", msg: request("echo", "x"), want: []sent{out("W", toWorker("C", "x"))}},
		},
		check: func(t *testing.T, c Counters) {
			if c.Malformed != 5 {
				t.Errorf("malformed %d, want 5", c.Malformed)
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, false)
			f.run(t, tt.steps)
			if tt.check != nil {
				tt.check(t, f.s.c)
			}
		})
	}
}

func TestStateDurable(t *testing.T) {
	tok := func(s string) string { return s }
	tests := []struct {
		name      string
		jobs      [][2]string // service, token (body = "job-"+token)
		steps     []step
		completed []string
		failed    []string
		workers   []string
	}{{
		name: "job dispatched, completed, worker reserved until Release",
		jobs: [][2]string{{"echo", "T1"}, {"echo", "T2"}},
		steps: []step{
			{from: "W", msg: ready("echo"), want: []sent{out("W", toWorker(tok("T1"), "job-T1"))}},
			{from: "W", msg: workerReply("T1", "done"), want: nil},
			{wake: "echo"},
			{release: 99},
			{release: 1, want: []sent{out("W", toWorker("T2", "job-T2"))}},
			{release: 1},
		},
		completed: []string{"1 T1 done"},
		workers:   []string{"echo=1"},
	}, {
		name: "reply with another token: DISCONNECT, and the attempt fails",
		jobs: [][2]string{{"echo", "T1"}},
		steps: []step{
			{from: "W", msg: ready("echo"), want: []sent{out("W", toWorker("T1", "job-T1"))}},
			{from: "W", msg: workerReply("OLD", "x"), want: []sent{out("W", disconnect())}},
			{from: "W", msg: workerReply("T1", "ok"), want: []sent{out("W", disconnect())}},
		},
		failed:  []string{"1 T1 protocol error: REPLY for a request it does not hold"},
		workers: []string{"echo=1", "echo=0"},
	}, {
		name: "second reply of a reserved worker: DISCONNECT",
		jobs: [][2]string{{"echo", "T1"}},
		steps: []step{
			{from: "W", msg: ready("echo"), want: []sent{out("W", toWorker("T1", "job-T1"))}},
			{from: "W", msg: workerReply("T1", "ok")},
			{from: "W", msg: workerReply("T1", "twice"), want: []sent{out("W", disconnect())}},
		},
		completed: []string{"1 T1 ok"},
		workers:   []string{"echo=1", "echo=0"},
	}, {
		name: "FAIL reports the lease and frees the worker",
		jobs: [][2]string{{"echo", "T1"}, {"echo", "T2"}},
		steps: []step{
			{from: "W", msg: ready("echo"), want: []sent{out("W", toWorker("T1", "job-T1"))}},
			{from: "W", msg: workerFail("T1", "cannot"), want: []sent{out("W", toWorker("T2", "job-T2"))}},
			{release: 1},
		},
		failed:  []string{"1 T1 worker: cannot"},
		workers: []string{"echo=1"},
	}, {
		name: "DISCONNECT while holding a lease",
		jobs: [][2]string{{"echo", "T1"}},
		steps: []step{
			{from: "W", msg: ready("echo"), want: []sent{out("W", toWorker("T1", "job-T1"))}},
			{from: "W", msg: disconnect()},
		},
		failed:  []string{"1 T1 worker disconnected"},
		workers: []string{"echo=1", "echo=0"},
	}, {
		name: "busy worker that heartbeats keeps its lease past LeaseTimeout",
		jobs: [][2]string{{"echo", "T1"}},
		steps: []step{
			{from: "W", msg: ready("echo"), want: []sent{out("W", toWorker("T1", "job-T1"))}},
			{at: 250 * time.Millisecond, from: "W", msg: heartbeat()},
			{at: 500 * time.Millisecond, from: "W", msg: heartbeat()},
			{at: 750 * time.Millisecond, from: "W", msg: heartbeat()},
			{at: 1000 * time.Millisecond, from: "W", msg: heartbeat()},
			{at: 1250 * time.Millisecond, from: "W", msg: heartbeat()},
			{at: 1300 * time.Millisecond, want: []sent{out("W", heartbeat())}},
			{at: 1400 * time.Millisecond, from: "W", msg: workerReply("T1", "slow but alive")},
		},
		completed: []string{"1 T1 slow but alive"},
		workers:   []string{"echo=1"},
	}, {
		// The Guide's worker beats only while it waits for work: one sent
		// as the REQUEST was on its way (within a heartbeat interval of
		// it) does not make it a worker that beats while busy, and it
		// keeps its job until the lease timeout.
		name: "heartbeat crossing the REQUEST: the lease timeout still applies",
		jobs: [][2]string{{"echo", "T1"}},
		steps: []step{
			{from: "W", msg: ready("echo"), want: []sent{out("W", toWorker("T1", "job-T1"))}},
			{at: 10 * time.Millisecond, from: "W", msg: heartbeat()},
			{at: 110 * time.Millisecond, want: []sent{out("W", heartbeat())}},
			{at: 411 * time.Millisecond, want: []sent{out("W", heartbeat())}},
			{at: 1011 * time.Millisecond, want: []sent{out("W", disconnect())}},
		},
		failed:  []string{"1 T1 lease timeout: busy worker silent for 1.001s"},
		workers: []string{"echo=1", "echo=0"},
	}, {
		name: "busy worker that heartbeated once then went silent expires by heartbeat",
		jobs: [][2]string{{"echo", "T1"}},
		steps: []step{
			{from: "W", msg: ready("echo"), want: []sent{out("W", toWorker("T1", "job-T1"))}},
			{at: 100 * time.Millisecond, from: "W", msg: heartbeat()},
			{at: 100 * time.Millisecond, want: []sent{out("W", heartbeat())}},
			{at: 200 * time.Millisecond, want: []sent{out("W", heartbeat())}},
			{at: 300 * time.Millisecond, want: []sent{out("W", heartbeat())}},
			{at: 401 * time.Millisecond, want: []sent{out("W", disconnect())}},
		},
		failed:  []string{"1 T1 worker expired: silent for 301ms (3 heartbeats of 100ms: a worker must beat at the broker's --heartbeat)"},
		workers: []string{"echo=1", "echo=0"},
	}, {
		name: "busy silent worker loses its lease after LeaseTimeout",
		jobs: [][2]string{{"echo", "T1"}},
		steps: []step{
			{from: "W", msg: ready("echo"), want: []sent{out("W", toWorker("T1", "job-T1"))}},
			{at: 999 * time.Millisecond, want: []sent{out("W", heartbeat())}},
			{at: 1001 * time.Millisecond, want: []sent{out("W", disconnect())}},
		},
		failed:  []string{"1 T1 lease timeout: busy worker silent for 1.001s"},
		workers: []string{"echo=1", "echo=0"},
	}, {
		name: "plain queue and Source alternate",
		jobs: [][2]string{{"echo", "J1"}, {"echo", "J2"}, {"echo", "J3"}},
		steps: []step{
			{from: "C1", msg: request("echo", "p1")},
			{from: "C2", msg: request("echo", "p2")},
			{from: "W", msg: ready("echo"), want: []sent{out("W", toWorker("C1", "p1"))}},
			{from: "W", msg: workerReply("C1", "r"), want: []sent{out("C1", toClient("echo", "r")), out("W", toWorker("J1", "job-J1"))}},
			{from: "W", msg: workerReply("J1", "r")},
			{release: 1, want: []sent{out("W", toWorker("C2", "p2"))}},
			{from: "W", msg: workerReply("C2", "r"), want: []sent{out("C2", toClient("echo", "r")), out("W", toWorker("J2", "job-J2"))}},
			{from: "W", msg: workerReply("J2", "r")},
			{release: 2, want: []sent{out("W", toWorker("J3", "job-J3"))}},
		},
		completed: []string{"1 J1 r", "2 J2 r"},
		workers:   []string{"echo=1"},
	}, {
		name: "Wake dispatches to idle workers",
		steps: []step{
			{from: "W1", msg: ready("echo")},
			{from: "W2", msg: ready("echo")},
			{wake: "echo"},
			{wake: "other"},
		},
		workers: []string{"echo=1", "echo=2"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, true)
			for _, j := range tt.jobs {
				f.src.add(j[0], j[1], "job-"+j[1])
			}
			f.run(t, tt.steps)
			if got := strings.Join(f.src.completed, "|"); got != strings.Join(tt.completed, "|") {
				t.Errorf("completed %q, want %q", f.src.completed, tt.completed)
			}
			if got := strings.Join(f.src.failed, "|"); got != strings.Join(tt.failed, "|") {
				t.Errorf("failed %q, want %q", f.src.failed, tt.failed)
			}
			if got := strings.Join(f.src.workers, "|"); got != strings.Join(tt.workers, "|") {
				t.Errorf("workers %q, want %q", f.src.workers, tt.workers)
			}
		})
	}
}

func TestStateWakeAfterJobArrives(t *testing.T) {
	f := newFixture(t, true)
	f.run(t, []step{
		{from: "W1", msg: ready("echo")},
		{from: "W2", msg: ready("echo")},
	})
	f.src.add("echo", "T1", "a")
	f.src.add("echo", "T2", "b")
	f.run(t, []step{{wake: "echo", want: []sent{out("W1", toWorker("T1", "a")), out("W2", toWorker("T2", "b"))}}})
	st := f.s.snapshot()
	svc, ok := st.Service("echo")
	if !ok || svc.Workers != 2 || svc.Busy != 2 || svc.Idle != 0 || st.Leases != 2 {
		t.Fatalf("snapshot %+v", st)
	}
}

func TestStateUnroutable(t *testing.T) {
	f := newFixture(t, true)
	f.run(t, []step{{from: "W1", msg: ready("echo")}, {from: "W2", msg: ready("echo")}})
	// W1 is gone: the job it was to get goes back as unsent (no attempt
	// was made) and W1 is forgotten; W2's reply to a gone client is
	// counted.
	f.rec.fail["W1"] = errUnroutable
	f.rec.fail["C"] = errUnroutable
	f.src.add("echo", "T1", "a")
	f.run(t, []step{{wake: "echo"}})
	if want := "1 T1 send request: peer unreachable"; len(f.src.unsent) != 1 || f.src.unsent[0] != want || len(f.src.failed) != 0 {
		t.Fatalf("unsent %q failed %q, want unsent %q", f.src.unsent, f.src.failed, want)
	}
	f.run(t, []step{
		{from: "C", msg: request("echo", "p"), want: []sent{out("W2", toWorker("C", "p"))}},
		{from: "W2", msg: workerReply("C", "r")},
	})
	// A plain request whose worker is gone goes back to the queue head.
	f.rec.fail["W2"] = errWouldBlock
	f.run(t, []step{
		{from: "W3", msg: ready("echo")},
		{from: "D", msg: request("echo", "q"), want: []sent{out("W3", toWorker("D", "q"))}},
	})
	f.rec.fail["W4"] = errUnroutable
	f.run(t, []step{
		{from: "W4", msg: ready("echo")},
		{from: "W2", msg: heartbeat(), want: nil},
		{from: "E", msg: request("echo", "e")},
		{from: "W3", msg: workerReply("D", "r"), want: []sent{out("D", toClient("echo", "r")), out("W3", toWorker("E", "e"))}},
	})
	c := f.s.c
	if c.Unroutable != 3 || c.SendDropped != 2 {
		t.Fatalf("unroutable %d (want 3), send dropped %d (want 2)", c.Unroutable, c.SendDropped)
	}
	if f.s.snapshot().Workers != 1 {
		t.Fatalf("workers %d, want 1 (W3)", f.s.snapshot().Workers)
	}
}

// fakeGate is a Gate switched by the test; admits counts Admit calls (the
// Binary Star client votes).
type fakeGate struct {
	active bool
	admits int
}

func (g *fakeGate) Admit(string) bool { g.admits++; return g.active }
func (g *fakeGate) Active() bool      { return g.active }
func (g *fakeGate) Refusal(service string) [][]byte {
	if strings.HasPrefix(service, "titanic.") {
		return frames("500", "not active")
	}
	return nil
}

func TestStateGate(t *testing.T) {
	f := newFixture(t, true)
	g := &fakeGate{}
	f.s.gate = g
	dis := mdp.WorkerCommand(mdp.Disconnect)
	f.run(t, []step{
		// Passive: TSP gets the refusal, plain MDP and MMI are dropped,
		// a worker is sent away.
		{from: "C1", msg: request("titanic.reply", "x"), want: []sent{out("C1", toClient("titanic.reply", "500", "not active"))}},
		{from: "C1", msg: request("echo", "x")},
		{from: "C1", msg: request("mmi.service", "echo")},
		{from: "W1", msg: ready("echo"), want: []sent{out("W1", dis)}},
	})
	if g.admits != 3 {
		t.Fatalf("Admit called %d times, want once per client request (3)", g.admits)
	}
	// Active: served as usual.
	g.active = true
	f.src.add("echo", "T1", "a")
	f.run(t, []step{
		{from: "W1", msg: ready("echo"), want: []sent{out("W1", toWorker("T1", "a"))}},
		{from: "C1", msg: request("titanic.reply", "x"), want: []sent{out("C1", toClient("titanic.reply", "handled", "x"))}},
	})
	// Demoted: the next tick sends the worker away; its lease fails.
	g.active = false
	f.run(t, []step{{at: 10 * time.Millisecond, want: []sent{out("W1", dis)}}})
	if len(f.src.failed) != 1 || !strings.Contains(f.src.failed[0], "not active") {
		t.Fatalf("failed = %q", f.src.failed)
	}
	if st := f.s.snapshot(); st.Workers != 0 || st.NotActive != 4 {
		t.Fatalf("snapshot = %+v", st)
	}
}

// Plain requests for many services cannot grow the broker without bound:
// MaxQueuedBytes caps all queues together.
func TestStateQueuedBytesBound(t *testing.T) {
	f := newFixture(t, false)
	f.s.cfg.MaxQueue = 1000
	f.s.cfg.MaxQueuedBytes = 3 * (len("C1") + 100 + 16)
	body := strings.Repeat("x", 100)
	for i := range 10 {
		f.run(t, []step{{from: "C1", msg: request(fmt.Sprintf("svc%d", i), body)}})
	}
	st := f.s.snapshot()
	if st.RequestsDropped != 7 || len(st.Services) != 3 {
		t.Fatalf("dropped %d, services %d; want 7 dropped and 3 queued", st.RequestsDropped, len(st.Services))
	}
	// Expiry gives the room back.
	f.run(t, []step{{at: time.Second}})
	f.run(t, []step{{at: time.Second, from: "C1", msg: request("again", body)}})
	if st := f.s.snapshot(); st.RequestsDropped != 7 || f.s.queuedBytes != 118 {
		t.Fatalf("after expiry: dropped %d, queued bytes %d", st.RequestsDropped, f.s.queuedBytes)
	}
}
