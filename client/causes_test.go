package client

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker/curve"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// unavailable asserts that err is an *UnavailableError (and matches
// ErrUnavailable) with one cause per endpoint, and returns it.
func unavailable(t *testing.T, err error, eps ...string) *UnavailableError {
	t.Helper()
	var ue *UnavailableError
	if !errors.Is(err, ErrUnavailable) || !errors.As(err, &ue) {
		t.Fatalf("err = %v, want an *UnavailableError matching ErrUnavailable", err)
	}
	if len(ue.Causes) != len(eps) {
		t.Fatalf("causes %+v, want one per endpoint %q", ue.Causes, eps)
	}
	for i, ep := range eps {
		if ue.Causes[i].Endpoint != ep || !strings.Contains(err.Error(), ep) {
			t.Fatalf("cause %d %+v / message %q: want endpoint %s named", i, ue.Causes[i], err, ep)
		}
	}
	return ue
}

// deadEndpoint is a local TCP endpoint nothing listens on.
func deadEndpoint(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep := "tcp://" + l.Addr().String()
	_ = l.Close()
	return ep
}

// A port nothing listens on: connection refused, after the Lazy Pirate
// tries (a restarting broker refuses for a moment: tries are kept).
func TestCauseRefused(t *testing.T) {
	ep := deadEndpoint(t)
	c := newClient(t, 200*time.Millisecond, 2, ep)
	_, err := c.Request(testCtx(t), "echo", frames("x"))
	ue := unavailable(t, err, ep)
	if got := ue.Causes[0]; got.Cause != CauseRefused || got.Connected {
		t.Fatalf("cause %+v, want CauseRefused, not connected", got)
	}
	if !strings.Contains(err.Error(), "connection refused (no broker listens there)") || !ue.All(CauseRefused) {
		t.Fatalf("message %q does not say connection refused", err)
	}
	if s := c.Stats(); s.Retries != 1 {
		t.Fatalf("stats %+v: want the 2 tries made (1 retry)", s)
	}
	if !strings.HasPrefix(err.Error(), "no broker answered: echo after 2 tries of 200ms per broker: ") || ue.Made != 2 {
		t.Fatalf("message %q (made %d): want the tries made", err, ue.Made)
	}
}

// A broker that takes the connection and never answers.
func TestCauseNoAnswer(t *testing.T) {
	f := newFake(t, func(string, [][]byte, int) [][]byte { return nil })
	// The tries must outlast the connection's making: with 2 of 150ms, a
	// loaded machine was not yet connected when they ended ("no
	// connection was begun").
	c := newClient(t, 500*time.Millisecond, 2, f.endpoint)
	_, err := c.Request(testCtx(t), "echo", frames("x"))
	ue := unavailable(t, err, f.endpoint)
	if got := ue.Causes[0]; got.Cause != CauseNoAnswer || !got.Connected {
		t.Fatalf("cause %+v, want CauseNoAnswer, connected", got)
	}
	if !strings.Contains(err.Error(), "connected, but no answer within 2 tries of 500ms") {
		t.Fatalf("message %q", err)
	}
}

// A broker that answered a first call and does not answer the next, on
// the connection the first one made: the second call's cause is no
// answer on a connection made, not a connection never begun (the
// connection came up before the call, whose monitor then saw no event:
// a pair's restarted node reported its join to a busy active that way,
// "no connection was begun: does the host name resolve?").
func TestCauseNoAnswerOnEarlierConnection(t *testing.T) {
	f := newFake(t, func(_ string, _ [][]byte, n int) [][]byte {
		if n == 1 {
			return frames("x")
		}
		return nil
	})
	c := newClient(t, 150*time.Millisecond, 1, f.endpoint)
	if _, err := c.Request(testCtx(t), "echo", frames("x")); err != nil {
		t.Fatal(err)
	}
	_, err := c.Request(testCtx(t), "echo", frames("y"))
	ue := unavailable(t, err, f.endpoint)
	if got := ue.Causes[0]; got.Cause != CauseNoAnswer || !got.Connected {
		t.Fatalf("cause %+v (%v), want CauseNoAnswer, connected", got, err)
	}
}

