package client

import (
	"errors"
	"strconv"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker/zsock"
)

// Why a call failed, per broker: a DEALER hides its connection (a dead
// broker, a refused CURVE key and a request over the broker's
// ZMQ_MAXMSGSIZE all look like silence), so each socket to a broker is
// watched through a ZeroMQ socket monitor. The monitor's PAIR is owned by
// the goroutine that owns the socket (run's), read without blocking
// whenever a call needs to know (before a request, while it waits, when
// it gives up); the events become what the call saw of each endpoint
// (seen), and the causes of an UnavailableError.

// errRefused: the broker refused this connection for good during the try
// (a CURVE key refused, a handshake failed for a reason it gave, the
// connection closed right after the request, sent again alone, while the
// broker still takes new ones), or closed every connection during its
// handshake for RefusedWait: resending the same request to it cannot help.
var errRefused = errors.New("refused by the broker")

// errCut: the connection was closed while the request was in flight and
// made again at once. The broker may have taken the request or not (a
// broker restarted within libzmq's reconnect interval, a connection reset
// by the network) or closed the connection on it (over its
// limits.max_message_size): only sending it again, alone, tells.
var errCut = errors.New("connection cut with the request in flight")

// watch is the monitor of one socket and the state of its connection.
type watch struct {
	mon *zsock.Monitor
	// inflight: a request was sent and its answer is due; bytes and
	// largest are its size and its largest frame.
	inflight       bool
	bytes, largest int
	// closed: the broker closed the connection while a request was in
	// flight; whether it was the request (the broker takes the next
	// connection) or the broker going away (it refuses it) is decided by
	// what follows.
	closed bool
	// cut: closed, then a new connection was made at once: the requests
	// in flight are suspects, to be sent again alone (errCut).
	cut bool
	// suspect: the request in flight is a suspect sent again alone; a
	// cut of it too is its own doing (seen.tooLarge).
	suspect bool
}

// seen is what one call saw of one endpoint, over every socket it had
// to it. Conn.Up is the current socket's (false when there is none): it
// outlives the forgetting of the rest (begin, keepUp).
type seen struct {
	// Conn: connections begun, made, refused (RefusingSince and
	// LastRefused are when harvest read the event), a refused CURVE key
	// and a failed handshake.
	zsock.Conn
	watched bool // a monitor watched a socket to the endpoint
	// closing: a connection was closed during its handshake without a
	// word (EVENT_HANDSHAKE_FAILED_NO_DETAIL): a CURVE broker refusing a
	// plain greeting or the wrong server key, but also anything that
	// takes TCP connections and closes them (a load balancer with no
	// healthy backend during a failover); what it would mean if it
	// lasts. closingSince: the first such close since a handshake last
	// succeeded; lastClosing: the latest (when harvest read them).
	closing                   string
	closingSince, lastClosing time.Time
	// tooLarge: the broker closed the connection right after the
	// request (bytes, largest), sent again alone after a first cut, and
	// took the next one.
	tooLarge       bool
	bytes, largest int
	gone           bool   // closed while in flight, then refused
	answer         string // a refusal it answered ("not active: ...")
}

// keepUp is what is kept of s when a call forgets what was seen: the
// socket's connection, if up (see begin).
func (s *seen) keepUp() seen {
	return seen{Conn: zsock.Conn{Up: s.Up, Connected: s.Up}}
}

// refusalFresh is how recent the latest refused connection attempt of an
// endpoint must be for it to count as refusing still. libzmq tries a
// refused connection again every 100ms (ZMQ_RECONNECT_IVL's default), so
// an endpoint refusing now has a later one; an endpoint without a socket
// at the moment (dropped after a try) has none, and proves nothing until
// a socket to it is made again.
const refusalFresh = 500 * time.Millisecond

// refusing reports that every connection attempt to the endpoint has
// been refused for at least wait (ECONNREFUSED, again and again: nothing
// listens there), and still is. wait <= 0: never.
func (s *seen) refusing(now time.Time, wait time.Duration) bool {
	return wait > 0 && !s.RefusingSince.IsZero() && now.Sub(s.RefusingSince) >= wait && now.Sub(s.LastRefused) < refusalFresh
}

