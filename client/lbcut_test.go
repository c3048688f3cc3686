package client

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// tcpBalancer is a TCP load balancer in front of backend (README: point
// load balancers at /healthz): until open is closed it has no healthy
// backend, and takes each connection only to close it at once, as
// HAProxy or a cloud balancer does; then it forwards connections to
// backend.
func tcpBalancer(t *testing.T, backend string, open <-chan struct{}) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case <-open:
			default:
				_ = in.Close()
				continue
			}
			out, err := net.Dial("tcp", backend)
			if err != nil {
				_ = in.Close()
				continue
			}
			wg.Go(func() { _, _ = io.Copy(out, in); _ = out.Close() })
			wg.Go(func() { _, _ = io.Copy(in, out); _ = in.Close() })
		}
	})
	return "tcp://" + ln.Addr().String()
}

// A client of one endpoint, a load balancer, while the pair behind it
// fails over: the balancer takes connections and closes them for a
// moment (no backend is healthy), then forwards them to the new active.
// A connection closed during the ZeroMQ handshake is read as
// EVENT_HANDSHAKE_FAILED_NO_DETAIL, as a CURVE broker's refusal of the
// wrong server key is: no refusal for good until it lasted RefusedWait.
// The call tries again within its Retries x Timeout, as the Guide's Lazy
// Pirate client does. Here the backend is there 300ms later and the call
// had 3 tries of 1s.
func TestSubmitThroughBalancerDuringFailover(t *testing.T) {
	f := newFake(t, func(_ string, body [][]byte, _ int) [][]byte { return keyedAnswer(body) })
	open := make(chan struct{})
	ep := tcpBalancer(t, f.endpoint[len("tcp://"):], open)
	time.AfterFunc(300*time.Millisecond, func() { close(open) })
	c := newClient(t, time.Second, 3, ep)
	start := time.Now()
	tk, err := c.Submit(testCtx(t), "echo", frames("job"), SubmitOptions{IdemKey: "k-lb"})
	if err != nil || tk != ticketOf([]byte("k-lb")) {
		t.Fatalf("Submit = %q, %v after %s; want %s once the balancer forwards (300ms)", tk, err, time.Since(start).Round(time.Millisecond), ticketOf([]byte("k-lb")))
	}
}

// The pipelined submits the same: every one held gets its ticket once
// the balancer forwards (a refusal for good would fail them all, and
// those made within Timeout after it).
func TestSubmitAsyncThroughBalancerDuringFailover(t *testing.T) {
	f := newFake(t, func(_ string, body [][]byte, _ int) [][]byte { return keyedAnswer(body) })
	open := make(chan struct{})
	ep := tcpBalancer(t, f.endpoint[len("tcp://"):], open)
	time.AfterFunc(300*time.Millisecond, func() { close(open) })
	c := newPipeClient(t, Config{Brokers: []string{ep}, Timeout: time.Second, Retries: 3})
	checkTickets(t, submitN(t, c, 5))
}

// A balancer that never finds a backend: the call gives up once every
// connection has been closed during its handshake for RefusedWait, before
// its tries are spent, saying the handshake failed.
func TestSubmitThroughBalancerWithoutBackend(t *testing.T) {
	ep := tcpBalancer(t, "127.0.0.1:1", make(chan struct{}))
	c, err := New(Config{Brokers: []string{ep}, Timeout: 500 * time.Millisecond, Retries: 4, RefusedWait: 700 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Submit(testCtx(t), "echo", frames("job"), SubmitOptions{})
	el := time.Since(start)
	ue := unavailable(t, err, ep)
	if ue.Causes[0].Cause != CauseHandshake {
		t.Errorf("cause %+v, want CauseHandshake", ue.Causes[0])
	}
	if el < 700*time.Millisecond || el > 1500*time.Millisecond {
		t.Errorf("gave up after %s; want after the refused wait (700ms), before the tries' 2s", el.Round(time.Millisecond))
	}
}
