// Package spec tests the built broker from outside, as a client or worker
// written only from 7/MDP, 8/MMI and 9/TSP would: raw ZeroMQ sockets
// (REQ and DEALER clients, DEALER workers), none of this project's client
// or worker code.
package spec

import (
	"fmt"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/internal/harness"
)

// startBroker starts a single-node broker on its own port and data
// directory, with extra flags.
func startBroker(t *testing.T, extra ...string) (string, *harness.Process) {
	t.Helper()
	ep := harness.FreeEndpoint(t)
	args := append([]string{"--log-level", "debug"}, extra...)
	br := harness.Broker(t, "broker", ep, t.TempDir(), args...)
	return ep, br
}

type sock struct {
	t *testing.T
	s *zmq.Socket
}

func newSock(t *testing.T, typ zmq.Type, ep string) *sock {
	t.Helper()
	s, err := zmq.NewSocket(typ)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.SetLinger(0)
	if err := s.Connect(ep); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &sock{t: t, s: s}
}

func (k *sock) close() { _ = k.s.Close() }

func (k *sock) send(frames ...[]byte) {
	k.t.Helper()
	parts := make([]any, len(frames))
	for i, f := range frames {
		parts[i] = f
	}
	if _, err := k.s.SendMessage(parts...); err != nil {
		k.t.Fatalf("send: %v", err)
	}
}

func (k *sock) sendStr(frames ...string) {
	k.t.Helper()
	b := make([][]byte, len(frames))
	for i, f := range frames {
		b[i] = []byte(f)
	}
	k.send(b...)
}

// recv waits up to d for a message; nil when none came.
func (k *sock) recv(d time.Duration) [][]byte {
	k.t.Helper()
	p := zmq.NewPoller()
	p.Add(k.s, zmq.POLLIN)
	got, err := p.Poll(d)
	if err != nil {
		k.t.Fatalf("poll: %v", err)
	}
	if len(got) == 0 {
		return nil
	}
	m, err := k.s.RecvMessageBytes(0)
	if err != nil {
		k.t.Fatalf("recv: %v", err)
	}
	return m
}

// readable waits up to d for a message without reading it.
func (k *sock) readable(d time.Duration) bool {
	p := zmq.NewPoller()
	p.Add(k.s, zmq.POLLIN)
	got, _ := p.Poll(d)
	return len(got) > 0
}

func strs(m [][]byte) []string {
	out := make([]string, len(m))
	for i, f := range m {
		out[i] = string(f)
	}
	return out
}

func show(m [][]byte) string {
	if m == nil {
		return "<nothing>"
	}
	return fmt.Sprintf("%q", strs(m))
}

// call is the Guide's mdcliapi on a fresh REQ socket: one request, one
// reply within d (nil when none).
func call(t *testing.T, ep string, d time.Duration, service string, body ...string) [][]byte {
	t.Helper()
	c := newSock(t, zmq.REQ, ep)
	defer c.close()
	c.sendStr(append([]string{"MDPC01", service}, body...)...)
	return c.recv(d)
}

// tsp calls a titanic service as the Guide's ticlient does, and returns
// the body after the MDPC01 header and the service frame.
func tspCall(t *testing.T, ep, service string, body ...string) [][]byte {
	t.Helper()
	m := call(t, ep, 5*time.Second, service, body...)
	if m == nil {
		t.Fatalf("%s %q: no answer within 5s", service, body)
	}
	if len(m) < 3 || string(m[0]) != "MDPC01" || string(m[1]) != service {
		t.Fatalf("%s %q: answer %s is not an MDPC01 reply for the service", service, body, show(m))
	}
	return m[2:]
}

// worker is a raw MDPW01 worker on a DEALER socket.
type worker struct {
	*sock
}

func newWorker(t *testing.T, ep string) *worker {
	return &worker{newSock(t, zmq.DEALER, ep)}
}

func (w *worker) cmd(c byte, frames ...string) {
	w.t.Helper()
	b := [][]byte{{}, []byte("MDPW01"), {c}}
	for _, f := range frames {
		b = append(b, []byte(f))
	}
	w.send(b...)
}

// next returns the next command other than HEARTBEAT within d.
func (w *worker) next(d time.Duration) [][]byte {
	w.t.Helper()
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		m := w.recv(left)
		if m == nil {
			return nil
		}
		if len(m) == 3 && len(m[2]) == 1 && m[2][0] == 0x04 {
			continue
		}
		return m
	}
}
