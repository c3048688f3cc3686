package store

import "errors"

// ErrNotFound means no ticket has that ID (never submitted, or closed).
var ErrNotFound = errors.New("ticket not found")

// ErrFinal means the op needs an unfinished ticket but the ticket is done or
// failed; for OpReply it means an earlier reply won.
var ErrFinal = errors.New("ticket already finished")

// ErrInvalidOp means the op is malformed (unknown kind, empty service, zero ID).
var ErrInvalidOp = errors.New("invalid op")

// ErrBadID means a ticket string is not 32 hexadecimal characters.
var ErrBadID = errors.New("malformed ticket id")

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
