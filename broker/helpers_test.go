package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker"
)

// waitFor bounds every wait in these tests.
const waitFor = 5 * time.Second

// Frame constants written from 7/MDP, not taken from package mdp, so that
// these tests check the wire format itself.
const (
	hdrClient = "MDPC01"
	hdrWorker = "MDPW01"
	cReady    = "\x01"
	cRequest  = "\x02"
	cReply    = "\x03"
	cHeart    = "\x04"
	cDisc     = "\x05"
	cFail     = "\x0f"
)

type testLogWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done { // t.Log after the test ends panics
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func testConfig(t testing.TB) broker.Config {
	cfg := broker.DefaultConfig()
	cfg.Endpoints = []string{"tcp://127.0.0.1:*"}
	cfg.HeartbeatInterval = 50 * time.Millisecond
	cfg.HeartbeatLiveness = 3
	cfg.LeaseTimeout = 2 * time.Second
	cfg.RequestExpiry = 2 * time.Second
	cfg.MaxQueue = 100
	w := &testLogWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	cfg.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return cfg
}

// env is a running broker and a zmq context for the test's raw peers.
type env struct {
	t    testing.TB
	b    *broker.Broker
	ep   string
	zctx *zmq.Context
	// stop cancels Run's context (the cleanup waits for Run to return).
	stop context.CancelFunc
}

// start runs a broker with cfg (after setup, which may call Handle and
// SetSource) until the test ends, and checks that Run returns nil.
func start(t testing.TB, cfg broker.Config, setup func(*broker.Broker)) *env {
	t.Helper()
	b, err := broker.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if setup != nil {
		setup(b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- b.Run(ctx) }()
	select {
	case <-b.Ready():
	case err := <-errc:
		cancel()
		t.Fatalf("Run returned before Ready: %v", err)
	case <-time.After(waitFor):
		cancel()
		t.Fatalf("broker not ready within %s", waitFor)
	}
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, b: b, ep: b.Endpoints()[0], zctx: zctx, stop: cancel}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitFor):
			t.Errorf("Run did not return within %s of cancel", waitFor)
		}
	})
	// Registered after the broker's cleanup, so it runs first: peers'
	// sockets are closed by then (their own cleanups ran earlier still).
	t.Cleanup(func() {
		if err := zctx.Term(); err != nil {
			t.Errorf("term test context: %v", err)
		}
	})
	return e
}

// stats returns a snapshot.
func (e *env) stats() broker.Stats {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	st, err := e.b.Stats(ctx)
	if err != nil {
		e.t.Fatalf("Stats: %v", err)
	}
	return st
}

// waitStats waits until cond holds for a snapshot.
func (e *env) waitStats(what string, cond func(broker.Stats) bool) broker.Stats {
	e.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		st := e.stats()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("waiting for %s: not within %s; last stats %+v", what, waitFor, st)
		}
		time.Sleep(2 * time.Millisecond) // polling interval, not synchronisation
	}
}

// waitWorkers waits until service has n registered workers.
func (e *env) waitWorkers(service string, n int) {
	e.t.Helper()
	e.waitStats(fmt.Sprintf("%d workers of %q", n, service), func(st broker.Stats) bool {
		s, _ := st.Service(service)
		return s.Workers == n
	})
}

// peer is a raw zmq socket connected to the broker, used by the test
// goroutine only.
type peer struct {
	t    testing.TB
	name string
	s    *zmq.Socket
}

func (e *env) peer(name string, typ zmq.Type) *peer {
	e.t.Helper()
	s, err := e.zctx.NewSocket(typ)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := s.SetLinger(0); err != nil {
		e.t.Fatal(err)
	}
	if err := s.Connect(e.ep); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { s.Close() })
	return &peer{t: e.t, name: name, s: s}
}

func (e *env) dealer(name string) *peer { return e.peer(name, zmq.DEALER) }

func (p *peer) send(frames ...string) {
	p.t.Helper()
	if _, err := p.s.SendMessage(frames); err != nil {
		p.t.Fatalf("%s: send %q: %v", p.name, frames, err)
	}
}

// recvWithin returns the next message, or nil when none came within d.
func (p *peer) recvWithin(d time.Duration) []string {
	p.t.Helper()
	poller := zmq.NewPoller()
	poller.Add(p.s, zmq.POLLIN)
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left < 0 {
			left = 0
		}
		polled, err := poller.Poll(left)
		if err != nil {
			p.t.Fatalf("%s: poll: %v", p.name, err)
		}
		if len(polled) > 0 {
			msg, err := p.s.RecvMessage(0)
			if err != nil {
				p.t.Fatalf("%s: receive: %v", p.name, err)
			}
			return msg
		}
		if left == 0 {
			return nil
		}
	}
}

// recv returns the next message, failing the test after waitFor.
func (p *peer) recv(what string) []string {
	p.t.Helper()
	msg := p.recvWithin(waitFor)
	if msg == nil {
		p.t.Fatalf("%s: no %s within %s", p.name, what, waitFor)
	}
	return msg
}

