package store

import (
	"errors"
	"fmt"
)

// ErrNotFound means no ticket has that ID (never submitted, or closed).
var ErrNotFound = errors.New("ticket not found")

// ErrFinal means the op needs an unfinished ticket but the ticket is done or
// failed; for OpReply it means an earlier reply won.
var ErrFinal = errors.New("ticket already finished")

// ErrInvalidOp means the op is malformed (unknown kind, empty service, zero ID).
var ErrInvalidOp = errors.New("invalid op")

// ErrKeyConflict means an OpSubmit's idempotency key already names a
// ticket that was submitted to another service or with another body: the
// key is someone else's, or the caller reused it by mistake, and
// returning the old ticket would silently drop the new request. Nothing
// is created. The Result's ID is the ticket that holds the key; the error
// is a *KeyConflictError.
var ErrKeyConflict = errors.New("idempotency key conflict")

// KeyConflictError is the Result.Err of a submit refused with
// ErrKeyConflict.
type KeyConflictError struct {
	Key     string
	Ticket  ID     // the ticket that holds the key
	Service string // the service Ticket was submitted to
	// Field is what differs from Ticket's submit: "service" (then the
	// body was not compared) or "body".
	Field string
}

func (e *KeyConflictError) Error() string {
	if e.Field == "service" {
		return fmt.Sprintf("%v: key %q is ticket %s's, submitted to another service (%q)", ErrKeyConflict, e.Key, e.Ticket, e.Service)
	}
	return fmt.Sprintf("%v: key %q is ticket %s's, submitted to %q with another body", ErrKeyConflict, e.Key, e.Ticket, e.Service)
}

// Is makes errors.Is(err, ErrKeyConflict) true.
func (e *KeyConflictError) Is(target error) bool { return target == ErrKeyConflict }

// ErrBadID means a ticket string is not 32 hexadecimal characters.
var ErrBadID = errors.New("malformed ticket id")

// ErrUncertain means a batch's outcome is unknown: it may or may not be
// durable (a raft leader lost its leadership with the batch in flight).
// Its submits are resubmitted with the same idempotency keys, which tell.
var ErrUncertain = errors.New("outcome unknown")

// ErrNotLeader means the store takes no writes on this node (a replica
// that is not the raft leader): nothing of the batch was stored, and the
// node that leads can take it.
var ErrNotLeader = errors.New("not the raft leader")

// ErrClosed means the store has been closed.
var ErrClosed = errors.New("store closed")

// ErrCorrupt means the data file is damaged or is not a titanic store.
var ErrCorrupt = errors.New("store data corrupt")

// ErrApplied means an ApplyAt call's log index was applied before; nothing
// was applied again.
var ErrApplied = errors.New("log entry already applied")

// ErrDiverged means an ApplyAt entry's index was applied before under
// another term: the replicated log this store followed was replaced (a
// node that served on its own rejoined another). The store no longer
// matches the log; the node must be restored from the others.
var ErrDiverged = errors.New("store diverged from the replicated log")

// ErrUnsupported means a record (a replicated batch of ops, say) was
// written by a newer version of titanic: this build cannot read it and
// must not guess. The node that meets it must be upgraded.
var ErrUnsupported = errors.New("written by a newer titanic version")

// ErrKeepCurrent, returned by RestoreChecked's accept, keeps the store as
// it is and makes the restore succeed: the store already holds everything
// the snapshot does (a replica ahead of the snapshot its leader sent).
var ErrKeepCurrent = errors.New("the store already holds the snapshot's content")

// ErrNotFailed means an OpRetry's ticket is not failed: it is pending or
// dispatched (a retry would run it twice) or done.
var ErrNotFailed = errors.New("ticket has not failed")

// ErrNotDispatched means an OpUndispatch's ticket is not dispatched:
// there is no dispatch to take back.
var ErrNotDispatched = errors.New("ticket is not dispatched")

// ErrHandedOver means an op of a split brain's handover was taken before
// (see OpHandover): the handover was redone, and the op is left out.
var ErrHandedOver = errors.New("taken before in this handover")

// ErrClusterVersion means a replicated store refused an op of a kind that
// not every member of its cluster is known to read yet (see
// BoltStore.ClusterVersion): writing it would stop the members that run an
// older titanic. The op is refused before it reaches the log.
var ErrClusterVersion = errors.New("not every member of the cluster runs a titanic that reads it")

// ClusterVersionError is the ErrClusterVersion of one op: the cluster
// version its kind needs and the one the cluster is at.
type ClusterVersionError struct {
	Kind       OpKind
	Need, Have int
}

func (e *ClusterVersionError) Error() string {
	return fmt.Sprintf("%s needs cluster version %d and the cluster is at %d: %v", e.Kind, e.Need, e.Have, ErrClusterVersion)
}

// Is makes errors.Is(err, ErrClusterVersion) true.
func (e *ClusterVersionError) Is(target error) bool { return target == ErrClusterVersion }