// rawRouter is a ROUTER of its own context that hands what it receives
// to got, owned by one goroutine; closeOnFirst closes it (the broker
// stops) once it received a message.
func rawRouter(t *testing.T, maxMsg int64, closeOnFirst bool) (ep string, got <-chan [][]byte) {
	t.Helper()
	zctx, s, ep0 := limitedRouter(t, maxMsg)
	ep = ep0
	ch := make(chan [][]byte, 64)
	runRouter(t, zctx, func(stop <-chan struct{}) {
		p := zmq.NewPoller()
		p.Add(s, zmq.POLLIN)
		for {
			select {
			case <-stop:
				_ = s.Close()
				return
			default:
			}
			if polled, err := p.Poll(10 * time.Millisecond); err != nil || len(polled) == 0 {
				continue
			}
			msg, err := s.RecvMessageBytes(0)
			if err != nil {
				continue
			}
			ch <- msg
			if closeOnFirst {
				_ = s.Close()
				<-stop
				return
			}
		}
	})
	return ep, ch
}

// runRouter runs loop, which owns the sockets of zctx, in a goroutine
// until the test ends: loop returns once stop is closed, and zctx is then
// terminated.
func runRouter(t *testing.T, zctx *zmq.Context, loop func(stop <-chan struct{})) {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		defer func() { _ = zctx.Term() }()
		loop(stop)
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// A request over the broker's ZMQ_MAXMSGSIZE: the broker drops the
// connection on it and takes the next one. The call fails at once (no
// point resending it), naming the size and the broker's setting; small
// requests on the same client still go through.
func TestCauseTooLarge(t *testing.T) {
	ep, got := rawRouter(t, 1024, false)
	c := newClient(t, 2*time.Second, 3, ep)
	start := time.Now()
	_, err := c.Request(testCtx(t), "echo", [][]byte{make([]byte, 5000)})
	el := time.Since(start)
	ue := unavailable(t, err, ep)
	if got := ue.Causes[0]; got.Cause != CauseTooLarge || got.Largest != 5000 || got.Bytes <= 5000 {
		t.Fatalf("cause %+v, want CauseTooLarge of a 5000-byte frame", got)
	}
	for _, want := range []string{"echo failed at once: ", "closed the connection right after this request", "5000 bytes", "limits.max_message_size"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not say %q", err, want)
		}
	}
	// At once: within the try, which is 2s. The time is that of the
	// cut, libzmq's 100ms reconnect interval, a handshake and the cut of
	// the resend: about 0.5s, and 1.0s under CPU load (where a bound of
	// 1s failed).
	if el >= 2*time.Second {
		t.Errorf("gave up after %s; want at once (before one try's 2s)", el)
	}
	// A rejected request (resending cannot help), not only "no broker
	// answered": the CLI exits 4 on it, not 6.
	if !errors.Is(err, ErrRejected) || !ue.TooLarge() {
		t.Errorf("errors.Is(err, ErrRejected) = %v, TooLarge %v: want both true", errors.Is(err, ErrRejected), ue.TooLarge())
	}
	select {
	case m := <-got:
		t.Fatalf("the broker got %d frames: the request was not over its limit", len(m))
	default:
	}
	// The same client, a small request: it reaches the broker.
	go func() { _, _ = c.Request(testCtx(t), "echo", frames("small")) }()
	select {
	case m := <-got:
		if string(m[len(m)-1]) != "small" {
			t.Fatalf("broker got %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a small request after the large one did not reach the broker")
	}
}

// A broker that closes the connection on the request and is gone: not
// "too large", a broker that stopped.
func TestCauseClosed(t *testing.T) {
	ep, got := rawRouter(t, 0, true)
	c := newClient(t, 300*time.Millisecond, 2, ep)
	_, err := c.Request(testCtx(t), "echo", frames("x"))
	select {
	case <-got:
	default:
		t.Fatal("the broker never got the request")
	}
	ue := unavailable(t, err, ep)
	if got := ue.Causes[0]; got.Cause != CauseClosed && got.Cause != CauseRefused {
		t.Fatalf("cause %+v, want CauseClosed (or refused, had the close come before the request)", got)
	}
	if ue.Causes[0].Cause == CauseTooLarge {
		t.Fatal("a stopped broker was taken for a size limit")
	}
}

// A CURVE broker whose ZAP handler refuses the client's key: said at
// once (no point retrying), naming the allowlist; a client with the
// wrong server key or none fails its handshake, saying which. The broker
// closes a connection with the wrong server key without a word, as a
// load balancer without a backend does (TestSubmitThroughBalancerDuringFailover):
// that is given up once it lasted RefusedWait, short here (a plain
// client is mostly told why at once: CURVE's mechanism).
func TestCauseCurve(t *testing.T) {
	if !zmq.HasCurve() {
		t.Skip("skipping: libzmq built without CURVE")
	}
	server, _ := curve.NewKeyPair()
	me, _ := curve.NewKeyPair()
	stranger, _ := curve.NewKeyPair()
	f := newCurveFake(t, server, me.Public)
	for _, tc := range []struct {
		name  string
		keys  *CurveClient
		cause Cause
		says  string
	}{
		{"unknown key", &CurveClient{ServerPublic: server.Public, Public: stranger.Public, Secret: stranger.Secret}, CauseAuth,
			"refused this client's CURVE key (ZAP status 400: not in its allowlist, security.public_keys_dir"},
		{"wrong server key", &CurveClient{ServerPublic: stranger.Public, Public: me.Public, Secret: me.Secret}, CauseHandshake,
			"--curve-server-key"},
		{"plain", nil, CauseHandshake, "uses CURVE and this client does not"},
	} {
		c, err := New(Config{Brokers: []string{f.endpoint}, Timeout: 2 * time.Second, Retries: 3, Curve: tc.keys, RefusedWait: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = c.Request(testCtx(t), "echo", frames("hi"))
		el := time.Since(start)
		c.Close()
		ue := unavailable(t, err, f.endpoint)
		if ue.Causes[0].Cause != tc.cause || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: cause %+v, message %q; want cause %d saying %q", tc.name, ue.Causes[0], err, tc.cause, tc.says)
		}
		if el > time.Second {
			t.Errorf("%s: gave up after %s; want at once (before one try's 2s)", tc.name, el)
		}
		// No tries were spent: the message does not say they were.
		if ue.Made != 1 || !strings.HasPrefix(err.Error(), "echo failed at once: ") || strings.Contains(err.Error(), "tries of") {
			t.Errorf("%s: message %q (made %d), want \"echo failed at once: <cause>\"", tc.name, err, ue.Made)
		}
	}
}

// Two brokers refusing the key: find gives up at once too, and the
// error names both.
func TestCauseCurveEveryBroker(t *testing.T) {
	if !zmq.HasCurve() {
		t.Skip("skipping: libzmq built without CURVE")
	}
	server, _ := curve.NewKeyPair()
	me, _ := curve.NewKeyPair()
	stranger, _ := curve.NewKeyPair()
	a, b := newCurveFake(t, server, me.Public), newCurveFake(t, server, me.Public)
	c, err := New(Config{Brokers: []string{a.endpoint, b.endpoint}, Timeout: 2 * time.Second, Retries: 3,
		Curve: &CurveClient{ServerPublic: server.Public, Public: stranger.Public, Secret: stranger.Secret}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Submit(testCtx(t), "echo", frames("hi"), SubmitOptions{})
	if el := time.Since(start); el > time.Second {
		t.Errorf("gave up after %s; want at once", el)
	}
	if ue := unavailable(t, err, a.endpoint, b.endpoint); !ue.All(CauseAuth) {
		t.Fatalf("causes %+v, want CauseAuth for both", ue.Causes)
	}
	if !strings.Contains(err.Error(), " failed at once: ") || strings.Contains(err.Error(), "tries of") {
		t.Fatalf("message %q, want it to say the submit failed at once", err)
	}
}

// A lost quorum: every node answers that it does not serve; the error
// carries each node's words.
func TestCauseNotActiveEveryNode(t *testing.T) {
	var eps []string
	for _, why := range []string{"not active: no leader (1 of 3 voters reachable)", ""} {
		f := newFake(t, func(service string, _ [][]byte, _ int) [][]byte {
			if service == tsp.SvcRole {
				return tsp.EncodeRole(tsp.Role{Why: why})
			}
			return frames("500", "not active")
		})
		eps = append(eps, f.endpoint)
	}
	// Each node must be connected to and answer within the tries: with
	// tries of 50ms, a loaded machine had a node "connected, but no
	// answer" or not even connected (2 runs in 11). The call takes its
	// tries' time whatever it is: nodes that refuse are asked again
	// until then.
	c := newClient(t, 500*time.Millisecond, 2, eps...)
	_, err := c.Submit(testCtx(t), "echo", frames("x"), SubmitOptions{})
	ue := unavailable(t, err, eps...)
	if !ue.NoActive || !ue.All(CauseNotActive) {
		t.Fatalf("err %+v, want NoActive with every cause CauseNotActive", ue)
	}
	if ue.Causes[0].Detail != "not active: no leader (1 of 3 voters reachable)" || ue.Causes[1].Detail != "not active" {
		t.Fatalf("details %q, %q: want each node's words", ue.Causes[0].Detail, ue.Causes[1].Detail)
	}
}

// Every broker refusing connections ends the call after RefusedWait, not
// after the tries (9s for three brokers on the defaults), naming each.
func TestCauseRefusedEveryBrokerFast(t *testing.T) {
	eps := []string{deadEndpoint(t), deadEndpoint(t), deadEndpoint(t)}
	c, err := New(Config{Brokers: eps}) // the defaults: 3 tries of 1s, RefusedWait 2s
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Status(testCtx(t), ticket)
	el := time.Since(start)
	ue := unavailable(t, err, eps...)
	if !ue.All(CauseRefused) || ue.RefusedFor != DefaultRefusedWait {
		t.Fatalf("err %+v, want every cause CauseRefused and RefusedFor %s", ue, DefaultRefusedWait)
	}
	if el < DefaultRefusedWait || el > 5*time.Second {
		t.Fatalf("gave up after %s, want after the refused wait (%s) and well before the tries' 9s", el, DefaultRefusedWait)
	}
	if !strings.Contains(err.Error(), "every broker refused its connections for 2s") {
		t.Fatalf("message %q does not say why it gave up early", err)
	}
}

// A negative RefusedWait keeps the tries, as before it existed.
func TestRefusedWaitNegativeKeepsTries(t *testing.T) {
	ep := deadEndpoint(t)
	c, err := New(Config{Brokers: []string{ep}, Timeout: 400 * time.Millisecond, Retries: 3, RefusedWait: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Request(testCtx(t), "echo", frames("x"))
	ue := unavailable(t, err, ep)
	if ue.RefusedFor != 0 || ue.Causes[0].Cause != CauseRefused {
		t.Fatalf("err %+v, want CauseRefused after the tries (RefusedFor 0)", ue)
	}
	if s := c.Stats(); s.Retries != 2 {
		t.Fatalf("stats %+v: want the 3 tries made (2 retries)", s)
	}
}

// Pipelined submits to a dead broker fail with the endpoint's cause
// after the refused wait; the pipeline stays open for later submits.
func TestPipelineCauseRefused(t *testing.T) {
	ep := deadEndpoint(t)
	c, err := New(Config{Brokers: []string{ep}, RefusedWait: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testCtx(t)
	start := time.Now()
	var futs []*SubmitFuture
	for range 3 {
		f, err := c.SubmitAsync(ctx, "echo", frames("x"), SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		futs = append(futs, f)
	}
	for _, f := range futs {
		_, err := f.Ticket(ctx)
		if ue := unavailable(t, err, ep); ue.Causes[0].Cause != CauseRefused || ue.RefusedFor == 0 {
			t.Fatalf("err %+v, want CauseRefused, given up on the refused wait", ue)
		}
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("gave up after %s, want about the refused wait (500ms), before the tries' 3s", el)
	}
	f, err := c.SubmitAsync(ctx, "echo", frames("x"), SubmitOptions{})
	if err != nil {
		t.Fatalf("a submit after the failures: %v, want the pipeline still open", err)
	}
	if _, err := f.Ticket(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a submit after the failures: %v, want ErrUnavailable again", err)
	}
}

// A CURVE key the broker refuses fails pipelined submits at once, with
// the cause; the pipeline does not shut (it used to stop for good).
func TestPipelineCauseCurve(t *testing.T) {
	if !zmq.HasCurve() {
		t.Skip("skipping: libzmq built without CURVE")
	}
	server, _ := curve.NewKeyPair()
	me, _ := curve.NewKeyPair()
	stranger, _ := curve.NewKeyPair()
	f := newCurveFake(t, server, me.Public)
	c, err := New(Config{Brokers: []string{f.endpoint}, Timeout: 2 * time.Second, Retries: 3,
		Curve: &CurveClient{ServerPublic: server.Public, Public: stranger.Public, Secret: stranger.Secret}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testCtx(t)
	for round := range 2 {
		start := time.Now()
		fut, err := c.SubmitAsync(ctx, "echo", frames("hi"), SubmitOptions{})
		if err != nil {
			t.Fatalf("round %d: %v, want a future (the pipeline open)", round, err)
		}
		_, err = fut.Ticket(ctx)
		if ue := unavailable(t, err, f.endpoint); ue.Causes[0].Cause != CauseAuth {
			t.Fatalf("round %d: causes %+v, want CauseAuth", round, ue.Causes)
		}
		if el := time.Since(start); el > time.Second {
			t.Errorf("round %d: gave up after %s; want at once (before one try's 2s)", round, el)
		}
	}
}

// RefusedWait's default follows the patience asked for: all of a
// broker's tries but one, at least DefaultRefusedWait.
func TestRefusedWaitDefault(t *testing.T) {
	for _, tc := range []struct {
		timeout time.Duration
		retries int
		want    time.Duration
	}{
		{0, 0, 2 * time.Second},                         // the defaults: 3 tries of 1s
		{200 * time.Millisecond, 2, DefaultRefusedWait}, // impatient: the least
		{500 * time.Millisecond, 40, 19500 * time.Millisecond},
		{time.Second, 5, 4 * time.Second},
	} {
		c, err := New(Config{Brokers: []string{"tcp://127.0.0.1:1"}, Timeout: tc.timeout, Retries: tc.retries})
		if err != nil {
			t.Fatal(err)
		}
		got := c.cfg.RefusedWait
		c.Close()
		if got != tc.want {
			t.Errorf("Timeout %s, Retries %d: RefusedWait %s, want %s", tc.timeout, tc.retries, got, tc.want)
		}
	}
}

// RefusedAtOnce tells a call every broker refused for good from one whose
// tries ran out: only the latter wants more patience.
func TestRefusedAtOnce(t *testing.T) {
	forGood := []EndpointCause{{Cause: CauseTooLarge}, {Cause: CauseAuth}, {Cause: CauseHandshake}}
	mixed := []EndpointCause{{Cause: CauseTooLarge}, {Cause: CauseRefused}}
	for _, tc := range []struct {
		e    UnavailableError
		want bool
	}{
		{UnavailableError{Made: 1, Causes: forGood}, true},
		{UnavailableError{Made: 4, Causes: forGood}, true},
		{UnavailableError{Made: 4, Causes: forGood, waited: true}, false},
		{UnavailableError{Causes: forGood}, false},                                       // not counted: gave up on RefusedWait, or found no active broker
		{UnavailableError{Made: 1, Causes: forGood, RefusedFor: 2 * time.Second}, false}, // connections refused: a broker may yet listen
		{UnavailableError{Made: 2, Causes: mixed}, false},                                // one broker not listening: it may yet
		{UnavailableError{Made: 1}, false},
	} {
		if got := tc.e.RefusedAtOnce(); got != tc.want {
			t.Errorf("%+v: RefusedAtOnce %v, want %v", tc.e, got, tc.want)
		}
	}
}

// limitedRouter is a ROUTER of its own context with no linger and, when
// maxMsg > 0, that ZMQ_MAXMSGSIZE (limits.max_message_size), bound to
// ep, a free port of the loopback.
func limitedRouter(t *testing.T, maxMsg int64) (*zmq.Context, *zmq.Socket, string) {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	s, err := zctx.NewSocket(zmq.ROUTER)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.SetLinger(0)
	if maxMsg > 0 {
		if err := s.SetMaxmsgsize(maxMsg); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Bind("tcp://127.0.0.1:*"); err != nil {
		t.Fatal(err)
	}
	ep, _ := s.GetLastEndpoint()
	return zctx, s, ep
}
