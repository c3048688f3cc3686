package client

import (
	"errors"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// restartingRouter is a broker whose connection to the client is cut
// while the first request is in flight, and which takes the client's next
// connection at once: a broker restarted by its supervisor within
// libzmq's reconnect interval, or a connection reset by the network (a
// middlebox, a NAT) while the broker stays up. It drops the first cuts
// requests unanswered (closes its socket and binds a new one on the same
// port each time), then answers every submit as titanic does: 200, a
// ticket, "duplicate" and the key, commit after delay (a group commit's
// fsync). It answers the role question at once: an active node that
// serves. got receives the key of each request that reached it.
func restartingRouter(t *testing.T, cuts int, delay time.Duration) (ep string, got <-chan string) {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	bind := func(addr string) *zmq.Socket {
		s, err := zctx.NewSocket(zmq.ROUTER)
		if err != nil {
			t.Error(err)
			return nil
		}
		_ = s.SetLinger(0)
		// The port may not be free the moment the old socket closes.
		for deadline := time.Now().Add(5 * time.Second); ; {
			if err := s.Bind(addr); err == nil {
				return s
			} else if time.Now().After(deadline) {
				t.Errorf("bind %s again: %v", addr, err)
				_ = s.Close()
				return nil
			}
			time.Sleep(time.Millisecond)
		}
	}
	s := bind("tcp://127.0.0.1:*")
	if s == nil {
		t.FailNow()
	}
	ep, _ = s.GetLastEndpoint()
	ch := make(chan string, 64)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		defer func() { _ = zctx.Term() }()
		defer func() {
			if s != nil {
				_ = s.Close()
			}
		}()
		for {
			select {
			case <-stop:
				return
			default:
			}
			p := zmq.NewPoller()
			p.Add(s, zmq.POLLIN)
			if polled, err := p.Poll(10 * time.Millisecond); err != nil || len(polled) == 0 {
				continue
			}
			msg, err := s.RecvMessageBytes(0)
			// [identity | "" | MDPC01 | service | key | ...]
			if err != nil || len(msg) < 5 {
				continue
			}
			if string(msg[3]) == tsp.SvcRole {
				// A pair's active: it serves.
				out := append([][]byte{msg[0], {}, []byte("MDPC01"), msg[3]}, tsp.EncodeRole(tsp.Role{Serving: true, Star: tsp.StarActive})...)
				_, _ = s.SendMessage(out)
				continue
			}
			ch <- string(msg[4])
			if cuts > 0 {
				cuts--
				_ = s.Close()
				if s = bind(ep); s == nil {
					return
				}
				continue
			}
			out := append([][]byte{msg[0], {}, []byte("MDPC01"), msg[3]}, keyedAnswer(msg[4:])...)
			out[len(out)-2] = []byte("duplicate")
			time.Sleep(delay) // one request at a time: the fake's own pace
			_, _ = s.SendMessage(out)
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return ep, ch
}

// A submit in flight when the connection to the only broker is cut, and
// made again at once, is sent again with its key, as after any lost answer:
// the broker may hold it or not, and only the key tells. A broker closing
// the connection on a request over its limits.max_message_size looks the
// same (DISCONNECTED while in flight, then HANDSHAKE_SUCCEEDED), but only
// once the request, sent again alone, is cut again is it taken for that
// (an *UnavailableError matching ErrRejected, "resending it cannot
// help"): a caller following that meaning would drop a submit the broker
// may never have stored.
func TestSubmitResentAfterConnectionCutAndReconnect(t *testing.T) {
	ep, got := restartingRouter(t, 1, 0)
	c := newClient(t, 2*time.Second, 3, ep)
	tk, err := c.Submit(testCtx(t), "echo", frames("a small request"), SubmitOptions{IdemKey: "k-cut"})
	if err != nil {
		var ue *UnavailableError
		if errors.As(err, &ue) && ue.TooLarge() {
			t.Errorf("a 16-byte submit was taken for one over the broker's size limit")
		}
		t.Fatalf("Submit = %v (ErrRejected: %v); want the ticket of the resend with its key", err, errors.Is(err, ErrRejected))
	}
	if want := ticketOf([]byte("k-cut")); tk != want {
		t.Fatalf("ticket %s, want %s", tk, want)
	}
	if n := len(got); n != 2 {
		t.Fatalf("the broker got the submit %d times, want 2 (the first, cut, and its resend)", n)
	}
}

// passivePeer is the other node of a pair: passive, refusing requests.
func passivePeer(t *testing.T) *fakeBroker {
	return newFake(t, func(service string, _ [][]byte, _ int) [][]byte {
		if service == tsp.SvcRole {
			return tsp.EncodeRole(tsp.Role{Serving: false, Star: "passive"})
		}
		return frames("500", "not active")
	})
}

// checkPipelinedCut makes one pipelined submit to brokers, the first of
// them cutting its connection on it, and wants its ticket.
func checkPipelinedCut(t *testing.T, brokers ...string) {
	t.Helper()
	c := newPipeClient(t, Config{Brokers: brokers, Timeout: 2 * time.Second, Retries: 3})
	f, err := c.SubmitAsync(testCtx(t), "echo", frames("a small request"), SubmitOptions{IdemKey: "k-cut"})
	if err != nil {
		t.Fatal(err)
	}
	tk, err := f.Ticket(testCtx(t))
	if err != nil {
		t.Fatalf("future = %v (ErrRejected: %v); want the ticket of the resend with its key", err, errors.Is(err, ErrRejected))
	}
	if want := ticketOf([]byte("k-cut")); tk != want {
		t.Fatalf("ticket %s, want %s", tk, want)
	}
}

// The same for a pipelined submit alone in flight: it is sent again, as
// one of several in flight is, not failed as too large.
func TestSubmitAsyncResentAfterConnectionCutAndReconnect(t *testing.T) {
	ep, _ := restartingRouter(t, 1, 0)
	checkPipelinedCut(t, ep)
}

// In a pair too: the pipelined submit is sent again to the active node,
// not failed on one cut.
func TestSubmitAsyncPairResentAfterConnectionCut(t *testing.T) {
	ep, _ := restartingRouter(t, 1, 0)
	checkPipelinedCut(t, ep, passivePeer(t).endpoint)
}

// The plain Submit in the same pair gets its ticket.
func TestSubmitPairResentAfterConnectionCut(t *testing.T) {
	ep, _ := restartingRouter(t, 1, 0)
	c := newClient(t, 2*time.Second, 3, ep, passivePeer(t).endpoint)
	tk, err := c.Submit(testCtx(t), "echo", frames("a small request"), SubmitOptions{IdemKey: "k-cut"})
	if err != nil || tk != ticketOf([]byte("k-cut")) {
		t.Fatalf("Submit = %q, %v; want %s", tk, err, ticketOf([]byte("k-cut")))
	}
}

// The plain Submit in a pair, when the active takes 100ms to commit (a
// loaded disk): a cut is no verdict that ends later tries to the active
// before its answer. The active answers the role question as serving all
// along: the client must not send the submit to the passive node, the
// Binary Star vote README says it casts only after the active failed to
// answer in --timeout (2s here).
func TestSubmitPairSlowCommitAfterConnectionCut(t *testing.T) {
	checkSlowActiveAfterCuts(t, 1)
}

// The same after the active cut the submit and its resend too: the try
// ends taken for one over the size limit, but that verdict is the try's.
// The next try to the active, which answers the role question as
// serving, waits for its answer as any other does.
func TestSubmitPairSlowCommitAfterTooLargeVerdict(t *testing.T) {
	checkSlowActiveAfterCuts(t, 2)
}

// checkSlowActiveAfterCuts submits to a pair whose active cuts the
// connection on the first cuts requests, then commits in 100ms, and
// wants the ticket with no request to the passive node.
func checkSlowActiveAfterCuts(t *testing.T, cuts int) {
	t.Helper()
	ep, got := restartingRouter(t, cuts, 100*time.Millisecond)
	passive := passivePeer(t)
	c := newClient(t, 2*time.Second, 3, ep, passive.endpoint)
	start := time.Now()
	tk, err := c.Submit(testCtx(t), "echo", frames("a small request"), SubmitOptions{IdemKey: "k-cut"})
	el := time.Since(start)
	if n := len(passive.requests()); n > 0 {
		t.Errorf("the passive node got %d requests (votes to take over) within %s, while the active answered the role question as serving; none before it let a 2s try pass", n, el.Round(time.Millisecond))
	}
	if err != nil || tk != ticketOf([]byte("k-cut")) {
		t.Fatalf("Submit = %q, %v after %s (the active got the submit %d times); want %s", tk, err, el.Round(time.Millisecond), len(got), ticketOf([]byte("k-cut")))
	}
}
