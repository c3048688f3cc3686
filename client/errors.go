package client

import (
	"errors"
	"fmt"
)

// Sentinel errors: callers branch on them with errors.Is.
var (
	// ErrUnavailable: no broker answered within Timeout on any try.
	ErrUnavailable = errors.New("no broker answered")
	// ErrPending: the ticket has no reply yet (9/TSP 300).
	ErrPending = errors.New("ticket not answered yet")
	// ErrUnknown: the broker does not know the ticket (9/TSP 400 to a
	// lookup): it never existed or was closed.
	ErrUnknown = errors.New("unknown ticket")
	// ErrRejected: the broker refused the request as malformed (9/TSP 400
	// to a submit); resending it cannot help.
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
