package ops

import (
	"errors"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// ErrNotActive means this node does not serve writes (a passive node of a
// pair, a raft follower). Tickets.Close returns an error wrapping it; the
// API answers 503.
var ErrNotActive = errors.New(string(tsp.NotActive))

// ErrBusy means the node refused the operation because it is overloaded
// (its commit queue is full). Tickets.Close returns an error wrapping it;
// the API answers 503 with Retry-After.
var ErrBusy = errors.New(string(tsp.Busy))

// ErrBadRequest means the request was refused as malformed or over a
// limit: Submitter.Submit returns an error wrapping it; the API answers
// 400.
var ErrBadRequest = errors.New(string(tsp.BadRequest))

// ErrConfig means a Config is invalid.
var ErrConfig = errors.New("invalid ops config")

// ErrConflict means the request contradicts what the store holds: a
// submit whose idempotency key names a ticket of another service or body.
var ErrConflict = errors.New("conflict")

// ErrUnsupported means the node or its cluster cannot take the operation
// yet: a replicated cluster whose members do not all run a release that
// reads it (store.ErrClusterVersion is answered alike). The API answers
// 400 "not supported: ...", which the Go client maps to
// client.ErrUnsupported.
var ErrUnsupported = errors.New(string(tsp.NotSupported))