// expect receives the next message and checks it equals want.
func (p *peer) expect(want ...string) {
	p.t.Helper()
	got := p.recv(fmt.Sprintf("%q", want))
	if !equal(got, want) {
		p.t.Fatalf("%s: got %q, want %q", p.name, got, want)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// worker is a raw MDP worker on a DEALER socket.
type worker struct{ *peer }

func (e *env) worker(name, service string) *worker {
	e.t.Helper()
	w := &worker{e.dealer(name)}
	w.send("", hdrWorker, cReady, service)
	return w
}

// next returns the next command other than HEARTBEAT.
func (w *worker) next(what string) []string {
	w.t.Helper()
	for {
		msg := w.recv(what)
		if len(msg) == 3 && msg[0] == "" && msg[1] == hdrWorker && msg[2] == cHeart {
			continue
		}
		return msg
	}
}

// request waits for a REQUEST and returns its client address and body.
func (w *worker) request() (client string, body []string) {
	w.t.Helper()
	msg := w.next("REQUEST")
	if len(msg) < 6 || msg[0] != "" || msg[1] != hdrWorker || msg[2] != cRequest || msg[4] != "" {
		w.t.Fatalf("%s: got %q, want a REQUEST", w.name, msg)
	}
	return msg[3], msg[5:]
}

// disconnected waits for DISCONNECT.
func (w *worker) disconnected() {
	w.t.Helper()
	msg := w.next("DISCONNECT")
	if !equal(msg, []string{"", hdrWorker, cDisc}) {
		w.t.Fatalf("%s: got %q, want DISCONNECT", w.name, msg)
	}
}

func (w *worker) reply(client string, body ...string) {
	w.send(append([]string{"", hdrWorker, cReply, client, ""}, body...)...)
}

func (w *worker) heartbeat() { w.send("", hdrWorker, cHeart) }

// beatUntil heartbeats every interval until stop is closed; the caller's
// goroutine must not use the socket meanwhile. It returns a wait function.
func (w *worker) beatUntil(every time.Duration, stop <-chan struct{}) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				_, _ = w.s.SendMessage("", hdrWorker, cHeart)
			}
		}
	}()
	return func() { <-done }
}

// mmi asks mmi.service about name on a fresh REQ socket and returns the code.
func (e *env) mmi(name string) string {
	e.t.Helper()
	c := e.peer("mmi-client", zmq.REQ)
	defer c.s.Close()
	c.send(hdrClient, "mmi.service", name)
	msg := c.recv("mmi.service reply")
	if len(msg) != 3 || msg[0] != hdrClient || msg[1] != "mmi.service" {
		e.t.Fatalf("mmi.service reply %q", msg)
	}
	return msg[2]
}

// fakeSource is a goroutine-safe Source whose calls the test observes.
type fakeSource struct {
	mu        sync.Mutex
	jobs      map[string][]broker.Job
	completed chan completion
	failed    chan failure
	unsent    chan failure
	workers   chan string
	// onFailed runs on the broker loop after a failure is recorded.
	onFailed func(broker.Lease)
}

type completion struct {
	lease broker.Lease
	reply []string
}

type failure struct {
	lease  broker.Lease
	reason string
	at     time.Time
}

func newFakeSource() *fakeSource {
	return &fakeSource{
		jobs:      make(map[string][]broker.Job),
		completed: make(chan completion, 100),
		failed:    make(chan failure, 100),
		unsent:    make(chan failure, 100),
		workers:   make(chan string, 100),
	}
}

func (f *fakeSource) add(service, token string, body ...string) {
	job := broker.Job{Token: []byte(token)}
	for _, b := range body {
		job.Body = append(job.Body, []byte(b))
	}
	f.mu.Lock()
	f.jobs[service] = append(f.jobs[service], job)
	f.mu.Unlock()
}

func (f *fakeSource) Next(service, _ string) (broker.Job, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.jobs[service]
	if len(q) == 0 {
		return broker.Job{}, false
	}
	f.jobs[service] = q[1:]
	return q[0], true
}

func (f *fakeSource) Completed(l broker.Lease, reply [][]byte) {
	c := completion{lease: l}
	for _, r := range reply {
		c.reply = append(c.reply, string(r))
	}
	f.completed <- c
}

func (f *fakeSource) Failed(l broker.Lease, reason string) {
	f.failed <- failure{lease: l, reason: reason, at: time.Now()}
	if f.onFailed != nil {
		f.onFailed(l)
	}
}

func (f *fakeSource) Unsent(l broker.Lease, reason string) {
	f.unsent <- failure{lease: l, reason: reason, at: time.Now()}
}

func (f *fakeSource) Workers(service string, n int) { f.workers <- fmt.Sprintf("%s=%d", service, n) }

func (f *fakeSource) nextCompleted(t testing.TB) completion {
	t.Helper()
	select {
	case c := <-f.completed:
		return c
	case <-time.After(waitFor):
		t.Fatalf("no Source.Completed within %s", waitFor)
	}
	return completion{}
}

func (f *fakeSource) nextFailed(t testing.TB) failure {
	t.Helper()
	select {
	case c := <-f.failed:
		return c
	case <-time.After(waitFor):
		t.Fatalf("no Source.Failed within %s", waitFor)
	}
	return failure{}
}

func (f *fakeSource) expectWorkers(t testing.TB, want string) {
	t.Helper()
	select {
	case got := <-f.workers:
		if got != want {
			t.Fatalf("Source.Workers(%s), want %s", got, want)
		}
	case <-time.After(waitFor):
		t.Fatalf("no Source.Workers(%s) within %s", want, waitFor)
	}
}

func (f *fakeSource) noFailure(t testing.TB) {
	t.Helper()
	select {
	case c := <-f.failed:
		t.Fatalf("unexpected Source.Failed(%d, %q)", c.lease.ID, c.reason)
	default:
	}
}

func joined(b [][]byte) string { return string(bytes.Join(b, []byte("|"))) }
