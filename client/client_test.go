package client

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// fakeBroker is a raw ROUTER speaking MDPC01 frames, owned by one
// goroutine; answer decides the reply body for each request (nil: drop it).
//
// The question of find (tsp.SvcRole) is answered by answer too, but it
// is counted apart: requests and n count the other requests only.
type fakeBroker struct {
	endpoint string
	mu       sync.Mutex
	got      [][][]byte // request frames after the identity
	gotAt    []time.Time
	probes   []time.Time // when each question came
	ids      [][]byte    // the identity each request came from
	later    chan [][]byte
	stop     chan struct{}
	done     chan struct{}
}

func newFake(t *testing.T, answer func(service string, body [][]byte, n int) [][]byte) *fakeBroker {
	t.Helper()
	ctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	s, err := ctx.NewSocket(zmq.ROUTER)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Bind("tcp://127.0.0.1:*"); err != nil {
		t.Fatal(err)
	}
	ep, _ := s.GetLastEndpoint()
	f := &fakeBroker{endpoint: ep, later: make(chan [][]byte, 1024), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer ctx.Term()
		defer s.Close()
		_ = s.SetLinger(0)
		p := zmq.NewPoller()
		p.Add(s, zmq.POLLIN)
		for {
			select {
			case <-f.stop:
				return
			default:
			}
			for sent := false; !sent; {
				select {
				case out := <-f.later:
					_, _ = s.SendMessage(out)
				default:
					sent = true
				}
			}
			polled, err := p.Poll(5 * time.Millisecond)
			if err != nil || len(polled) == 0 {
				continue
			}
			msg, err := s.RecvMessageBytes(0)
			if err != nil {
				continue
			}
			// [identity | "" | MDPC01 | service | body...]
			if len(msg) < 4 || string(msg[2]) != "MDPC01" {
				continue
			}
			f.mu.Lock()
			var n int
			if string(msg[3]) == tsp.SvcRole {
				f.probes = append(f.probes, time.Now())
				n = len(f.probes)
			} else {
				f.got = append(f.got, msg[1:])
				f.gotAt = append(f.gotAt, time.Now())
				f.ids = append(f.ids, msg[0])
				n = len(f.got)
			}
			f.mu.Unlock()
			rep := answer(string(msg[3]), msg[4:], n)
			if rep == nil {
				continue
			}
			out := append([][]byte{msg[0], {}, []byte("MDPC01"), msg[3]}, rep...)
			_, _ = s.SendMessage(out)
		}
	}()
	t.Cleanup(func() { close(f.stop); <-f.done })
	return f
}

func (f *fakeBroker) requests() [][][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][][]byte(nil), f.got...)
}

// answerLater sends rep to the client of request i (0-based, in arrival
// order) as an answer for service: answers the test gives out of order.
func (f *fakeBroker) answerLater(i int, service string, rep [][]byte) {
	f.mu.Lock()
	id := f.ids[i]
	f.mu.Unlock()
	f.later <- append([][]byte{id, {}, []byte("MDPC01"), []byte(service)}, rep...)
}

func (f *fakeBroker) questions() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.probes...)
}

func (f *fakeBroker) requestTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.gotAt...)
}

func frames(s ...string) [][]byte {
	out := make([][]byte, len(s))
	for i, x := range s {
		out[i] = []byte(x)
	}
	return out
}