// definitive reports a failure that resending to the same endpoint
// cannot mend.
func (s *seen) definitive() bool {
	return s.Auth != 0 || s.Handshake != "" || s.tooLarge
}

// closingAll reports that every connection to the endpoint has been
// closed during its handshake for at least wait, and still is: not a
// moment without a backend, but a broker that will not take this client.
// wait <= 0: never.
func (s *seen) closingAll(now time.Time, wait time.Duration) bool {
	return wait > 0 && !s.closingSince.IsZero() && now.Sub(s.closingSince) >= wait && now.Sub(s.lastClosing) < refusalFresh
}

// givenUp reports that the endpoint refused the call for good, or every
// connection to it for wait.
func (s *seen) givenUp(now time.Time, wait time.Duration) bool {
	return s.definitive() || s.refusing(now, wait) || s.closingAll(now, wait)
}

// refusesClient reports that the endpoint cannot answer this client at
// all, whatever it asks: givenUp, but for a request too large, which is
// the request's failing (the role question still gets its answer).
func (s *seen) refusesClient(now time.Time, wait time.Duration) bool {
	return s.Auth != 0 || s.Handshake != "" || s.refusing(now, wait) || s.closingAll(now, wait)
}

// cause turns what was seen into the endpoint's cause.
func (s *seen) cause(endpoint string, tries int, cfg Config) EndpointCause {
	ec := EndpointCause{Endpoint: endpoint, Tries: tries, Timeout: cfg.Timeout, Connected: s.Connected}
	switch {
	case s.answer != "":
		ec.Cause, ec.Detail = CauseNotActive, s.answer
	case s.Auth != 0:
		ec.Cause, ec.Detail = CauseAuth, strconv.Itoa(s.Auth)
	case s.Handshake != "":
		ec.Cause, ec.Detail = CauseHandshake, s.Handshake
	case s.closing != "":
		ec.Cause, ec.Detail = CauseHandshake, s.closing
	case s.tooLarge:
		ec.Cause, ec.Bytes, ec.Largest = CauseTooLarge, s.bytes, s.largest
	case s.gone:
		ec.Cause = CauseClosed
	case s.Connected:
		ec.Cause = CauseNoAnswer
	case s.Refused > 0:
		ec.Cause = CauseRefused
	case s.Delayed:
		ec.Cause = CauseUnreachable
	case s.watched:
		// libzmq resolves the name before it begins a connection, and
		// says nothing when it cannot.
		ec.Cause, ec.Detail = CauseUnreachable, "no connection was begun: does the host name resolve?"
	}
	return ec
}

// monitor starts watching s, before it connects (so that no event is
// missed). On failure the socket works unwatched: errors then say less.
func (cn *conn) monitor(s *zmq.Socket) *watch {
	mon, err := zsock.NewMonitor(cn.zctx, s, zsock.ConnectionEvents)
	if err != nil {
		return nil
	}
	return &watch{mon: mon}
}

// unwatch stops watching socket i (about to be closed), after reading
// what its monitor still holds.
func (cn *conn) unwatch(i int) {
	w := cn.watches[i]
	if w == nil {
		return
	}
	cn.harvest(i)
	w.mon.Close()
	cn.watches[i] = nil
	cn.seen[i].Up = false
}

// harvest reads the events the monitor of socket i holds into what the
// call saw of its endpoint.
func (cn *conn) harvest(i int) {
	w := cn.watches[i]
	if w == nil {
		return
	}
	sn := &cn.seen[i]
	sn.watched = true
	now := time.Now()
	for {
		ev, val, ok := w.mon.Next()
		if !ok {
			return
		}
		handshake := sn.Handshake
		switch sn.Apply(ev, val, now, "client", cn.curve != nil) {
		case zsock.ConnRefused:
			// A connection attempt failed (refused; an unresolved
			// name), or the socket itself closed.
			if w.closed {
				w.closed, sn.gone = false, true
			}
		case zsock.ConnUp:
			sn.closing, sn.closingSince = "", time.Time{}
			if w.closed {
				// It closed the connection on the request and took the
				// next at once. A broker restarted at once, or a
				// connection reset by the network, does so too: only a
				// request sent again alone and cut again is its own
				// doing (over the broker's size limit).
				w.closed = false
				if w.suspect {
					sn.tooLarge, sn.bytes, sn.largest = true, w.bytes, w.largest
				} else {
					w.cut = true
				}
			}
		case zsock.ConnLost:
			if w.inflight {
				w.closed = true
			}
		case zsock.ConnHandshakeFailed:
			if ev == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL {
				// libzmq says so of any connection closed before its
				// handshake ended: no verdict until it lasts
				// (closingAll). Apply took it for the handshake's
				// failure: set aside, here in client/ alone.
				sn.Handshake = handshake
				sn.closing = zsock.HandshakeFailure("client", cn.curve != nil, ev, val)
				if sn.closingSince.IsZero() {
					sn.closingSince = now
				}
				sn.lastClosing = now
			}
		}
	}
}

