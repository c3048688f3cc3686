package client

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/titanicmq/titanic/broker/zsock"
)

// Sentinel errors: callers branch on them with errors.Is.
var (
	// ErrUnavailable: no broker answered within Timeout on any try, or
	// every broker refused the connection for good (CURVE key refused,
	// request over its size limit). The error of a Client call is an
	// *UnavailableError saying what was seen of each broker.
	ErrUnavailable = errors.New("no broker answered")
	// ErrPending: the ticket has no reply yet (9/TSP 300).
	ErrPending = errors.New("ticket not answered yet")
	// ErrUnknown: the broker does not know the ticket (9/TSP 400 to a
	// lookup): it never existed or was closed.
	ErrUnknown = errors.New("unknown ticket")
	// ErrRejected: the broker refused the request as malformed (9/TSP 400
	// to a submit), or closed the connection on it for its size (an
	// *UnavailableError whose TooLarge is true matches it too); resending
	// it cannot help.
	ErrRejected = errors.New("request rejected")
	// ErrKeyConflict: the submit's idempotency key already names a ticket
	// that was submitted to another service or with another body (a
	// resend must repeat both exactly). Nothing was stored; resending
	// cannot help. The error is a *KeyConflictError naming the ticket
	// that holds the key; it also matches ErrRejected.
	ErrKeyConflict = errors.New("idempotency key conflict")
	// ErrFailed: the ticket failed for good (attempts exhausted, no worker
	// for its service). The error is a *FailedError with the reason.
	ErrFailed = errors.New("ticket failed")
	// ErrServer: the broker answered 500 for a transient reason (busy,
	// storage error); a later retry may succeed.
	ErrServer = errors.New("broker error")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("client closed")
	// ErrConfig: the Config is invalid.
	ErrConfig = errors.New("invalid client config")
	// ErrProtocol: the broker's answer does not follow 9/TSP.
	ErrProtocol = errors.New("protocol error")
	// ErrUnsupported: the broker does not offer what was asked: it runs an
	// older release without the service, or not every broker of its
	// cluster runs a release that reads what the request would write yet
	// (the cluster version; see `titanic cluster`). Resending it to the
	// same cluster does not help until it is upgraded.
	ErrUnsupported = errors.New("not supported by this broker")
	// ErrNotFailed: the ticket asked to be retried has not failed (it is
	// pending, running or done).
	ErrNotFailed = errors.New("ticket has not failed")
)

// FailedError is the error of a ticket that failed for good.
type FailedError struct {
	Ticket string
	Reason string
	// Cancelled: the ticket was cancelled (its Reason starts
	// "cancelled: "); the error then matches ErrCancelled too.
	Cancelled bool
}

func (e *FailedError) Error() string {
	return fmt.Sprintf("ticket %s failed: %s", e.Ticket, e.Reason)
}

// Is makes errors.Is(err, ErrFailed) true, and errors.Is(err,
// ErrCancelled) for a cancelled ticket.
func (e *FailedError) Is(target error) bool {
	return target == ErrFailed || (e.Cancelled && target == ErrCancelled)
}

// KeyConflictError is the error of a submit whose idempotency key already
// names another request's ticket.
type KeyConflictError struct {
	Key    string
	Ticket string // the ticket that holds the key (a shard ticket from Sharded)
	Detail string // the broker's words on what differs
}

func (e *KeyConflictError) Error() string {
	return fmt.Sprintf("%v: key %q already names ticket %s (%s)", ErrKeyConflict, e.Key, e.Ticket, e.Detail)
}

// Is makes errors.Is true for ErrKeyConflict and ErrRejected: code that
// treats a refused submit as final keeps doing so.
func (e *KeyConflictError) Is(target error) bool {
	return target == ErrKeyConflict || target == ErrRejected
}

// uncertainError is the error of a submit that a broker said it may have
// stored ("outcome unknown") and that then failed otherwise: it gives the
// key, with which a resend makes no second ticket. Typed so that Sharded
// can tell it from a failure that stored nothing (mayBeStored).
type uncertainError struct {
	service, key string
	err          error
}

func (e *uncertainError) Error() string {
	return fmt.Sprintf("submit to %s with idempotency key %q, which a broker said it may have stored: %v", e.service, e.key, e.err)
}

func (e *uncertainError) Unwrap() error { return e.err }

// mayBeStored reports that err is that of a submit a broker said it may
// have stored.
func mayBeStored(err error) bool {
	var ue *uncertainError
	return errors.As(err, &ue)
}

