package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker/mdp"
	"github.com/titanicmq/titanic/internal/harness"
)

// wait bounds every receive that a test expects to succeed.
const wait = 5 * time.Second

// quiet is how long a test watches for a message that must not come.
const quiet = 300 * time.Millisecond

// fakeBroker is a raw ROUTER socket speaking MDPW01 frames by hand. Only
// the test goroutine uses it.
type fakeBroker struct {
	t      *testing.T
	sock   *zmq.Socket
	poller *zmq.Poller
	ep     string
}

func newFakeBroker(t *testing.T) *fakeBroker {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatalf("fake broker context: %v", err)
	}
	sock, err := zctx.NewSocket(zmq.ROUTER)
	if err != nil {
		t.Fatalf("fake broker socket: %v", err)
	}
	t.Cleanup(func() {
		_ = sock.Close()
		_ = zctx.Term()
	})
	if err := sock.SetLinger(0); err != nil {
		t.Fatalf("fake broker linger: %v", err)
	}
	if err := sock.Bind("tcp://127.0.0.1:*"); err != nil {
		t.Fatalf("fake broker bind: %v", err)
	}
	ep, err := sock.GetLastEndpoint()
	if err != nil {
		t.Fatalf("fake broker endpoint: %v", err)
	}
	p := zmq.NewPoller()
	p.Add(sock, zmq.POLLIN)
	return &fakeBroker{t: t, sock: sock, poller: p, ep: ep}
}

// recv returns the next message from a worker (its routing id and the
// frames after it), or ok false when none came within timeout.
func (b *fakeBroker) recv(timeout time.Duration) (id string, frames [][]byte, ok bool) {
	b.t.Helper()
	polled, err := b.poller.Poll(timeout)
	if err != nil {
		b.t.Fatalf("fake broker poll: %v", err)
	}
	if len(polled) == 0 {
		return "", nil, false
	}
	msg, err := b.sock.RecvMessageBytes(0)
	if err != nil {
		b.t.Fatalf("fake broker receive: %v", err)
	}
	if len(msg) < 1 {
		b.t.Fatalf("fake broker received an empty message")
	}
	return string(msg[0]), msg[1:], true
}

// commandOf checks that frames are an MDPW01 command and returns it.
func commandOf(t *testing.T, frames [][]byte) mdp.Command {
	t.Helper()
	if len(frames) < 3 || len(frames[0]) != 0 || string(frames[1]) != mdp.WorkerHeader || len(frames[2]) != 1 {
		t.Fatalf("worker sent a message that is not an MDPW01 command: %q", frames)
	}
	return mdp.Command(frames[2][0])
}

// expect receives until the worker sends cmd, skipping and counting
// HEARTBEATs; any other command fails the test.
func (b *fakeBroker) expect(cmd mdp.Command, what string) (id string, frames [][]byte, heartbeats int) {
	b.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			b.t.Fatalf("%s: no %s from the worker within %s (%d heartbeats seen)", what, cmd, wait, heartbeats)
		}
		id, frames, ok := b.recv(left)
		if !ok {
			continue
		}
		got := commandOf(b.t, frames)
		if got == cmd {
			return id, frames, heartbeats
		}
		if got != mdp.Heartbeat {
			b.t.Fatalf("%s: worker sent %s (%q), want %s", what, got, frames, cmd)
		}
		heartbeats++
	}
}

// expectNothing fails the test if the worker sends anything but HEARTBEAT
// within quiet.
func (b *fakeBroker) expectNothing(what string) {
	b.t.Helper()
	deadline := time.Now().Add(quiet)
	for left := quiet; left > 0; left = time.Until(deadline) {
		_, frames, ok := b.recv(left)
		if !ok {
			return
		}
		if got := commandOf(b.t, frames); got != mdp.Heartbeat {
			b.t.Fatalf("%s: worker sent %s (%q), want nothing", what, got, frames)
		}
	}
}

func (b *fakeBroker) send(id string, frames ...[]byte) {
	b.t.Helper()
	parts := make([]any, 0, 1+len(frames))
	parts = append(parts, id)
	for _, f := range frames {
		parts = append(parts, f)
	}
	if _, err := b.sock.SendMessage(parts...); err != nil {
		b.t.Fatalf("fake broker send: %v", err)
	}
}

