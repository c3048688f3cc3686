package zsock

import (
	"fmt"
	"sync/atomic"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// ConnectionEvents are the events of a connecting socket's monitor that
// tell its connection's fate: made, begun, refused or closed, lost, and
// the security handshake's outcome.
const ConnectionEvents = zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_DELAYED | zmq.EVENT_CLOSED |
	zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL |
	zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH

// monitorSeq numbers the monitors' inproc endpoints, unique in the
// process.
var monitorSeq atomic.Uint64

// Monitor is a ZeroMQ socket monitor of one socket: a DEALER hides its
// connection (a dead broker, a refused CURVE key and a message over the
// peer's ZMQ_MAXMSGSIZE all look like silence), and the monitor's events
// tell them apart. Its PAIR belongs to the goroutine that owns the
// socket, which reads it without blocking (Next).
type Monitor struct {
	sock, pair *zmq.Socket
}

// NewMonitor starts watching sock for events (ConnectionEvents, say);
// call it before sock connects, so that no event is missed. zctx is
// sock's context.
func NewMonitor(zctx *zmq.Context, sock *zmq.Socket, events zmq.Event) (*Monitor, error) {
	addr := fmt.Sprintf("inproc://zsock-monitor-%d", monitorSeq.Add(1))
	if err := sock.Monitor(addr, events); err != nil {
		return nil, fmt.Errorf("socket monitor: %w", err)
	}
	pair, err := zctx.NewSocket(zmq.PAIR)
	if err == nil {
		_ = pair.SetLinger(0)
		if err = pair.Connect(addr); err != nil {
			_ = pair.Close()
		}
	}
	if err != nil {
		_ = sock.Monitor("", 0)
		return nil, fmt.Errorf("socket monitor: %w", err)
	}
	return &Monitor{sock: sock, pair: pair}, nil
}

// Next returns the next event waiting, without blocking; ok is false when
// none waits.
func (m *Monitor) Next() (ev zmq.Event, val int, ok bool) {
	ev, _, val, err := m.pair.RecvEvent(zmq.DONTWAIT)
	if err != nil {
		return 0, 0, false
	}
	return ev, val, true
}

// Close stops watching the socket (before it is closed) and closes the
// monitor's PAIR. Events not read are lost.
func (m *Monitor) Close() {
	_ = m.sock.Monitor("", 0)
	_ = m.pair.Close()
}

// Conn is what a connecting socket's monitor (ConnectionEvents) told of
// its connection: the client and the worker each read the events through
// Apply, so that both see a refused connection, a refused key and a
// failed handshake alike, and act on what changed in their own way.
type Conn struct {
	Delayed   bool // a connection was begun
	Connected bool // a TCP connection was made
	// Up: the current connection completed its security handshake.
	Up bool
	// Refused counts the connection attempts that failed (refused; an
	// unresolved name). RefusingSince: the first of them since the last
	// connection was made (zero: none since); LastRefused: the latest.
	// Both are the now of the Apply that read the event.
	Refused                    int
	RefusingSince, LastRefused time.Time
	Auth                       int    // ZAP status of a refused CURVE key (0: none)
	Handshake                  string // what a failed security handshake most likely means (HandshakeFailure; "": none)
}

// ConnChange is what one event did to a Conn that its reader may have to
// act on.
type ConnChange int

const (
	// ConnOther: a connection begun or made, or a connection that had
	// not completed its handshake lost; c's fields say it all.
	ConnOther ConnChange = iota
	// ConnRefused: a connection attempt failed (EVENT_CLOSED).
	ConnRefused
	// ConnUp: the connection completed its security handshake.
	ConnUp
	// ConnLost: a connection that had completed its handshake was lost.
	ConnLost
	// ConnAuthFailed: the peer's ZAP handler refused the key (Auth).
	ConnAuthFailed
	// ConnHandshakeFailed: the security handshake failed (Handshake).
	ConnHandshakeFailed
)

// Apply reads one monitor event (ev, with its value) into c, at now. who
// and curve name the connecting side for Handshake's text
// (HandshakeFailure).
func (c *Conn) Apply(ev zmq.Event, val int, now time.Time, who string, curve bool) ConnChange {
	switch ev {
	case zmq.EVENT_CONNECT_DELAYED:
		c.Delayed = true
	case zmq.EVENT_CONNECTED:
		c.Connected, c.RefusingSince = true, time.Time{}
	case zmq.EVENT_CLOSED:
		c.Refused++
		if c.RefusingSince.IsZero() {
			c.RefusingSince = now
		}
		c.LastRefused = now
		return ConnRefused
	case zmq.EVENT_HANDSHAKE_SUCCEEDED:
		c.Up, c.RefusingSince = true, time.Time{}
		return ConnUp
	case zmq.EVENT_DISCONNECTED:
		if c.Up {
			c.Up = false
			return ConnLost
		}
	case zmq.EVENT_HANDSHAKE_FAILED_AUTH:
		c.Auth = val
		return ConnAuthFailed
	case zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
		c.Handshake = HandshakeFailure(who, curve, ev, val)
		return ConnHandshakeFailed
	case zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
		// The same handshake failing again, told with less detail
		// (libzmq's timing): keep what a protocol error said of it.
		if c.Handshake == "" {
			c.Handshake = HandshakeFailure(who, curve, ev, val)
		}
		return ConnHandshakeFailed
	}
	return ConnOther
}

// HandshakeFailure says what a failed security handshake
// (EVENT_HANDSHAKE_FAILED_PROTOCOL or _NO_DETAIL, with its value) most
// likely means, for a CURVE client or a plain one. who names the
// connecting side in the text: "client", "worker".
func HandshakeFailure(who string, curve bool, ev zmq.Event, val int) string {
	const mechanismMismatch = 0x11000002 // ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
	switch {
	case ev == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL && val == mechanismMismatch && curve:
		return "the broker does not use CURVE (drop --curve-server-key and --curve-key, or start the broker with --curve)"
	case ev == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL && val == mechanismMismatch:
		return "the broker uses CURVE and this " + who + " does not (give --curve-server-key and --curve-key)"
	case curve:
		return "the CURVE handshake failed: the broker's public key (--curve-server-key) is probably not this broker's"
	case ev == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
		return fmt.Sprintf("ZMTP protocol error 0x%x (is it a titanic broker?)", val)
	}
	// A CURVE server drops a plain client's greeting before the client
	// sees the mechanism it asks for.
	return "the broker probably uses CURVE and this " + who + " does not (give --curve-server-key and --curve-key), or it is not a ZeroMQ broker"
}

// AuthRefused says that the broker's ZAP handler refused the CURVE key of
// the connecting side (who: "client", "worker"), with the ZAP status of
// EVENT_HANDSHAKE_FAILED_AUTH.
func AuthRefused(who, status string) string {
	return fmt.Sprintf("the broker refused this %s's CURVE key (ZAP status %s: not in its allowlist, security.public_keys_dir; "+
		"add the %s's .pub file there and send the broker SIGHUP)", who, status, who)
}
