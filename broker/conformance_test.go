package broker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker"
)

// These tests speak raw 7/MDP and 8/MMI frames to a running broker.

func TestClientREQ(t *testing.T) {
	e := start(t, testConfig(t), nil)
	w := e.worker("w", "echo")
	c := e.peer("client", zmq.REQ)
	c.send(hdrClient, "echo", "hello", "") // REQ adds the empty delimiter
	client, body := w.request()
	if !equal(body, []string{"hello", ""}) {
		t.Fatalf("worker got body %q", body)
	}
	w.reply(client, "HELLO", "")
	c.expect(hdrClient, "echo", "HELLO", "")
}

func TestClientDEALER(t *testing.T) {
	e := start(t, testConfig(t), nil)
	w := e.worker("w", "echo")
	c := e.dealer("client")
	c.send("", hdrClient, "echo", "one")
	c.send("", hdrClient, "echo", "two")
	for _, want := range []string{"one", "two"} {
		client, body := w.request()
		if !equal(body, []string{want}) {
			t.Fatalf("worker got %q, want %q", body, want)
		}
		w.reply(client, strings.ToUpper(want))
		c.expect("", hdrClient, "echo", strings.ToUpper(want))
	}
	st := e.stats()
	if st.RequestsDispatched != 2 || st.RepliesRelayed != 2 {
		t.Fatalf("stats %+v", st.Counters)
	}
}

func TestWorkerHeartbeats(t *testing.T) {
	cfg := testConfig(t)
	e := start(t, cfg, nil)
	w := e.worker("w", "echo")
	// The broker heartbeats an idle worker; a worker that answers stays
	// registered well past Interval × Liveness.
	began := time.Now()
	expiry := cfg.HeartbeatInterval * time.Duration(cfg.HeartbeatLiveness)
	for beats := 0; beats < 10 || time.Since(began) < 2*expiry; beats++ {
		w.expect("", hdrWorker, cHeart)
		w.heartbeat()
	}
	if got := e.mmi("echo"); got != "200" {
		t.Fatalf("mmi.service echo = %s after heartbeats, want 200", got)
	}
	if st := e.stats(); st.WorkersExpired != 0 || st.Workers != 1 {
		t.Fatalf("stats: %d workers, %d expired; want 1, 0", st.Workers, st.WorkersExpired)
	}
	// DISCONNECT from the worker removes it at once, with no answer.
	w.send("", hdrWorker, cDisc)
	e.waitWorkers("echo", 0)
	if st := e.stats(); st.DisconnectsSent != 0 {
		t.Fatalf("broker sent %d DISCONNECTs, want 0", st.DisconnectsSent)
	}
}

func TestWorkerExpiry(t *testing.T) {
	cfg := testConfig(t)
	e := start(t, cfg, nil)
	began := time.Now()
	w := e.worker("w", "echo")
	e.waitWorkers("echo", 1)
	// A silent worker gets heartbeats, then DISCONNECT.
	w.disconnected()
	expiry := cfg.HeartbeatInterval * time.Duration(cfg.HeartbeatLiveness)
	if took := time.Since(began); took < expiry {
		t.Fatalf("worker expired after %s, before Interval × Liveness = %s", took, expiry)
	}
	st := e.waitStats("worker expiry", func(st broker.Stats) bool { return st.WorkersExpired == 1 })
	if st.Workers != 0 {
		t.Fatalf("%d workers registered, want 0", st.Workers)
	}
	if got := e.mmi("echo"); got != "404" {
		t.Fatalf("mmi.service echo = %s after expiry, want 404", got)
	}
}

