package zsock

import (
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// TestConnApply checks the reading of a connection's events that the
// client and the worker share: refusals counted and timed until a
// connection is made, a loss only of a connection past its handshake,
// and a protocol error's detail kept over a later failure without one.
func TestConnApply(t *testing.T) {
	t0 := time.Unix(1000, 0)
	t1 := t0.Add(time.Second)
	var c Conn
	if got := c.Apply(zmq.EVENT_CONNECT_DELAYED, 0, t0, "worker", false); got != ConnOther || !c.Delayed {
		t.Fatalf("delayed: change %v, %+v", got, c)
	}
	c.Apply(zmq.EVENT_CLOSED, 0, t0, "worker", false)
	if got := c.Apply(zmq.EVENT_CLOSED, 0, t1, "worker", false); got != ConnRefused {
		t.Fatalf("closed: change %v, want ConnRefused", got)
	}
	if c.Refused != 2 || !c.RefusingSince.Equal(t0) || !c.LastRefused.Equal(t1) {
		t.Fatalf("after two refusals: %+v, want 2 refused since %v, last %v", c, t0, t1)
	}
	if got := c.Apply(zmq.EVENT_DISCONNECTED, 0, t1, "worker", false); got != ConnOther {
		t.Fatalf("disconnected before any handshake: change %v, want ConnOther", got)
	}
	c.Apply(zmq.EVENT_CONNECTED, 0, t1, "worker", false)
	if !c.Connected || !c.RefusingSince.IsZero() {
		t.Fatalf("connected: %+v, want connected and refusing since zero", c)
	}
	if got := c.Apply(zmq.EVENT_HANDSHAKE_SUCCEEDED, 0, t1, "worker", false); got != ConnUp || !c.Up {
		t.Fatalf("handshake succeeded: change %v, %+v", got, c)
	}
	if got := c.Apply(zmq.EVENT_DISCONNECTED, 0, t1, "worker", false); got != ConnLost || c.Up {
		t.Fatalf("disconnected when up: change %v, %+v; want ConnLost and down", got, c)
	}
	if got := c.Apply(zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400, t1, "worker", false); got != ConnAuthFailed || c.Auth != 400 {
		t.Fatalf("auth failed: change %v, auth %d", got, c.Auth)
	}

	const mismatch = 0x11000002
	if got := c.Apply(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, mismatch, t1, "worker", false); got != ConnHandshakeFailed {
		t.Fatalf("protocol error: change %v, want ConnHandshakeFailed", got)
	}
	detailed := HandshakeFailure("worker", false, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, mismatch)
	if c.Handshake != detailed {
		t.Fatalf("protocol error: %q, want %q", c.Handshake, detailed)
	}
	if got := c.Apply(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 0, t1, "worker", false); got != ConnHandshakeFailed || c.Handshake != detailed {
		t.Fatalf("no detail after a protocol error: change %v, %q; want the protocol error's %q", got, c.Handshake, detailed)
	}
	var fresh Conn
	fresh.Apply(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 0, t1, "client", true)
	if want := HandshakeFailure("client", true, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 0); fresh.Handshake != want {
		t.Fatalf("no detail alone: %q, want %q", fresh.Handshake, want)
	}
}