// UnavailableError is the error of a call that no broker served (it
// matches ErrUnavailable): the tries it made and, per broker endpoint,
// what the client saw of it (Causes), so that a dead broker, a refused
// key, a request over the broker's size limit and a lost quorum each say
// so. Callers that must tell them apart read Causes (errors.As); no
// separate sentinel is defined, since every one of them means the same to
// a retrying caller: no broker served the call. It does not say that
// nothing was done: a broker that went silent, or lost the connection,
// with the request in flight may have carried it out, and a submit may
// have been stored (Submit wraps the error with the idempotency key when
// a broker said so: "outcome unknown"). A submit sent again with its key
// makes no second ticket.
type UnavailableError struct {
	Service string
	Tries   int           // tries per broker
	Timeout time.Duration // each try's
	// NoActive: brokers answered, but none serves (a pair's passive
	// node, raft followers without a leader, a node waiting for its
	// peer).
	NoActive bool
	// RefusedFor: the call gave up before its tries were spent because
	// every broker refused its connections for this long
	// (Config.RefusedWait); 0: it did not.
	RefusedFor time.Duration
	// Made is how many tries the call made, in all, over the brokers
	// (0: not counted; Tries per broker, each waited out). Fewer than
	// Tries per broker: it gave up early, every broker having refused it
	// for good (its CURVE key, a request over the size limit).
	Made   int
	Causes []EndpointCause // one per broker endpoint, in Config.Brokers order
	// waited: at least one of the Made tries waited out its Timeout
	// (the others were refused at once).
	waited bool
}

// RefusedAtOnce reports whether the call gave up without waiting out a
// try because every broker refused it for good (its CURVE key, its
// size), so that more tries or longer ones would not help. Not when a
// broker's connections were refused, nor when one did not answer: a
// broker being started may yet listen.
func (e *UnavailableError) RefusedAtOnce() bool {
	if e.Made == 0 || e.waited || e.RefusedFor > 0 || len(e.Causes) == 0 {
		return false
	}
	for _, c := range e.Causes {
		if c.Cause != CauseAuth && c.Cause != CauseHandshake && c.Cause != CauseTooLarge {
			return false
		}
	}
	return true
}

// Summary says what was tried, without the causes (for a program that
// prints them its own way, one per line).
func (e *UnavailableError) Summary() string {
	if e.NoActive {
		return fmt.Sprintf("%v: %s: %s among %d", ErrUnavailable, e.Service, noActive, len(e.Causes))
	}
	if e.RefusedFor > 0 {
		return fmt.Sprintf("%v: %s: every broker refused its connections for %s (given up before the %d tries of %s per broker)",
			ErrUnavailable, e.Service, e.RefusedFor, e.Tries, e.Timeout)
	}
	all := e.Tries * len(e.Causes)
	switch {
	case e.Made == 0 || e.waited && e.Made >= all:
		// The tries, waited out (those refused at once among them
		// took less).
	case !e.waited && e.Made == 1:
		// Refused for good on the first try: none more was made.
		return fmt.Sprintf("%s failed at once", e.Service)
	case !e.waited:
		return fmt.Sprintf("%s failed after %d tries, each refused at once", e.Service, e.Made)
	default:
		return fmt.Sprintf("%v: %s after %d of its %d tries of %s, then refused by every broker",
			ErrUnavailable, e.Service, e.Made, all, e.Timeout)
	}
	return fmt.Sprintf("%v: %s after %d tries of %s per broker", ErrUnavailable, e.Service, e.Tries, e.Timeout)
}

// Error says what was tried and, per endpoint, what was seen, on one line.
func (e *UnavailableError) Error() string {
	var b strings.Builder
	b.WriteString(e.Summary())
	for i, c := range e.Causes {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(c.String())
	}
	return b.String()
}

// Is makes errors.Is(err, ErrUnavailable) true, and errors.Is(err,
// ErrRejected) too when the request was too large for the brokers
// (TooLarge): a rejected request, which resending cannot help.
func (e *UnavailableError) Is(target error) bool {
	return target == ErrUnavailable || target == ErrRejected && e.TooLarge()
}

// TooLarge reports that a broker closed the connection on the request
// (CauseTooLarge: over its limits.max_message_size) and no other broker
// was reached to serve it (the others refused connections or were not
// reached): the request is too large, not the brokers unavailable.
func (e *UnavailableError) TooLarge() bool {
	tooLarge := false
	for _, c := range e.Causes {
		switch c.Cause {
		case CauseTooLarge:
			tooLarge = true
		case CauseRefused, CauseUnreachable:
		default:
			return false
		}
	}
	return tooLarge
}

// All reports whether every endpoint failed for cause.
func (e *UnavailableError) All(cause Cause) bool {
	for _, c := range e.Causes {
		if c.Cause != cause {
			return false
		}
	}
	return len(e.Causes) > 0
}

// Cause is what the client saw of a broker endpoint that did not serve a
// call, from the connection's events (a ZeroMQ socket monitor) and the
// broker's answers.
type Cause int