func (b *fakeBroker) request(id string, client []byte, body ...[]byte) {
	b.t.Helper()
	b.send(id, mdp.WorkerEnvelope(mdp.Request, client, body...)...)
}

// running is a Worker whose Run runs on a goroutine of the test.
type running struct {
	t    *testing.T
	w    *Worker
	once sync.Once
	stop context.CancelFunc
	done chan error
	err  error
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func startWorker(t *testing.T, cfg Config, h Handler) *running {
	t.Helper()
	return startWorkerWith(t, cfg, h, nil)
}

// startWorkerWith is startWorker with tune, if not nil, applied to the
// Worker before Run.
func startWorkerWith(t *testing.T, cfg Config, h Handler, tune func(*Worker)) *running {
	t.Helper()
	if cfg.Service == "" {
		cfg.Service = "echo"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	w, err := New(cfg, h)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if tune != nil {
		tune(w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{t: t, w: w, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(ctx) }()
	t.Cleanup(func() { r.shutdown() })
	return r
}

// shutdown cancels Run and waits (bounded) for it to return; it returns
// Run's error and how long Run took to return.
func (r *running) shutdown() (time.Duration, error) {
	r.t.Helper()
	var took time.Duration
	r.once.Do(func() {
		start := time.Now()
		r.stop()
		select {
		case r.err = <-r.done:
			took = time.Since(start)
		case <-time.After(wait):
			r.t.Fatalf("Run did not return within %s of ctx cancel", wait)
		}
	})
	return took, r.err
}

func echo(_ context.Context, req [][]byte) ([][]byte, error) { return req, nil }

func TestNewRejectsBadConfig(t *testing.T) {
	good := Config{Brokers: []string{"tcp://127.0.0.1:5555"}, Service: "echo"}
	tests := []struct {
		name string
		edit func(*Config)
		h    Handler
		want string
	}{
		{"no brokers", func(c *Config) { c.Brokers = nil }, echo, "no broker endpoints"},
		{"empty endpoint", func(c *Config) { c.Brokers = []string{"tcp://127.0.0.1:5555", ""} }, echo, `endpoint ""`},
		{"endpoint without transport", func(c *Config) { c.Brokers = []string{"127.0.0.1:5555"} }, echo, "transport://address"},
		{"endpoint with spaces", func(c *Config) { c.Brokers = []string{" tcp://127.0.0.1:5555"} }, echo, "transport://address"},
		{"empty service", func(c *Config) { c.Service = "" }, echo, "empty service"},
		{"long service", func(c *Config) { c.Service = strings.Repeat("s", 256) }, echo, "256 bytes"},
		{"mmi service", func(c *Config) { c.Service = "mmi.service" }, echo, `the "mmi." services are reserved`},
		{"nil handler", func(c *Config) {}, nil, "nil handler"},
		{"negative interval", func(c *Config) { c.HeartbeatInterval = -time.Second }, echo, "heartbeat interval"},
		{"sub-millisecond interval", func(c *Config) { c.HeartbeatInterval = time.Microsecond }, echo, "heartbeat interval"},
		{"negative liveness", func(c *Config) { c.Liveness = -1 }, echo, "liveness"},
		{"negative reconnect delay", func(c *Config) { c.ReconnectDelay = -time.Second }, echo, "reconnect delay"},
		{"negative concurrency", func(c *Config) { c.Concurrency = -1 }, echo, "concurrency -1: want 1 to 256"},
		{"concurrency above the limit", func(c *Config) { c.Concurrency = MaxConcurrency + 1 }, echo, "concurrency 257"},
		{"negative drain timeout", func(c *Config) { c.DrainTimeout = -time.Second }, echo, "drain timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.edit(&cfg)
			w, err := New(cfg, tc.h)
			if err == nil {
				t.Fatalf("New accepted %+v", cfg)
			}
			if w != nil {
				t.Errorf("New returned a worker with error %v", err)
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("error %v does not wrap ErrConfig", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	t.Run("max service and defaults", func(t *testing.T) {
		cfg := good
		cfg.Service = strings.Repeat("s", 255)
		brokers := []string{"tcp://127.0.0.1:5555", "ipc:///tmp/b"}
		cfg.Brokers = brokers
		w, err := New(cfg, echo)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		brokers[0] = "changed"
		if w.cfg.Brokers[0] != "tcp://127.0.0.1:5555" {
			t.Errorf("New kept the caller's Brokers slice")
		}
		if w.cfg.HeartbeatInterval != DefaultHeartbeatInterval || w.cfg.Liveness != DefaultLiveness ||
			w.cfg.ReconnectDelay != DefaultReconnectDelay || w.cfg.Logger == nil || w.Concurrency() != 1 || w.cfg.DrainTimeout != 0 {
			t.Errorf("defaults not applied: %+v", w.cfg)
		}
	})
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		base    time.Duration
		attempt int
		want    time.Duration
	}{
		{time.Second, 0, 0},
		{time.Second, 1, time.Second},
		{time.Second, 2, 2 * time.Second},
		{time.Second, 3, 4 * time.Second},
		{time.Second, 4, MaxReconnectDelay},
		{time.Second, 100, MaxReconnectDelay},
		{10 * time.Second, 1, 10 * time.Second},
		{10 * time.Second, 5, 10 * time.Second},
		{100 * time.Millisecond, 3, 400 * time.Millisecond},
	}
	for _, tc := range tests {
		if got := backoff(tc.base, tc.attempt); got != tc.want {
			t.Errorf("backoff(%s, %d) = %s, want %s", tc.base, tc.attempt, got, tc.want)
		}
	}
}

func TestFailReason(t *testing.T) {
	if got := string(failReason(errors.New("boom"))); got != "boom" {
		t.Errorf("reason %q, want boom", got)
	}
	if got := string(failReason(errors.New(""))); got == "" {
		t.Errorf("empty error gave an empty reason")
	}
	long := failReason(errors.New(strings.Repeat("x", 3000)))
	if len(long) != MaxReason {
		t.Errorf("reason of %d bytes, want %d", len(long), MaxReason)
	}
	// "é" is two bytes: byte 1024 falls inside a rune.
	r := failReason(errors.New("a" + strings.Repeat("é", 1000)))
	if len(r) != MaxReason-1 || !utf8.Valid(r) {
		t.Errorf("reason of %d bytes (valid UTF-8: %v), want %d valid bytes", len(r), utf8.Valid(r), MaxReason-1)
	}
}

func TestReadyOnConnect(t *testing.T) {
	b := newFakeBroker(t)
	startWorker(t, Config{Brokers: []string{b.ep}, Service: "svc.ready"}, echo)
	_, frames, _ := b.expect(mdp.Ready, "connect")
	want := [][]byte{{}, []byte("MDPW01"), {0x01}, []byte("svc.ready")}
	if !framesEqual(frames, want) {
		t.Fatalf("READY frames %q, want %q", frames, want)
	}
}

func TestRequestReply(t *testing.T) {
	b := newFakeBroker(t)
	r := startWorker(t, Config{Brokers: []string{b.ep}}, func(_ context.Context, req [][]byte) ([][]byte, error) {
		if string(req[0]) == "nothing" {
			return nil, nil
		}
		out := make([][]byte, 0, len(req)+1)
		for i := len(req) - 1; i >= 0; i-- {
			out = append(out, req[i])
		}
		return append(out, []byte{}), nil
	})
	id, _, _ := b.expect(mdp.Ready, "connect")

	client := []byte{0x00, 't', 'o', 'k', 0xff, 0x00}
	body := [][]byte{{0x00, 0xff, 0x10, 0x00}, {}, []byte("third")}
	b.request(id, client, body...)
	_, frames, _ := b.expect(mdp.Reply, "binary request")
	want := mdp.WorkerEnvelope(mdp.Reply, client, []byte("third"), []byte{}, []byte{0x00, 0xff, 0x10, 0x00}, []byte{})
	if !framesEqual(frames, want) {
		t.Fatalf("REPLY frames %q, want %q", frames, want)
	}

	b.request(id, []byte("c2"), []byte("nothing"))
	_, frames, _ = b.expect(mdp.Reply, "empty reply")
	want = [][]byte{{}, []byte("MDPW01"), {0x03}, []byte("c2"), {}, {}}
	if !framesEqual(frames, want) {
		t.Fatalf("REPLY frames for an empty reply %q, want %q", frames, want)
	}

	if _, err := r.shutdown(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	st := r.w.Stats()
	if st.Requests != 2 || st.Replies != 2 || st.Failures != 0 || st.Reconnects != 0 || st.Dropped != 0 {
		t.Errorf("stats %+v, want 2 requests, 2 replies, nothing else", st)
	}
}

func TestHandlerErrorSendsFail(t *testing.T) {
	b := newFakeBroker(t)
	r := startWorker(t, Config{Brokers: []string{b.ep}}, func(_ context.Context, req [][]byte) ([][]byte, error) {
		switch string(req[0]) {
		case "long":
			return nil, errors.New(strings.Repeat("x", 5000))
		case "panic":
			panic("kaboom")
		}
		return [][]byte{[]byte("ignored")}, fmt.Errorf("cannot %s", req[0])
	})
	id, _, _ := b.expect(mdp.Ready, "connect")

	b.request(id, []byte("c1"), []byte("boom"))
	_, frames, _ := b.expect(mdp.Fail, "handler error")
	want := [][]byte{{}, []byte("MDPW01"), {0x0F}, []byte("c1"), {}, []byte("cannot boom")}
	if !framesEqual(frames, want) {
		t.Fatalf("FAIL frames %q, want %q", frames, want)
	}
	if m, err := mdp.ParseBroker(frames); err != nil || m.Command != mdp.Fail {
		t.Errorf("the broker's parser rejects the FAIL: %v", err)
	}

	b.request(id, []byte("c2"), []byte("long"))
	_, frames, _ = b.expect(mdp.Fail, "long error")
	if len(frames) != 6 || string(frames[3]) != "c2" || len(frames[5]) != MaxReason {
		t.Fatalf("FAIL for a long error: %d frames, reason of %d bytes, want 6 frames and %d bytes", len(frames), len(frames[len(frames)-1]), MaxReason)
	}

	b.request(id, []byte("c3"), []byte("panic"))
	_, frames, _ = b.expect(mdp.Fail, "handler panic")
	if len(frames) != 6 || string(frames[3]) != "c3" || !bytes.Contains(frames[5], []byte("kaboom")) {
		t.Fatalf("FAIL for a panic %q, want client c3 and a reason naming the panic", frames)
	}

	if _, err := r.shutdown(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := r.w.Stats(); st.Requests != 3 || st.Failures != 3 || st.Replies != 0 {
		t.Errorf("stats %+v, want 3 requests and 3 failures", st)
	}
}

// TestHeartbeatsWhileHandlerRuns: the wait's deadline comes from the
// heartbeat schedule, so HEARTBEATs go out while a handler runs, whether
// the slot waits in Go's poller or in the zmq_poll fallback.
func TestHeartbeatsWhileHandlerRuns(t *testing.T) {
	for _, mode := range []struct {
		name     string
		pollOnly bool
	}{{"readable", false}, {"zmq_poll", true}} {
		t.Run(mode.name, func(t *testing.T) { testHeartbeatsWhileHandlerRuns(t, mode.pollOnly) })
	}
}

func testHeartbeatsWhileHandlerRuns(t *testing.T, pollOnly bool) {
	b := newFakeBroker(t)
	started, release := make(chan struct{}), make(chan struct{})
	// A high liveness: the fake broker sends no heartbeats of its own.
	r := startWorkerWith(t, Config{Brokers: []string{b.ep}, HeartbeatInterval: 50 * time.Millisecond, Liveness: 100},
		func(ctx context.Context, req [][]byte) ([][]byte, error) {
			close(started)
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return [][]byte{[]byte("done")}, nil
		}, func(w *Worker) { w.pollOnly = pollOnly })
	id, _, _ := b.expect(mdp.Ready, "connect")
	b.request(id, []byte("c"), []byte("slow"))
	select {
	case <-started:
	case <-time.After(wait):
		t.Fatalf("handler not called within %s", wait)
	}
	for i := range 3 {
		_, frames, _ := b.recvCommand("heartbeat while busy")
		if got := commandOf(t, frames); got != mdp.Heartbeat {
			t.Fatalf("message %d while the handler runs is %s, want HEARTBEAT", i+1, got)
		}
		if len(frames) != 3 {
			t.Fatalf("HEARTBEAT has %d frames, want 3", len(frames))
		}
	}
	close(release)
	_, frames, _ := b.expect(mdp.Reply, "slow request")
	if string(frames[3]) != "c" || string(frames[5]) != "done" {
		t.Fatalf("REPLY %q, want client c and body done", frames)
	}
	if _, err := r.shutdown(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := r.w.Stats(); st.Heartbeats < 3 || st.Replies != 1 {
		t.Errorf("stats %+v, want at least 3 heartbeats and 1 reply", st)
	}
}

// recvCommand receives one message within wait or fails the test.
func (b *fakeBroker) recvCommand(what string) (string, [][]byte, bool) {
	b.t.Helper()
	id, frames, ok := b.recv(wait)
	if !ok {
		b.t.Fatalf("%s: nothing from the worker within %s", what, wait)
	}
	return id, frames, ok
}

func TestDisconnectReconnects(t *testing.T) {
	b := newFakeBroker(t)
	r := startWorker(t, Config{Brokers: []string{b.ep}, HeartbeatInterval: time.Second, Liveness: 10}, echo)
	id1, _, _ := b.expect(mdp.Ready, "connect")
	b.send(id1, mdp.WorkerCommand(mdp.Disconnect)...)
	id2, frames, _ := b.expect(mdp.Ready, "after DISCONNECT")
	if id2 == id1 {
		t.Fatalf("READY after DISCONNECT came on the old connection (routing id %x)", id1)
	}
	if string(frames[3]) != "echo" {
		t.Fatalf("READY after DISCONNECT for %q, want echo", frames[3])
	}
	// The new registration works.
	b.request(id2, []byte("c"), []byte("again"))
	if _, frames, _ := b.expect(mdp.Reply, "request after reconnect"); string(frames[5]) != "again" {
		t.Fatalf("REPLY %q, want body again", frames)
	}
	if _, err := r.shutdown(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := r.w.Stats(); st.Disconnects != 1 || st.Reconnects != 1 || st.Replies != 1 {
		t.Errorf("stats %+v, want 1 disconnect, 1 reconnect, 1 reply", st)
	}
}

func TestSilentBrokerFailover(t *testing.T) {
	a, b := newFakeBroker(t), newFakeBroker(t)
	r := startWorker(t, Config{Brokers: []string{a.ep, b.ep}, HeartbeatInterval: 50 * time.Millisecond, Liveness: 3}, echo)
	a.expect(mdp.Ready, "connect to the first broker")
	// a never answers: the worker gives up on it after 150ms.
	id, frames, _ := b.expect(mdp.Ready, "failover to the second broker")
	if string(frames[3]) != "echo" {
		t.Fatalf("READY for %q, want echo", frames[3])
	}
	b.request(id, []byte("c"), []byte("via b"))
	if _, frames, _ := b.expect(mdp.Reply, "request on the second broker"); string(frames[5]) != "via b" {
		t.Fatalf("REPLY %q, want body via b", frames)
	}
	if _, err := r.shutdown(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := r.w.Stats(); st.Timeouts < 1 || st.Reconnects < 1 || st.Replies != 1 {
		t.Errorf("stats %+v, want a timeout, a reconnect and 1 reply", st)
	}
}

func TestCancelSendsDisconnect(t *testing.T) {
	b := newFakeBroker(t)
	started, cancelled := make(chan struct{}), make(chan struct{})
	r := startWorker(t, Config{Brokers: []string{b.ep}}, func(ctx context.Context, _ [][]byte) ([][]byte, error) {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	})
	id, _, _ := b.expect(mdp.Ready, "connect")
	b.request(id, []byte("c"), []byte("forever"))
	select {
	case <-started:
	case <-time.After(wait):
		t.Fatalf("handler not called within %s", wait)
	}
	took, err := r.shutdown()
	if err != nil {
		t.Fatalf("Run returned %v on cancel, want nil", err)
	}
	if took > 2*time.Second {
		t.Errorf("Run took %s to return after cancel", took)
	}
	_, frames, _ := b.expect(mdp.Disconnect, "after cancel")
	if len(frames) != 3 {
		t.Errorf("DISCONNECT has %d frames, want 3", len(frames))
	}
	select {
	case <-cancelled:
	case <-time.After(wait):
		t.Fatalf("the handler's context was not cancelled within %s", wait)
	}
	if st := r.w.Stats(); st.Discarded != 1 || st.Replies != 0 || st.Failures != 0 {
		t.Errorf("stats %+v, want 1 discarded result and no reply", st)
	}
}

func TestLostConnectionWhileBusy(t *testing.T) {
	a, b := newFakeBroker(t), newFakeBroker(t)
	started, release := make(chan struct{}), make(chan struct{})
	r := startWorker(t, Config{Brokers: []string{a.ep, b.ep}, HeartbeatInterval: time.Second, Liveness: 10},
		func(_ context.Context, req [][]byte) ([][]byte, error) {
			if string(req[0]) == "block" {
				close(started)
				<-release
			}
			return req, nil
		})
	idA, _, _ := a.expect(mdp.Ready, "connect to a")
	a.request(idA, []byte("c1"), []byte("block"))
	select {
	case <-started:
	case <-time.After(wait):
		t.Fatalf("handler not called within %s", wait)
	}
	a.send(idA, mdp.WorkerCommand(mdp.Disconnect)...)
	// Busy, the worker must not announce READY anywhere.
	b.expectNothing("while the handler of a lost connection runs")
	close(release)
	idB, _, _ := b.expect(mdp.Ready, "once the handler returned")
	a.expectNothing("the result of the lost request")
	b.request(idB, []byte("c2"), []byte("fresh"))
	if _, frames, _ := b.expect(mdp.Reply, "request after the lost one"); string(frames[3]) != "c2" || string(frames[5]) != "fresh" {
		t.Fatalf("REPLY %q, want client c2 and body fresh", frames)
	}
	if _, err := r.shutdown(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := r.w.Stats(); st.Discarded != 1 || st.Replies != 1 || st.Requests != 2 || st.Disconnects != 1 {
		t.Errorf("stats %+v, want 2 requests, 1 discarded, 1 reply, 1 disconnect", st)
	}
}

func TestMalformedDropped(t *testing.T) {
	b := newFakeBroker(t)
	r := startWorker(t, Config{Brokers: []string{b.ep}, HeartbeatInterval: time.Second, Liveness: 10}, echo)
	id, _, _ := b.expect(mdp.Ready, "connect")
	bad := [][][]byte{
		{[]byte("junk")},
		{{}, []byte("MDPW01")},
		{{}, []byte("MDPW01"), {0x02}, []byte("client")},                           // REQUEST without body
		{{}, []byte("MDPW01"), {0x02}, []byte("client"), []byte("x"), []byte("b")}, // no empty frame
		{{}, []byte("MDPC01"), {0x04}},                                             // client header
		{{}, []byte("MDPW01"), {0x09}},                                             // unknown command
		{{}, []byte("MDPW01"), {0x04}, []byte("extra")},                            // HEARTBEAT with a body
		{{}, []byte("MDPW01"), {0x03}, []byte("client"), {}, []byte("b")},          // REPLY to a worker
	}
	for _, m := range bad {
		b.send(id, m...)
	}
	b.request(id, []byte("c"), []byte("still alive"))
	if _, frames, _ := b.expect(mdp.Reply, "request after malformed messages"); string(frames[5]) != "still alive" {
		t.Fatalf("REPLY %q, want body still alive", frames)
	}
	if _, err := r.shutdown(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := r.w.Stats(); st.Dropped != uint64(len(bad)) || st.Requests != 1 || st.Reconnects != 0 {
		t.Errorf("stats %+v, want %d dropped, 1 request, no reconnect", st, len(bad))
	}
}

func TestRunTwice(t *testing.T) {
	b := newFakeBroker(t)
	r := startWorker(t, Config{Brokers: []string{b.ep}}, echo)
	b.expect(mdp.Ready, "connect")
	if err := r.w.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Fatalf("second concurrent Run returned %v, want ErrRunning", err)
	}
	if _, err := r.shutdown(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	b.expect(mdp.Disconnect, "first Run stopped")
	// Once stopped, the worker runs again.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.w.Run(ctx) }()
	b.expect(mdp.Ready, "second Run")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("second Run: %v", err)
		}
	case <-time.After(wait):
		t.Fatalf("second Run did not return within %s", wait)
	}
}

func TestRunWithDoneContext(t *testing.T) {
	w, err := New(Config{Brokers: []string{"tcp://127.0.0.1:1"}, Service: "echo", Logger: testLogger(t)}, echo)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatalf("Run with a done context: %v", err)
	}
}

func framesEqual(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// A broker endpoint where nothing listens, with a liveness shorter than
// the wait for refused connections: the worker sees silence first, and
// its log says what that may be, not only "broker silent", and not that
// it lost a broker it never reached.
func TestNothingListeningSaysSo(t *testing.T) {
	var logs harness.SyncBuffer
	startWorker(t, Config{Brokers: []string{harness.ReservedEndpoint(t)}, HeartbeatInterval: 50 * time.Millisecond, Liveness: 3,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}, echo)
	waitLog(t, &logs, "broker not reached")
	if !strings.Contains(logs.String(), "nothing answered since connecting: is a broker listening there") {
		t.Fatalf("the broker-not-reached line does not say nothing answered:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "lost broker") {
		t.Fatalf("the worker says it lost a broker it never reached:\n%s", logs.String())
	}
}

// The same with the default liveness: the refused connections are seen
// (the socket monitor) and said within a second or so, not as silence
// after Liveness heartbeats.
func TestRefusedConnectionSaysSo(t *testing.T) {
	var logs harness.SyncBuffer
	startWorker(t, Config{Brokers: []string{harness.ReservedEndpoint(t)},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}, echo)
	waitLog(t, &logs, "connection refused")
}

// A broker that heartbeats much more often than the worker (its
// --heartbeat shorter) will drop the worker as silent: the worker says so
// once, naming --heartbeat.
func TestFastBrokerHeartbeatsSaySo(t *testing.T) {
	b, id, logs := loggedWorker(t)
	for range 6 {
		b.send(id, mdp.WorkerCommand(mdp.Heartbeat)...)
		time.Sleep(50 * time.Millisecond)
	}
	waitLog(t, logs, "give the worker the broker's --heartbeat")
	if n := strings.Count(logs.String(), "heartbeats much more often"); n != 1 {
		t.Errorf("said %d times, want once:\n%s", n, logs.String())
	}
}

// The worker says once per connection when the broker took its READY
// (its first HEARTBEAT or REQUEST came): "registered".
func TestRegisteredSaysSo(t *testing.T) {
	b, id, logs := loggedWorker(t)
	if strings.Contains(logs.String(), "registered") {
		t.Fatalf("registered before the broker said anything:\n%s", logs.String())
	}
	for range 2 {
		b.send(id, mdp.WorkerCommand(mdp.Heartbeat)...)
	}
	waitLog(t, logs, "registered with broker")
	time.Sleep(100 * time.Millisecond)
	if n := strings.Count(logs.String(), "registered with broker"); n != 1 {
		t.Errorf("said %d times, want once:\n%s", n, logs.String())
	}
}

// waitLog waits up to wait for logs to hold want.
func waitLog(t *testing.T, logs *harness.SyncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log within %s:\n%s", want, wait, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// loggedWorker starts an echo worker (heartbeat 1s) against a fake broker,
// its log in logs, and returns its routing id once its READY came.
func loggedWorker(t *testing.T) (b *fakeBroker, id string, logs *harness.SyncBuffer) {
	t.Helper()
	logs = new(harness.SyncBuffer)
	b = newFakeBroker(t)
	startWorker(t, Config{Brokers: []string{b.ep}, HeartbeatInterval: time.Second, Liveness: 10,
		Logger: slog.New(slog.NewTextHandler(logs, nil))}, echo)
	id, _, _ = b.expect(mdp.Ready, "connect")
	return b, id, logs
}