func newClient(t *testing.T, timeout time.Duration, retries int, eps ...string) *Client {
	t.Helper()
	c, err := New(Config{Brokers: eps, Timeout: timeout, Retries: retries})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

const ticket = "0123456789abcdef0123456789abcdef"

func TestSubmitRetriesWithTheSameKey(t *testing.T) {
	f := newFake(t, func(service string, body [][]byte, n int) [][]byte {
		if n < 3 {
			return nil // lost answers
		}
		return frames("200", ticket, "duplicate")
	})
	c := newClient(t, 100*time.Millisecond, 5, f.endpoint)
	got, err := c.Submit(testCtx(t), "echo", frames("a", "", "c"), SubmitOptions{})
	if err != nil || got != ticket {
		t.Fatalf("Submit = %q, %v; want %s", got, err, ticket)
	}
	reqs := f.requests()
	if len(reqs) != 3 {
		t.Fatalf("broker got %d tries, want 3", len(reqs))
	}
	for i, r := range reqs {
		// ["" | MDPC01 | titanic.submit | key | service | body...]
		if string(r[2]) != "titanic.submit" || len(r) != 8 || string(r[4]) != "echo" || len(r[6]) != 0 {
			t.Fatalf("try %d frames = %q", i, r)
		}
		if string(r[3]) != string(reqs[0][3]) || len(r[3]) == 0 {
			t.Fatalf("try %d key %q differs from first key %q", i, r[3], reqs[0][3])
		}
	}
	if s := c.Stats(); s.Retries != 2 {
		t.Fatalf("stats = %+v, want 2 retries", s)
	}
}

// With several brokers, the client asks them all which one serves and
// sends the request to the one that answers: it does not wait for the dead
// one's timeout, and the dead one never gets the request.
func TestFailoverToSecondBroker(t *testing.T) {
	dead := newFake(t, func(string, [][]byte, int) [][]byte { return nil })
	live := newFake(t, func(string, [][]byte, int) [][]byte { return frames("200", ticket, "new") })
	const timeout = 10 * time.Second
	c := newClient(t, timeout, 2, dead.endpoint, live.endpoint)
	start := time.Now()
	got, err := c.Submit(testCtx(t), "echo", frames("x"), SubmitOptions{IdemKey: "k1"})
	if err != nil || got != ticket {
		t.Fatalf("Submit = %q, %v", got, err)
	}
	if d := time.Since(start); d >= timeout {
		t.Fatalf("Submit took %s: it waited for the dead broker's timeout", d)
	}
	if len(dead.requests()) != 0 || len(live.requests()) != 1 {
		t.Fatalf("dead got %d, live got %d; want 0 and 1", len(dead.requests()), len(live.requests()))
	}
	if string(live.requests()[0][3]) != "k1" {
		t.Fatalf("key = %q, want k1", live.requests()[0][3])
	}
	// The client stays on the live broker, without asking again.
	if _, err := c.Submit(testCtx(t), "echo", frames("y"), SubmitOptions{}); err != nil {
		t.Fatal(err)
	}
	// The first round's question to the dead broker may never arrive: the
	// client drops that socket (linger 0) once the live broker answers. A
	// question asked again would have reached the live broker before its
	// answer, so live's count is what proves the client did not ask again.
	if len(dead.requests()) != 0 || len(dead.questions()) > 1 || len(live.questions()) != 1 {
		t.Fatalf("second call: dead got %d requests and %d questions, live %d questions; want 0, at most 1, 1",
			len(dead.requests()), len(dead.questions()), len(live.questions()))
	}
}

// Binary Star's rule for clients: a passive node is asked to take over
// (sent a request: its vote) only after the other node failed to answer
// within the timeout.
func TestPassiveAskedOnlyAfterSilence(t *testing.T) {
	dead := newFake(t, func(string, [][]byte, int) [][]byte { return nil })
	passive := newFake(t, func(service string, _ [][]byte, _ int) [][]byte {
		if service == tsp.SvcRole {
			return tsp.EncodeRole(tsp.Role{Star: "passive"})
		}
		return frames("200", ticket, "new")
	})
	const timeout = 200 * time.Millisecond
	c := newClient(t, timeout, 2, dead.endpoint, passive.endpoint)
	start := time.Now()
	if got, err := c.Submit(testCtx(t), "echo", frames("x"), SubmitOptions{}); err != nil || got != ticket {
		t.Fatalf("Submit = %q, %v", got, err)
	}
	asked, voted := dead.questions(), passive.requestTimes()
	if len(asked) != 1 || len(voted) != 1 {
		t.Fatalf("dead asked %d times, passive got %d requests; want 1 and 1", len(asked), len(voted))
	}
	if d := voted[0].Sub(start); d < timeout {
		t.Fatalf("the passive got the request %s after the call began, before the dead broker's timeout (%s)", d, timeout)
	}
}

// A node that is Binary Star active but not ready (taking over, or alone
// after the link to its peer was cut) is asked again; the passive node,
// which answers too, never gets a request (it would be a vote: two
// actives).
func TestActiveNotReadyPreferredToPassive(t *testing.T) {
	active := newFake(t, func(service string, _ [][]byte, n int) [][]byte {
		switch {
		case service == tsp.SvcRole:
			return tsp.EncodeRole(tsp.Role{Star: tsp.StarActive})
		case n < 3:
			return frames("500", "not ready: taking over, retry")
		}
		return frames("200", ticket, "new")
	})
	passive := newFake(t, func(service string, _ [][]byte, _ int) [][]byte {
		if service == tsp.SvcRole {
			return tsp.EncodeRole(tsp.Role{Star: "passive"})
		}
		return frames("200", "ffffffffffffffffffffffffffffffff", "new")
	})
	c := newClient(t, 5*time.Second, 2, passive.endpoint, active.endpoint)
	if got, err := c.Submit(testCtx(t), "echo", frames("x"), SubmitOptions{}); err != nil || got != ticket {
		t.Fatalf("Submit = %q, %v", got, err)
	}
	if n := len(passive.requests()); n != 0 {
		t.Fatalf("the passive got %d requests, want 0", n)
	}
	if n := len(active.requests()); n != 3 {
		t.Fatalf("the active got %d requests, want 3 (two refused as not ready)", n)
	}
}

func TestUnavailable(t *testing.T) {
	f := newFake(t, func(string, [][]byte, int) [][]byte { return nil })
	c := newClient(t, 50*time.Millisecond, 3, f.endpoint)
	_, err := c.Status(testCtx(t), ticket)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if n := len(f.requests()); n != 3 {
		t.Fatalf("%d tries, want 3", n)
	}
}

func TestCodes(t *testing.T) {
	answers := map[string][][]byte{}
	f := newFake(t, func(service string, body [][]byte, n int) [][]byte {
		return answers[service+" "+string(body[len(body)-1])]
	})
	c := newClient(t, time.Second, 1, f.endpoint)
	ctx := testCtx(t)
	answers["titanic.reply p"] = frames("300", "pending")
	answers["titanic.reply u"] = frames("400", "unknown ticket")
	answers["titanic.reply f"] = frames("500", "failed: no worker for service")
	answers["titanic.reply b"] = frames("500", "busy, retry later")
	answers["titanic.reply ok"] = frames("200", "a", "", "\x00")
	answers["titanic.reply weird"] = frames("204")
	answers["titanic.submit x"] = frames("400", "empty service name")
	answers["titanic.close u"] = frames("200")
	answers["titanic.status s"] = frames("200", "failed", "3", "svc", "2026-11-27T05:00:00Z", "2026-11-27T05:00:01.5Z", "boom")
	answers["titanic.list 5"] = frames("200", ticket+" my svc done 1", ticket[:31]+"0 b pending 0")

	if _, err := c.Reply(ctx, "p", ReplyOptions{}); !errors.Is(err, ErrPending) {
		t.Errorf("300: %v", err)
	}
	if _, err := c.Reply(ctx, "u", ReplyOptions{}); !errors.Is(err, ErrUnknown) {
		t.Errorf("400: %v", err)
	}
	_, err := c.Reply(ctx, "f", ReplyOptions{})
	var fe *FailedError
	if !errors.Is(err, ErrFailed) || !errors.As(err, &fe) || fe.Reason != "no worker for service" {
		t.Errorf("500 failed: %v", err)
	}
	if _, err := c.Reply(ctx, "b", ReplyOptions{}); !errors.Is(err, ErrServer) || errors.Is(err, ErrFailed) {
		t.Errorf("500 busy: %v", err)
	}
	if rep, err := c.Reply(ctx, "ok", ReplyOptions{}); err != nil || len(rep) != 3 || string(rep[2]) != "\x00" {
		t.Errorf("200: %q %v", rep, err)
	}
	if _, err := c.Reply(ctx, "weird", ReplyOptions{}); !errors.Is(err, ErrProtocol) {
		t.Errorf("204: %v", err)
	}
	if _, err := c.Submit(ctx, "", frames("x"), SubmitOptions{}); !errors.Is(err, ErrRejected) {
		t.Errorf("submit 400: %v", err)
	}
	if err := c.CloseTicket(ctx, "u"); err != nil {
		t.Errorf("close: %v", err)
	}
	st, err := c.Status(ctx, "s")
	if err != nil || st.State != "failed" || st.Attempts != 3 || st.Service != "svc" || st.Reason != "boom" || st.Updated.Sub(st.Created) != 1500*time.Millisecond {
		t.Errorf("status = %+v, %v", st, err)
	}
	ls, err := c.List(ctx, ListOptions{Limit: 5})
	if err != nil || len(ls) != 2 || ls[0].Service != "my svc" || ls[0].State != "done" || ls[0].Attempts != 1 || ls[1].Service != "b" {
		t.Errorf("list = %+v, %v", ls, err)
	}
}

func TestReplyWaits(t *testing.T) {
	f := newFake(t, func(service string, body [][]byte, n int) [][]byte {
		switch {
		case n <= 2:
			return frames("300", "pending")
		case n == 3:
			return frames("500", "busy, retry later")
		}
		return frames("200", "done")
	})
	c := newClient(t, time.Second, 1, f.endpoint)
	rep, err := c.Reply(testCtx(t), ticket, ReplyOptions{Wait: true, PollInterval: 5 * time.Millisecond})
	if err != nil || len(rep) != 1 || string(rep[0]) != "done" {
		t.Fatalf("Reply = %q, %v", rep, err)
	}
	if n := len(f.requests()); n != 4 {
		t.Fatalf("%d lookups, want 4", n)
	}
	// A failed ticket ends the wait.
	g := newFake(t, func(string, [][]byte, int) [][]byte { return frames("500", "failed: gave up") })
	c2 := newClient(t, time.Second, 1, g.endpoint)
	if _, err := c2.Reply(testCtx(t), ticket, ReplyOptions{Wait: true}); !errors.Is(err, ErrFailed) {
		t.Fatalf("wait on failed ticket: %v", err)
	}
}

// An answer for another service (a late answer to an abandoned call) is
// dropped, not taken for this call's answer.
func TestWrongServiceAnswerDropped(t *testing.T) {
	ctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Term()
	s, _ := ctx.NewSocket(zmq.ROUTER)
	defer s.Close()
	_ = s.SetLinger(0)
	if err := s.Bind("tcp://127.0.0.1:*"); err != nil {
		t.Fatal(err)
	}
	ep, _ := s.GetLastEndpoint()
	c := newClient(t, 2*time.Second, 1, ep)
	res := make(chan error, 1)
	go func() {
		_, err := c.Request(testCtx(t), "echo", frames("hi"))
		res <- err
	}()
	_ = s.SetRcvtimeo(5 * time.Second)
	msg, err := s.RecvMessageBytes(0)
	if err != nil {
		t.Fatalf("no request: %v", err)
	}
	_, _ = s.SendMessage(msg[0], "", "MDPC01", "other", "stale")
	_, _ = s.SendMessage(msg[0], "", "MDPC01", "echo", "fresh")
	select {
	case err := <-res:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer")
	}
	if c.Stats().Stale != 1 {
		t.Fatalf("stats = %+v, want 1 stale", c.Stats())
	}
}

func TestContextAndClose(t *testing.T) {
	f := newFake(t, func(string, [][]byte, int) [][]byte { return nil })
	c := newClient(t, 10*time.Second, 3, f.endpoint)
	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	go func() {
		for len(f.requests()) == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	_, err := c.Request(ctx, "echo", frames("x"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("cancel took %s", d)
	}
	c.Close()
	if _, err := c.Request(context.Background(), "echo", frames("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestConfig(t *testing.T) {
	if _, err := New(Config{Brokers: []string{""}}); !errors.Is(err, ErrConfig) {
		t.Fatalf("empty endpoint: %v", err)
	}
	c, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.cfg.Timeout != DefaultTimeout || c.cfg.Retries != DefaultRetries || !strings.HasPrefix(c.cfg.Brokers[0], "tcp://") {
		t.Fatalf("defaults = %+v", c.cfg)
	}
}

// A broker that served but no longer does answers "500 not active": the
// client asks every broker again at once, without spending a try.
func TestNotActiveMovesOn(t *testing.T) {
	// old serves at the first question only; new from the second on.
	old := newFake(t, func(service string, _ [][]byte, n int) [][]byte {
		if service == tsp.SvcRole {
			return tsp.EncodeRole(tsp.Role{Serving: n == 1})
		}
		return frames("500", "not active")
	})
	var oldAsked sync.WaitGroup
	oldAsked.Add(1)
	var once sync.Once
	newer := newFake(t, func(service string, _ [][]byte, n int) [][]byte {
		if service == tsp.SvcRole {
			if n == 1 {
				// Answer the first question after old, so that old
				// is chosen first.
				once.Do(oldAsked.Wait)
				return tsp.EncodeRole(tsp.Role{})
			}
			return tsp.EncodeRole(tsp.Role{Serving: true})
		}
		return frames("200", ticket, "new")
	})
	go func() {
		for len(old.questions()) == 0 {
			time.Sleep(time.Millisecond)
		}
		oldAsked.Done()
	}()
	c := newClient(t, 5*time.Second, 1, old.endpoint, newer.endpoint)
	got, err := c.Submit(testCtx(t), "echo", frames("x"), SubmitOptions{})
	if err != nil || got != ticket {
		t.Fatalf("Submit = %q, %v", got, err)
	}
	if len(old.requests()) != 1 || len(newer.requests()) != 1 {
		t.Fatalf("old got %d requests, new %d; want 1 and 1", len(old.requests()), len(newer.requests()))
	}
	// One refusal by old; a second when new's first, slow answer ("not
	// serving") comes in after old's refusal, which a loaded machine
	// allows. No try is spent either way.
	if s := c.Stats(); s.Refusals < 1 || s.Refusals > 2 || s.Retries != 0 || s.Failovers != 0 {
		t.Fatalf("stats = %+v, want 1 or 2 refusals, no retry", s)
	}
	// Only passive brokers: ErrUnavailable once the budget is spent.
	passive := newFake(t, func(string, [][]byte, int) [][]byte { return frames("500", "not active") })
	c2 := newClient(t, 50*time.Millisecond, 2, passive.endpoint)
	if _, err := c2.Submit(testCtx(t), "echo", frames("x"), SubmitOptions{}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("all passive: %v", err)
	}
}

// A Direct client sends its calls to its one broker without the role
// question, whatever that broker's role: a pair node's calls to its peer's
// admin services, which answer also while the peer is passive. Here the
// broker would answer the question "passive, not serving" (which would
// keep a plain client away); a refusal is asked again.
func TestDirectSkipsRoleQuestion(t *testing.T) {
	f := newFake(t, func(service string, _ [][]byte, n int) [][]byte {
		if service == tsp.SvcRole {
			return tsp.EncodeRole(tsp.Role{Star: "passive"})
		}
		if n == 1 {
			return frames("500", "not active")
		}
		return frames("200", "history")
	})
	c, err := New(Config{Brokers: []string{f.endpoint}, Timeout: 2 * time.Second, Retries: 1, Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rep, err := c.Request(testCtx(t), "titanic.cluster.history", frames(""))
	if err != nil || len(rep) != 2 || string(rep[1]) != "history" {
		t.Fatalf("Request = %q, %v; want [200 history]", rep, err)
	}
	if q, r := len(f.questions()), len(f.requests()); q != 0 || r != 2 {
		t.Fatalf("broker got %d role questions and %d requests; want 0 and 2 (a refusal, then the answer)", q, r)
	}
}

// TestFrameCountBombDropped: an answer of 100,000 frames (a broker gone
// hostile, or not a broker) is dropped and counted stale, not returned,
// and the next answer is.
func TestFrameCountBombDropped(t *testing.T) {
	ctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Term()
	s, _ := ctx.NewSocket(zmq.ROUTER)
	defer s.Close()
	_ = s.SetLinger(0)
	if err := s.Bind("tcp://127.0.0.1:*"); err != nil {
		t.Fatal(err)
	}
	ep, _ := s.GetLastEndpoint()
	// The try's timeout covers the bomb's 100,000 frames sent here and
	// read by the client one by one (two cgo calls each, under -race):
	// 2s was not enough on a loaded machine (a load average of 50 on 2
	// cores failed 10 runs in 10; 4-8s each), and the answer after the
	// bomb then came too late. Nothing here waits for the timeout.
	c := newClient(t, 20*time.Second, 1, ep)
	type result struct {
		body [][]byte
		err  error
	}
	res := make(chan result, 1)
	go func() {
		body, err := c.Request(testCtx(t), "echo", frames("hi"))
		res <- result{body, err}
	}()
	_ = s.SetRcvtimeo(5 * time.Second)
	msg, err := s.RecvMessageBytes(0)
	if err != nil {
		t.Fatalf("no request: %v", err)
	}
	bomb := [][]byte{msg[0], {}, []byte("MDPC01"), []byte("echo")}
	for range 100_000 {
		bomb = append(bomb, []byte{})
	}
	if _, err := s.SendMessage(bomb); err != nil {
		t.Fatal(err)
	}
	_, _ = s.SendMessage(msg[0], "", "MDPC01", "echo", "fresh")
	select {
	case r := <-res:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if len(r.body) != 1 || string(r.body[0]) != "fresh" {
			t.Fatalf("answer of %d frames, want the one frame \"fresh\"", len(r.body))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no answer within 30s")
	}
	if c.Stats().Stale != 1 {
		t.Fatalf("stats = %+v, want 1 stale", c.Stats())
	}
}

// A refusal that says why ("not active: reason") is a refusal like the
// bare one: the client asks again without spending tries, and when no
// broker serves the error carries the reason, from the role answer or the
// refusal.
func TestRefusalWithReason(t *testing.T) {
	const why = "not active: waiting for the peer backup at tcp://b:5555 to be in sync once"
	for _, tc := range []struct {
		name string
		star string
	}{
		{"reason in the refusal", "primary"},
		{"reason in the role answer", ""},
	} {
		f := newFake(t, func(service string, _ [][]byte, _ int) [][]byte {
			if service == tsp.SvcRole {
				if tc.star == "" {
					return tsp.EncodeRole(tsp.Role{Star: "primary", Why: why})
				}
				return tsp.EncodeRole(tsp.Role{Star: tc.star, Serving: true}) // send the request: it refuses
			}
			return frames("500", why)
		})
		c := newClient(t, 50*time.Millisecond, 2, f.endpoint)
		_, err := c.Submit(testCtx(t), "echo", frames("x"), SubmitOptions{})
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), f.endpoint) {
			t.Fatalf("%s: %v, want ErrUnavailable naming %s and the reason", tc.name, err, f.endpoint)
		}
		if s := c.Stats(); s.Retries != 0 {
			t.Fatalf("%s: stats %+v: a refusal spent a try", tc.name, s)
		}
	}
}

// A submit whose outcome the broker could not know (500 "outcome
// unknown": a raft leader lost its leadership with it in flight) is sent
// again with the same key, and gets the ticket the key holds; the caller
// sees one ticket, the broker one key.
func TestSubmitUncertainSentAgainWithItsKey(t *testing.T) {
	f := uncertainFirst(t, keyedAnswer)
	c := newClient(t, 300*time.Millisecond, 3, f.endpoint)
	tk, err := c.Submit(testCtx(t), "echo", frames("job"), SubmitOptions{})
	if err != nil {
		t.Fatalf("Submit = %v, want the ticket after a resend with the key", err)
	}
	reqs := f.requests() // ["" | MDPC01 | service | key | ...]
	if len(reqs) != 2 || string(reqs[0][3]) != string(reqs[1][3]) || tk != ticketOf(reqs[0][3]) {
		t.Fatalf("%d submits sent, ticket %s: want the same key twice and its ticket", len(reqs), tk)
	}
}

// uncertainFirst is a serving node that answers the first submit
// "outcome unknown" (with its key), and every later one with then(body).
func uncertainFirst(t *testing.T, then func(body [][]byte) [][]byte) *fakeBroker {
	return newFake(t, func(service string, body [][]byte, n int) [][]byte {
		if service == tsp.SvcRole {
			return tsp.EncodeRole(tsp.Role{Serving: true})
		}
		if n == 1 {
			return [][]byte{[]byte("500"), []byte(tsp.Uncertain.Text("leadership lost")), body[0]}
		}
		return then(body)
	})
}

// Close ends a Wait at once, whatever its pause between lookups: the
// Wait's socket belongs to the context Close terminates. It ended only at
// its next lookup, spinning on ETERM until then.
func TestCloseEndsWait(t *testing.T) {
	f := newFake(t, func(service string, body [][]byte, n int) [][]byte {
		if service == tsp.SvcRole {
			return tsp.EncodeRole(tsp.Role{Serving: true})
		}
		return frames(tsp.CodePending)
	})
	c, err := New(Config{Brokers: []string{f.endpoint}, Notify: []string{harness.FreeEndpoint(t)}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Wait(testCtx(t), ticket, WaitOptions{PollInterval: 10 * time.Second})
		done <- err
	}()
	// Lookups come 50, 100, 200, 400 and 800 ms apart: after the sixth
	// the pause is 1.6 s.
	deadline := time.Now().Add(10 * time.Second)
	for len(f.requests()) < 6 {
		if time.Now().After(deadline) {
			t.Fatalf("%d lookups in 10 s, want 6", len(f.requests()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Wait = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not end within 5 s of Close")
	}
	<-closed
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("Close took %s during a Wait, want it at once", d)
	}
}