const (
	// CauseNoAnswer: connected (or nothing could be seen), but no answer
	// within the tries: a broker that is stuck, a plain 7/MDP request no
	// worker took, or a partition after the connection was made.
	CauseNoAnswer Cause = iota
	// CauseRefused: every TCP connection was refused (or the host name
	// did not resolve): no broker listens there.
	CauseRefused
	// CauseUnreachable: no TCP connection was made, nor refused, within
	// the tries: the host is down or unreachable, or a firewall drops.
	CauseUnreachable
	// CauseTooLarge: the broker closed the connection right after the
	// request, then took a new one, and did so again when the request was
	// sent again alone: the request is most likely over its
	// limits.max_message_size (the client cannot see the limit).
	CauseTooLarge
	// CauseClosed: the broker closed the connection while the request
	// was in flight and took no new one (it stopped or crashed).
	CauseClosed
	// CauseAuth: the broker's ZAP handler refused this client's CURVE
	// key (not in its allowlist).
	CauseAuth
	// CauseHandshake: the security handshake failed otherwise: CURVE on
	// one side only, or the wrong broker public key; or, when the
	// broker gave no reason, every connection was closed during its
	// handshake (also what anything that is no ZeroMQ broker does, a
	// load balancer with no backend).
	CauseHandshake
	// CauseNotActive: the broker answered that it does not serve
	// clients (Detail: its words, "not active: <why>").
	CauseNotActive
)

// EndpointCause is what was seen of one broker endpoint.
type EndpointCause struct {
	Endpoint string
	Cause    Cause
	// Detail: CauseNotActive, the broker's refusal; CauseAuth, the ZAP
	// status code; CauseHandshake, what failed; CauseUnreachable, when no
	// connection was even begun (a host name that does not resolve).
	Detail string
	// Bytes and Largest: CauseTooLarge, the request's size and its
	// largest frame (ZMQ_MAXMSGSIZE bounds each frame).
	Bytes, Largest int
	Tries          int           // tries per broker
	Timeout        time.Duration // each try's
	// Connected: a connection to the endpoint was made during the call
	// (false also when the client could not watch it).
	Connected bool
}

// String says, for people, what was seen: the endpoint, the cause and,
// where one applies, the limit or the setting to look at.
func (c EndpointCause) String() string {
	return c.Endpoint + ": " + c.text()
}

func (c EndpointCause) text() string {
	switch c.Cause {
	case CauseRefused:
		if host := endpointHost(c.Endpoint); host != "" && net.ParseIP(host) == nil {
			return "connection refused, or the host name does not resolve (no broker listens there)"
		}
		return "connection refused (no broker listens there)"
	case CauseUnreachable:
		if c.Detail != "" {
			return c.Detail
		}
		return fmt.Sprintf("no TCP connection within %d tries of %s (host down or unreachable, or a firewall drops the packets)", c.Tries, c.Timeout)
	case CauseTooLarge:
		return fmt.Sprintf("the broker closed the connection right after this request of %d bytes (largest frame %d bytes): "+
			"it is probably over the broker's limits.max_message_size (the client cannot see the limit; check the broker's config)", c.Bytes, c.Largest)
	case CauseClosed:
		return "the broker closed the connection while the request was in flight and took no new one (stopped or crashed?)"
	case CauseAuth:
		return zsock.AuthRefused("client", c.Detail)
	case CauseHandshake:
		return "security handshake failed: " + c.Detail
	case CauseNotActive:
		return fmt.Sprintf("answered %q", c.Detail)
	}
	if !c.Connected {
		return fmt.Sprintf("no answer within %d tries of %s", c.Tries, c.Timeout)
	}
	return fmt.Sprintf("connected, but no answer within %d tries of %s", c.Tries, c.Timeout)
}

// endpointHost is the host of a "tcp://host:port" endpoint, "" for
// other transports.
func endpointHost(ep string) string {
	rest, ok := strings.CutPrefix(ep, "tcp://")
	if !ok {
		return ""
	}
	host, _, err := net.SplitHostPort(rest)
	if err != nil {
		return ""
	}
	return host
}

// CheckEndpoint reports whether ep is an endpoint a client can connect
// to, as a worker's broker endpoints are checked (zsock.CheckEndpoint):
// transport://address, tcp://HOST:PORT with its port. libzmq refuses
// anything else with EINVAL at connect ("invalid argument"), which says
// nothing of what is missing (127.0.0.1:5555, the form of an HTTP
// address, is the usual slip), and connects for ever to
// tcp://HOST:99999; the error says what to write instead.
func CheckEndpoint(ep string) error {
	if err := zsock.CheckEndpoint(ep, false); err != nil {
		return fmt.Errorf("broker endpoint %w", err)
	}
	return nil
}

// maxNameInError is how much of a service name an error message shows.
const maxNameInError = 64

// clipName returns a service name for an error message: whole up to
// maxNameInError bytes, else its start and its length. The broker refuses
// a name over 7/MDP's 255 bytes, and a message echoing all of a 100 KB
// one buries what it says.
func clipName(s string) string {
	if len(s) <= maxNameInError {
		return s
	}
	n := maxNameInError
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return fmt.Sprintf("%s... (%d bytes)", s[:n], len(s))
}