func TestProtocolErrorsDisconnect(t *testing.T) {
	e := start(t, testConfig(t), func(b *broker.Broker) {
		b.Handle("titanic.", handlerFunc(func(broker.Request) [][]byte { return nil }))
	})
	tests := []struct {
		name string
		msgs [][]string
	}{
		{"second READY", [][]string{{"", hdrWorker, cReady, "echo"}, {"", hdrWorker, cReady, "echo"}}},
		{"REPLY from an unregistered worker", [][]string{{"", hdrWorker, cReply, "someone", "", "x"}}},
		{"HEARTBEAT from an unregistered worker", [][]string{{"", hdrWorker, cHeart}}},
		{"FAIL from an unregistered worker", [][]string{{"", hdrWorker, cFail, "someone", "", "why"}}},
		{"READY for mmi.foo", [][]string{{"", hdrWorker, cReady, "mmi.foo"}}},
		{"READY for a Handler prefix", [][]string{{"", hdrWorker, cReady, "titanic.request"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &worker{e.dealer("w")}
			for _, m := range tt.msgs {
				w.send(m...)
			}
			w.disconnected()
		})
	}
	st := e.waitStats("no workers", func(st broker.Stats) bool { return st.Workers == 0 })
	if st.DisconnectsSent != uint64(len(tests)) {
		t.Fatalf("%d DISCONNECTs counted, want %d", st.DisconnectsSent, len(tests))
	}
	for _, name := range []string{"echo", "mmi.foo"} {
		if s, ok := st.Service(name); ok {
			t.Fatalf("service %q still known: %+v", name, s)
		}
	}
}

func TestMMI(t *testing.T) {
	e := start(t, testConfig(t), func(b *broker.Broker) {
		b.Handle("titanic.", handlerFunc(func(broker.Request) [][]byte { return nil }))
	})
	if got := e.mmi("echo"); got != "404" {
		t.Fatalf("mmi.service echo = %s with no worker, want 404", got)
	}
	w := e.worker("w", "echo")
	e.waitWorkers("echo", 1)
	if got := e.mmi("echo"); got != "200" {
		t.Fatalf("mmi.service echo = %s with an idle worker, want 200", got)
	}
	c := e.dealer("client")
	c.send("", hdrClient, "echo", "x")
	client, _ := w.request()
	if got := e.mmi("echo"); got != "200" {
		t.Fatalf("mmi.service echo = %s with a busy worker, want 200", got)
	}
	w.reply(client, "y")
	c.expect("", hdrClient, "echo", "y")
	if got := e.mmi("titanic.request"); got != "200" {
		t.Fatalf("mmi.service titanic.request = %s, want 200", got)
	}
	// Other mmi.* services: 501, on a DEALER client.
	c.send("", hdrClient, "mmi.foo", "echo")
	c.expect("", hdrClient, "mmi.foo", "501")
	if st := e.stats(); st.MMIRequests != 5 {
		t.Fatalf("%d MMI requests counted, want 5", st.MMIRequests)
	}
}

func TestPlainRequestExpiry(t *testing.T) {
	cfg := testConfig(t)
	cfg.RequestExpiry = 100 * time.Millisecond
	e := start(t, cfg, nil)
	c := e.dealer("client")
	c.send("", hdrClient, "echo", "old")
	e.waitStats("request expiry", func(st broker.Stats) bool { return st.RequestsExpired == 1 })
	// A worker that comes later never sees the expired request: its first
	// request is the new one.
	w := e.worker("w", "echo")
	c.send("", hdrClient, "echo", "new")
	client, body := w.request()
	if !equal(body, []string{"new"}) {
		t.Fatalf("worker got %q, want the new request", body)
	}
	w.reply(client, "ok")
	c.expect("", hdrClient, "echo", "ok")
}

func TestQueueBound(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxQueue = 2
	e := start(t, cfg, nil)
	c := e.dealer("client")
	for _, b := range []string{"1", "2", "3"} {
		c.send("", hdrClient, "echo", b)
	}
	st := e.waitStats("a dropped request", func(st broker.Stats) bool { return st.RequestsDropped == 1 })
	if s, _ := st.Service("echo"); s.Queued != 2 {
		t.Fatalf("queued %d, want 2", s.Queued)
	}
}

func TestLRUAcrossThreeWorkers(t *testing.T) {
	e := start(t, testConfig(t), nil)
	var ws []*worker
	for i, name := range []string{"w1", "w2", "w3"} {
		ws = append(ws, e.worker(name, "echo"))
		e.waitWorkers("echo", i+1)
	}
	c := e.dealer("client")
	round := func(order []int, bodies []string) {
		t.Helper()
		for _, b := range bodies {
			c.send("", hdrClient, "echo", b)
		}
		clients := make([]string, len(order))
		for i, wi := range order {
			client, body := ws[wi].request()
			if !equal(body, []string{bodies[i]}) {
				t.Fatalf("%s got %q, want %q (LRU order %v)", ws[wi].name, body, bodies[i], order)
			}
			clients[i] = client
		}
		// Reply in the order w2, w1, w3, so that w2 is idle longest.
		for _, wi := range []int{1, 0, 2} {
			i := indexOf(order, wi)
			ws[wi].reply(clients[i], "r-"+bodies[i])
			c.expect("", hdrClient, "echo", "r-"+bodies[i])
		}
	}
	round([]int{0, 1, 2}, []string{"a", "b", "c"})
	round([]int{1, 0, 2}, []string{"d", "e", "f"})
}

func indexOf(xs []int, x int) int {
	for i, v := range xs {
		if v == x {
			return i
		}
	}
	return -1
}

func TestPlainRequestNotRedelivered(t *testing.T) {
	e := start(t, testConfig(t), nil)
	w1 := e.worker("w1", "echo")
	c := e.dealer("client")
	c.send("", hdrClient, "echo", "lost")
	w1.request()
	w1.send("", hdrWorker, cDisc)
	e.waitStats("the lost request", func(st broker.Stats) bool { return st.RequestsLost == 1 })
	w2 := e.worker("w2", "echo")
	c.send("", hdrClient, "echo", "next")
	if _, body := w2.request(); !equal(body, []string{"next"}) {
		t.Fatalf("w2 got %q: a plain request was redelivered", body)
	}
}

func TestMalformedFrames(t *testing.T) {
	e := start(t, testConfig(t), nil)
	bad := [][]string{
		{"garbage"},
		{"", "garbage", "echo", "x"},
		{""},
		{"", hdrClient},
		{"", hdrClient, "echo"},  // no body
		{"", hdrClient, "", "x"}, // empty service
		{"", hdrClient, strings.Repeat("s", 300), "x"},     // 300-byte service
		{"x", hdrClient, "echo", "x"},                      // no empty delimiter
		{"", "MDPC02", "\x01", "echo", "x"},                // MDP/0.2
		{"", hdrWorker},                                    // no command
		{"", hdrWorker, "1", "echo"},                       // ASCII command
		{"", hdrWorker, "\x01\x01", "echo"},                // two-byte command
		{"", hdrWorker, cReady},                            // no service
		{"", hdrWorker, cReady, ""},                        // empty service
		{"", hdrWorker, cReady, strings.Repeat("s", 300)},  // 300-byte service
		{"", hdrWorker, cReady, "echo", "extra"},           // extra frame
		{"", hdrWorker, cReply, "client", ""},              // no body
		{"", hdrWorker, cReply, "client", "x", "body"},     // no empty frame
		{"", hdrWorker, cRequest, "client", "", "body"},    // broker-to-worker command
		{"", hdrWorker, cHeart, "extra"},                   // extra frame
		{"", hdrWorker, cFail, "client", "", "a", "b"},     // two reasons
		{"", hdrWorker, "\x09"},                            // unknown command
		{hdrClient, "echo", "x"},                           // DEALER without delimiter
		{strings.Repeat("\xff", 4096), "\x00", "\x00\x01"}, // binary junk
	}
	x := e.dealer("attacker")
	for _, m := range bad {
		x.send(m...)
	}
	// Registered workers are not disturbed by a malformed message either.
	w := e.worker("w", "echo")
	e.waitWorkers("echo", 1)
	w.send("", hdrWorker, cReady) // malformed READY: dropped, not a second READY
	st := e.waitStats("malformed messages", func(st broker.Stats) bool { return st.Malformed == uint64(len(bad)+1) })
	// One DISCONNECT: the READY for a 300-byte service, which 7/MDP
	// finds valid and this broker cannot take (a worker that sent it
	// must not believe itself registered).
	if st.DisconnectsSent != 1 {
		t.Fatalf("%d DISCONNECTs for malformed messages, want 1 (the READY of a 300-byte service)", st.DisconnectsSent)
	}
	// The broker keeps serving.
	c := e.peer("client", zmq.REQ)
	c.send(hdrClient, "echo", "still there?")
	client, _ := w.request()
	w.reply(client, "yes")
	c.expect(hdrClient, "echo", "yes")
}

type handlerFunc func(broker.Request) [][]byte

func (h handlerFunc) ServeMDP(r broker.Request) [][]byte { return h(r) }
func (h handlerFunc) Serves(string) bool                 { return true }

func TestHandler(t *testing.T) {
	var b *broker.Broker
	later := make(chan broker.Request, 1)
	e := start(t, testConfig(t), func(br *broker.Broker) {
		b = br
		br.Handle("titanic.", handlerFunc(func(r broker.Request) [][]byte {
			if r.Service == "titanic.later" {
				later <- r
				return nil
			}
			return append([][]byte{[]byte("now")}, r.Body...)
		}))
	})
	c := e.dealer("client")
	c.send("", hdrClient, "titanic.request", "echo", "body")
	c.expect("", hdrClient, "titanic.request", "now", "echo", "body")

	c.send("", hdrClient, "titanic.later", "x")
	var r broker.Request
	select {
	case r = <-later:
	case <-time.After(waitFor):
		t.Fatalf("handler not called within %s", waitFor)
	}
	if r.Service != "titanic.later" || joined(r.Body) != "x" || r.Client.String() == "" {
		t.Fatalf("handler got %+v", r)
	}
	go b.Reply(r.Client, r.Service, [][]byte{[]byte("200"), []byte("later")})
	c.expect("", hdrClient, "titanic.later", "200", "later")
	// An empty body still makes a valid reply (one empty frame).
	c.send("", hdrClient, "titanic.later", "y")
	r = <-later
	b.Reply(r.Client, r.Service, nil)
	c.expect("", hdrClient, "titanic.later", "")
	if st := e.stats(); st.HandlerRequests != 3 || st.HandlerReplies != 3 || st.Requests != 3 {
		t.Fatalf("counters %+v", st.Counters)
	}
}

func TestEndpointsAndBindError(t *testing.T) {
	e := start(t, testConfig(t), nil)
	ep := e.b.Endpoints()
	if len(ep) != 1 || !strings.HasPrefix(ep[0], "tcp://127.0.0.1:") || strings.HasSuffix(ep[0], ":*") {
		t.Fatalf("Endpoints() = %q, want the bound port", ep)
	}
	// The port is taken: a second broker's Run fails with a bind error.
	cfg := testConfig(t)
	cfg.Endpoints = ep
	b2, err := broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	err = b2.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "bind "+ep[0]) {
		t.Fatalf("Run on a taken port: %v, want a bind error naming %s", err, ep[0])
	}
	select {
	case <-b2.Ready():
		t.Fatal("Ready closed although bind failed")
	default:
	}
	if err := b2.Run(ctx); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("second Run: %v, want ErrClosed", err)
	}
	if _, err := b2.Stats(ctx); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Stats after Run returned: %v, want ErrClosed", err)
	}
	b2.Wake("echo") // no-ops once stopped, never block
	b2.Release(1)
}