// sent notes that a request of frames is in flight on socket i, after
// reading the events of the time before it (a connection closed between
// calls is not this request's doing).
func (cn *conn) sent(i int, msg [][]byte) {
	w := cn.watches[i]
	if w == nil {
		return
	}
	cn.harvest(i)
	w.closed, w.cut, w.suspect = false, false, false
	w.inflight, w.bytes, w.largest = true, 0, 0
	for _, f := range msg {
		w.bytes += len(f)
		w.largest = max(w.largest, len(f))
	}
}

// pipelined notes that one more request, msg, is in flight on socket i,
// beside those already there (pipelined submits): the sizes kept are the
// largest in flight, the likeliest to be over the broker's limit.
func (cn *conn) pipelined(i int, msg [][]byte) {
	w := cn.watches[i]
	if w == nil {
		return
	}
	if !w.inflight {
		cn.sent(i, msg)
		return
	}
	bytes, largest := 0, 0
	for _, f := range msg {
		bytes += len(f)
		largest = max(largest, len(f))
	}
	w.bytes, w.largest = max(w.bytes, bytes), max(w.largest, largest)
}

// resent notes that the request in flight on socket i, alone, is sent
// again after a cut: a cut of it too is its own doing.
func (cn *conn) resent(i int) {
	if w := cn.watches[i]; w != nil {
		w.suspect = true
	}
}

// cut reports, once, that socket i's connection was cut with requests
// in flight and made again (they are lost, or taken: send them again).
func (cn *conn) cut(i int) bool {
	w := cn.watches[i]
	if w == nil || !w.cut {
		return false
	}
	w.cut = false
	return true
}

// answered notes that socket i's request is no longer in flight.
func (cn *conn) answered(i int) {
	if w := cn.watches[i]; w != nil {
		w.inflight = false
	}
}

// refusedNow reads socket i's events and returns errRefused when its
// endpoint refused the call for good, or has refused every connection
// for refusedWait.
func (cn *conn) refusedNow(i int) error {
	cn.harvest(i)
	if cn.seen[i].givenUp(time.Now(), cn.refusedWait) {
		return errRefused
	}
	return nil
}

// allRefused reports that every endpoint refused the call for good, or
// refused its connections for refusedWait (and still does).
func (cn *conn) allRefused() bool {
	now := time.Now()
	for i := range cn.eps {
		cn.harvest(i)
		if !cn.seen[i].givenUp(now, cn.refusedWait) {
			return false
		}
	}
	return true
}

// refusedFor is how long every endpoint has refused connections, when
// that is why the call ends (0: it is not).
func (cn *conn) refusedFor() time.Duration {
	now := time.Now()
	for i := range cn.eps {
		if !cn.seen[i].refusing(now, cn.refusedWait) {
			return 0
		}
	}
	return cn.refusedWait
}

// unavailable is the error of a call that no broker served. made: the
// tries made, in all (0: not counted, all of them made and waited out);
// waited: one of them waited out its Timeout.
func (c *Client) unavailable(cn *conn, service string, noActive bool, made int, waited bool) error {
	e := &UnavailableError{Service: service, Tries: c.cfg.Retries, Timeout: c.cfg.Timeout, NoActive: noActive,
		Made: made, waited: waited}
	for i, ep := range cn.eps {
		cn.harvest(i)
		e.Causes = append(e.Causes, cn.seen[i].cause(ep, c.cfg.Retries, c.cfg))
	}
	if !noActive {
		e.RefusedFor = cn.refusedFor()
	}
	return e
}
