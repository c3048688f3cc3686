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
// EVENT_HANDSHAKE_FAILED_NO_DETAIL, which watch.go's harvest records as
// a failed security handshake (seen.handshake), a refusal "for good"
// (definitive): the call ends at once, "resending cannot help", instead
// of trying again within its Retries x Timeout as the Guide's Lazy
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

// The pipelined submits fail the same way, every one held, and those
// made within Timeout after it too.
func TestSubmitAsyncThroughBalancerDuringFailover(t *testing.T) {
	f := newFake(t, func(_ string, body [][]byte, _ int) [][]byte { return keyedAnswer(body) })
	open := make(chan struct{})
	ep := tcpBalancer(t, f.endpoint[len("tcp://"):], open)
	time.AfterFunc(300*time.Millisecond, func() { close(open) })
	c := newPipeClient(t, Config{Brokers: []string{ep}, Timeout: time.Second, Retries: 3})
	checkTickets(t, submitN(t, c, 5))
}