func TestConfigAndSetupErrors(t *testing.T) {
	cfg := testConfig(t)
	cfg.HeartbeatInterval = -time.Second
	if _, err := broker.New(cfg); err == nil {
		t.Fatal("New accepted a negative heartbeat interval")
	}
	b, err := broker.New(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	b.Handle("mmi.", handlerFunc(func(broker.Request) [][]byte { return nil }))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := b.Run(ctx); err == nil || !strings.Contains(err.Error(), "mmi.") {
		t.Fatalf("Run after Handle(\"mmi.\"): %v, want an error", err)
	}
}

func TestShutdown(t *testing.T) {
	b, err := broker.New(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- b.Run(ctx) }()
	select {
	case <-b.Ready():
	case <-time.After(waitFor):
		t.Fatal("not ready")
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatalf("Run did not return within %s of cancel", waitFor)
	}
	<-b.Done()
}

// A handler registered with HandleFrom gets the address each request
// came from; one registered with Handle does not (reading it costs every
// message a lookup).
func TestHandlerFrom(t *testing.T) {
	got := make(chan broker.Request, 2)
	e := start(t, testConfig(t), func(br *broker.Broker) {
		br.HandleFrom("titanic.admin.", handlerFunc(func(r broker.Request) [][]byte { got <- r; return [][]byte{[]byte("200")} }))
		br.Handle("titanic.", handlerFunc(func(r broker.Request) [][]byte { got <- r; return [][]byte{[]byte("200")} }))
	})
	c := e.dealer("client")
	for _, tc := range []struct{ service, from string }{{"titanic.admin.x", "127.0.0.1"}, {"titanic.request", ""}} {
		c.send("", hdrClient, tc.service, "x")
		c.expect("", hdrClient, tc.service, "200")
		if r := <-got; r.From != tc.from {
			t.Errorf("%s: From = %q, want %q", tc.service, r.From, tc.from)
		}
	}
}

// A message whose frames are each under MaxMsgSize but larger in all is
// dropped (counted in TooLarge), not copied whole; the connection and
// the broker go on serving.
func TestMessageOverSizeInAllDropped(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxMsgSize = 100 << 10
	e := start(t, cfg, func(br *broker.Broker) {
		br.Handle("titanic.", handlerFunc(func(r broker.Request) [][]byte { return [][]byte{[]byte("200")} }))
	})
	c := e.dealer("client")
	frame := strings.Repeat("x", 90<<10)
	c.send("", hdrClient, "titanic.x", frame, frame, frame)
	c.send("", hdrClient, "titanic.x", "small")
	c.expect("", hdrClient, "titanic.x", "200")
	if st := e.stats(); st.TooLarge != 1 || st.HandlerRequests != 1 {
		t.Fatalf("TooLarge %d, handler requests %d; want 1 and 1 (the small one)", st.TooLarge, st.HandlerRequests)
	}
}

// A worker's reply of several frames, each under MaxMsgSize but larger
// in all than the bound, is dropped; the worker is removed (told to
// disconnect) and its job's attempt fails saying why, so the lease ends
// and the ticket is redelivered or fails: a worker that heartbeats while
// busy would otherwise hold the lease for good.
func TestTooLargeReplyFailsTheAttempt(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxMsgSize = 100 << 10
	src := newFakeSource()
	src.add("echo", "tok1", "job")
	e := start(t, cfg, func(b *broker.Broker) { b.SetSource(src) })
	w := e.worker("w", "echo")
	client, _ := w.request()
	frame := strings.Repeat("x", 90<<10)
	w.reply(client, frame, frame, frame)
	select {
	case f := <-src.failed:
		if !strings.Contains(f.reason, "max_message_size") {
			t.Fatalf("attempt failed with %q, want the size limit named", f.reason)
		}
	case c := <-src.completed:
		t.Fatalf("a reply over the bound completed the job (%d frames)", len(c.reply))
	case <-time.After(waitFor):
		t.Fatalf("the job's attempt did not fail within %s of a reply over the bound", waitFor)
	}
}

// TestStopSaysDisconnect: a broker stopped cleanly sends its registered
// workers DISCONNECT, so that they move to another broker at once instead
// of waiting out their heartbeat liveness.
func TestStopSaysDisconnect(t *testing.T) {
	e := start(t, testConfig(t), nil)
	w := e.worker("w1", "echo")
	e.waitWorkers("echo", 1)
	e.stop()
	w.disconnected()
}
