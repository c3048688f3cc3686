package store

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"
)

// ID identifies a ticket. It is a UUID (version 7, so IDs sort roughly by
// creation time, which keeps bbolt inserts local) and is written on the wire
// as 32 hexadecimal characters, as 9/TSP requires.
type ID [16]byte

// NewID returns a fresh ticket ID.
func NewID() ID {
	u, err := uuid.NewV7()
	if err != nil {
		// NewV7 only fails when the system random source fails; fall back
		// to v4, which has the same failure mode but a different reader.
		u = uuid.New()
	}
	return ID(u)
}

// ParseID parses the 32-character hexadecimal form of an ID (either case).
// A 36-character dashed UUID is accepted too, for people typing tickets.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) == 36 && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-' {
		s = strings.ReplaceAll(s, "-", "")
	}
	if len(s) != 32 {
		return id, fmt.Errorf("%w: want 32 hex characters, got %d", ErrBadID, len(s))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("%w: %v", ErrBadID, err)
	}
	return id, nil
}

// String returns the 32-character lowercase hexadecimal form.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// State is a ticket's place in its life cycle.
type State uint8

// Ticket states. A ticket is created pending, becomes dispatched while a
// worker holds it, and goes back to pending when that attempt fails. Done
// and failed are final. A closed ticket is deleted.
const (
	StatePending State = iota + 1
	StateDispatched
	StateDone
	StateFailed
	// StateCancelled is final: the ticket was cancelled (OpCancel) before
	// it was answered; a late reply is dropped.
	StateCancelled

	lastState = StateCancelled
)

func (s State) String() string {
	switch s {
	case StatePending:
		return "pending"
	case StateDispatched:
		return "dispatched"
	case StateDone:
		return "done"
	case StateFailed:
		return "failed"
	case StateCancelled:
		return "cancelled"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// ParseState parses the String form of a State.
func ParseState(s string) (State, error) {
	for st := StatePending; st <= lastState; st++ {
		if st.String() == s {
			return st, nil
		}
	}
	return 0, fmt.Errorf("unknown ticket state %q (want pending, dispatched, done, failed or cancelled)", s)
}

// Final reports whether no further op but Close (and OpRetry, for a failed
// ticket) can change a ticket in s.
func (s State) Final() bool { return s == StateDone || s == StateFailed || s == StateCancelled }

// Priority orders the pending tickets of one service: a higher level is
// dispatched first, FIFO within a level (the dispatcher keeps lower levels
// from starving; see package titanic).
type Priority int8

// Priority levels. The zero value is normal, which every ticket of the
// first release has.
const (
	PriorityLow    Priority = -1
	PriorityNormal Priority = 0
	PriorityHigh   Priority = 1
)

func (p Priority) String() string {
	switch p {
	case PriorityLow:
		return "low"
	case PriorityNormal:
		return "normal"
	case PriorityHigh:
		return "high"
	}
	return fmt.Sprintf("priority(%d)", int8(p))
}

// ParsePriority parses the String form of a Priority.
func ParsePriority(s string) (Priority, error) {
	for p := PriorityLow; p <= PriorityHigh; p++ {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("unknown priority %q (want high, normal or low)", s)
}

// RetryPolicy overrides, for one ticket, how many dispatches it gets and
// the backoff between them. Zero fields take the service's or broker's
// defaults.
type RetryPolicy struct {
	MaxAttempts int
	// Base and Max bound the exponential backoff before each attempt
	// after the first.
	Base, Max time.Duration
}

// Lifecycle is what a submit may ask beyond 9/TSP, kept with the ticket.
// The zero value is a plain 9/TSP request: normal priority, due at once,
// no deadline, the default retry policy.
type Lifecycle struct {
	Priority Priority
	// Due: not dispatched before (a delay, a schedule, or the backoff
	// before the next attempt). A pending ticket due later is delayed.
	Due time.Time
	// Deadline: a ticket not dispatched by then fails as expired.
	Deadline time.Time
	Retry    RetryPolicy
}

// IsZero reports whether l asks nothing beyond 9/TSP.
func (l Lifecycle) IsZero() bool { return l == Lifecycle{} }

// Ticket is a stored request and what has happened to it.
type Ticket struct {
	ID       ID
	Service  string
	State    State
	Seq      uint64 // position in the service's FIFO; assigned on Submit
	Attempts int    // dispatches so far
	IdemKey  string // idempotency key given on Submit, if any
	Reason   string // why the last attempt failed, or why the ticket failed
	Created  time.Time
	Updated  time.Time
	Lifecycle
	// Started is when the last attempt was dispatched, and Worker the
	// worker it went to (as the dispatcher names it), when known.
	Started time.Time
	Worker  string
	// Body holds the request frames. Listing and recovery leave it nil; Get
	// fills it.
	Body [][]byte
}

// OpKind names a mutation.
type OpKind uint8

// Op kinds. See Op for the fields each one uses.
const (
	OpSubmit   OpKind = iota + 1 // new ticket: Service, Body, IdemKey
	OpDispatch                   // pending → dispatched, attempts+1
	OpRequeue                    // dispatched → pending; Reason
	OpReply                      // pending|dispatched → done; Reply
	OpFail                       // pending|dispatched → failed; Reason
	OpClose                      // delete the ticket and its reply
	// OpAdopt takes in a ticket minted by another history (the side of
	// a split brain that yields hands its work over): ID, Time (its
	// creation), Service, Body, IdemKey, Lifecycle, and Attempts and
	// Dispatched (its dispatches there, and whether one still ran when
	// it was handed over: it is then adopted dispatched, an attempt no
	// worker of this history holds). An ID already present is left
	// alone (Duplicate). A key that names another ticket keeps naming
	// the older of the two; both tickets are kept. Ops record version
	// 2; 5 with Attempts or Dispatched.
	OpAdopt
	// OpRetry gives a failed ticket another round: failed → pending, at
	// the back of its service's FIFO (a new Seq), attempts back to 0,
	// reason cleared. A ticket that is not failed is left alone
	// (ErrNotFailed). Ops record version 3.
	OpRetry
	// OpCancel ends a pending or dispatched ticket as cancelled (Reason,
	// default "cancelled"); a finished one is left alone (ErrFinal).
	// Ops record version 3.
	OpCancel
	// OpPause and OpResume stop and restart the dispatch of a Service's
	// tickets (ID is not used); submits are still taken. Result.Existed
	// says whether the service was paused before. Ops record version 3.
	OpPause
	OpResume
	// OpPurge is OpClose on condition: it deletes the ticket only if it
	// has failed, and leaves it alone otherwise (ErrNotFailed), so that
	// a ticket retried after a purge listed it survives the purge. The
	// condition is decided where the op is applied, so every replica
	// decides alike. An unknown ticket: Existed false, as OpClose. Ops
	// record version 3.
	OpPurge
	// OpUndispatch takes back a dispatch that no worker or peer saw (its
	// send failed at once: the worker was gone, or its queue full):
	// dispatched → pending, attempts−1, Started and Worker cleared, and
	// no attempt recorded, so that a job is charged only for the
	// attempts that reached a worker. A ticket that is not dispatched is
	// left alone (ErrNotDispatched). Ops record version 4.
	OpUndispatch
	// OpHandover marks the ops of a split brain's handover that follow
	// it in the same call: ID names the handover, Body says which of its
	// ops they are, by their place in the yielding node's solo journal
	// (HandoverKeyedMark, ops record version 7) or in the sequence of
	// the handover's ops (HandoverMark, version 6). A store keeps, per
	// handover, how far it took it, and takes no op of it twice: those
	// it took before fail with ErrHandedOver, untouched. A handover
	// redone from the fork point (its answer lost, the yielding node
	// killed between two batches, or serving alone again in between)
	// then changes nothing the taker's clients did since (see
	// handover.go).
	OpHandover

	// lastOpKind is the newest kind this build reads. A new kind must
	// come with a new ops record version (see codec.go), so that an
	// older node refuses it (ErrUnsupported) instead of skipping it.
	lastOpKind = OpHandover
)

// Version is the ops record version that introduced the kind: the
// cluster version a replicated store needs before it may write it (see
// ClusterVersion). Unknown kinds report 0.
func (k OpKind) Version() int {
	switch {
	case k >= OpSubmit && k <= OpClose:
		return opsRecordV1
	case k == OpAdopt:
		return opsRecordV2
	case k >= OpRetry && k <= OpPurge:
		return opsRecordV3
	case k == OpUndispatch:
		return opsRecordV4
	case k == OpHandover:
		return opsRecordV6
	}
	return 0
}

// Known reports whether this build knows the kind. A store fails an op of
// another kind alone (ErrInvalidOp); a replicated store must not put one in
// its log, where every reader would take it for a newer version's
// (ErrUnsupported) and stop.
func (k OpKind) Known() bool { return k >= OpSubmit && k <= lastOpKind }

func (k OpKind) String() string {
	switch k {
	case OpSubmit:
		return "submit"
	case OpDispatch:
		return "dispatch"
	case OpRequeue:
		return "requeue"
	case OpReply:
		return "reply"
	case OpFail:
		return "fail"
	case OpClose:
		return "close"
	case OpAdopt:
		return "adopt"
	case OpRetry:
		return "retry"
	case OpCancel:
		return "cancel"
	case OpPause:
		return "pause"
	case OpResume:
		return "resume"
	case OpPurge:
		return "purge"
	case OpUndispatch:
		return "undispatch"
	case OpHandover:
		return "handover"
	}
	return fmt.Sprintf("op(%d)", uint8(k))
}

// Op is one mutation. Ops are deterministic: everything that varies (the new
// ticket's ID, the time) is chosen by the caller and carried in the op, so
// that applying the same ops to two stores (raft replicas) gives the same
// state.
type Op struct {
	Kind    OpKind
	ID      ID
	Time    time.Time
	Service string   // OpSubmit
	Body    [][]byte // OpSubmit
	IdemKey string   // OpSubmit (optional)
	Reply   [][]byte // OpReply
	Reason  string   // OpRequeue, OpFail, OpCancel
	// Lifecycle: OpSubmit and OpAdopt take all of it; OpRequeue takes
	// Due (the backoff before the next attempt). Any of it set makes the
	// op need ops record version 3.
	Lifecycle
	// Worker names the worker of an OpDispatch (attempt history); it is
	// optional: a store whose cluster is older drops it (WithoutOptional).
	Worker string
	// Attempts and Dispatched are an OpAdopt's: the ticket's dispatches
	// in the history that hands it over, and whether it was dispatched
	// there when handed over (Dispatched needs Attempts above 0). Either
	// makes the op need ops record version 5; a handover to a cluster
	// below it leaves them out (the ticket is adopted as never
	// dispatched, as before).
	Attempts   int
	Dispatched bool
}

// Version is the ops record version the op needs: its kind's, or the
// version that added a field it carries.
func (o *Op) Version() int {
	v := o.Kind.Version()
	if !o.Lifecycle.IsZero() || o.Worker != "" {
		v = max(v, opsRecordV3)
	}
	if o.Attempts != 0 || o.Dispatched {
		v = max(v, opsRecordV5)
	}
	if _, _, ok := o.HandoverKeys(); ok {
		v = max(v, opsRecordV7)
	}
	return v
}

// AdoptHistoryVersion is the cluster version an OpAdopt's Attempts and
// Dispatched need.
const AdoptHistoryVersion = opsRecordV5

// WithoutAdoptHistory returns the op without Attempts and Dispatched, for
// a handover to a cluster whose version is below AdoptHistoryVersion.
func (o Op) WithoutAdoptHistory() Op {
	o.Attempts, o.Dispatched = 0, false
	return o
}

// WithoutOptional returns the op without the fields that only enrich what
// is kept (the worker's name), which a store may drop when its cluster
// cannot carry them yet.
func (o Op) WithoutOptional() Op {
	o.Worker = ""
	return o
}

// Result is the outcome of one Op.
type Result struct {
	// ID is the ticket the op acted on. For an OpSubmit whose IdemKey was
	// already known, it is the original ticket: Duplicate is true when the
	// submit had the original's service and body frames (a resend), and
	// otherwise Err is a *KeyConflictError (ErrKeyConflict) and nothing
	// was created. A key is known from the submit that set it until its
	// ticket is closed (OpClose, retention included): then it is free, and
	// a submit with it makes a new ticket whatever its service and body.
	ID        ID
	Duplicate bool
	// Seq is the FIFO position of a submitted ticket.
	Seq uint64
	// State is the ticket's state after the op (0 after OpClose).
	State State
	// Attempts is the ticket's attempt count after the op.
	Attempts int
	// Existed is false for an OpClose of an unknown ticket.
	Existed bool
	// Closed is, for an OpClose that deleted a ticket, the state it was
	// in; Service is its service after an OpClose that deleted it or an
	// OpRetry (the service keeps per-service counts of finished tickets
	// without reading the store again, and queues a retried ticket its
	// dispatcher no longer held); empty for other kinds.
	Closed  State
	Service string
	// Unqueued is, when the op finished or deleted an unfinished ticket,
	// the dispatch index it left (QueueReady or QueueDelayed; 0
	// otherwise); Service is then set too. A dispatcher that did not
	// hold the ticket in memory (it waited on disk) counts it out by it.
	Unqueued Queue
	// Lifecycle is, after an OpRetry, the retried ticket's (its priority
	// and retry policy: the dispatcher queues it without reading it).
	Lifecycle Lifecycle
	// Err is this op's own failure (ErrNotFound, ErrFinal, ErrInvalidOp,
	// ErrKeyConflict, ErrNotFailed, ErrClusterVersion); the other ops of
	// the batch are still applied.
	Err error
}

// Done is the outcome of one ApplyAsync call.
type Done struct {
	// Results and Err are what Apply would have returned.
	Results []Result
	Err     error
	// Last is set on the last call of a commit (one transaction, or one
	// raft entry) to complete: no done of the same commit follows it.
	Last bool
}

// Filter selects tickets for List.
type Filter struct {
	Service string // "" for all
	State   State  // 0 for all
	After   ID     // page start: only IDs greater than this (zero for the first page)
	Limit   int    // at most this many; 0 means 100
	// Reverse lists in descending ID order (newest first: IDs are
	// time-ordered); After then pages downwards.
	Reverse bool
	// MaxScan bounds the tickets ListPage examines, matching or not;
	// 0 means DefaultMaxScan.
	MaxScan int
}

// Page is one step of a listing (ListPage).
type Page struct {
	Tickets []Ticket
	// More is set when the scan stopped on Filter.MaxScan, before the
	// end and before Limit tickets matched: the listing continues after
	// Next (as Filter.After), which may be past the last ticket returned
	// (a page may even be empty).
	More bool
	Next ID
	// Examined is the number of tickets read.
	Examined int
}

// Store is what the titanic service needs of its durable ticket store, all
// of it: the service finds no method by type assertion. Implementations:
// BoltStore (one node) and replica.Node (a raft-replicated BoltStore);
// package store/storetest checks both against this contract. All methods
// are safe for concurrent use.
type Store interface {
	// Apply applies ops in order, atomically as a batch, and returns once
	// they are durable (fsync'd, or committed by a quorum). Concurrent
	// calls may share one commit (group commit). Per-op failures are in
	// the results, and the other ops still apply. The error is non-nil
	// only when the batch as a whole failed: then nothing was applied,
	// unless the store cannot know (replica.ErrUncertain: leadership lost
	// with the batch in flight), and the caller resubmits with the same
	// idempotency keys. After Close, Apply fails with an error wrapping
	// ErrClosed.
	Apply(ctx context.Context, ops []Op) ([]Result, error)
	// ApplyAsync hands ops over as one batch now and calls done once with
	// the batch's outcome, as Apply would report it, when it is durable
	// (or failed). It never blocks: this is how the service hands over
	// every mutation, and the store's own queue is the only one between
	// the service and the disk. Batches handed over in turn are applied in
	// that order, and their dones are called in that order, one at a time,
	// on one goroutine of the store's: done must be quick and must not
	// wait for the store (it may call ApplyAsync, never Apply). Done.Last
	// marks the last call of one commit, for work done once per commit.
	// The caller must not modify ops' byte slices until done is called.
	ApplyAsync(ops []Op, done func(Done))
	// Get returns the ticket with its body, or ErrNotFound.
	Get(ctx context.Context, id ID) (Ticket, error)
	// Reply returns the ticket (without body) and its reply frames, nil
	// when it has none yet, or ErrNotFound.
	Reply(ctx context.Context, id ID) (Ticket, [][]byte, error)
	// Unfinished calls fn for every pending or dispatched ticket, without
	// bodies, grouped by service (in service-name order) and in FIFO (Seq)
	// order within a service. fn may Apply; its error stops the walk and
	// is returned.
	Unfinished(ctx context.Context, fn func(Ticket) error) error
	// List returns tickets matching f in ID order, without bodies: up to
	// f.Limit of them, fewer only at the end. It reads in ListPage's
	// bounded read transactions, as many as it takes.
	List(ctx context.Context, f Filter) ([]Ticket, error)
	// ListPage is one bounded step of List: it examines at most f.MaxScan
	// tickets in one read transaction (a long one would hold bbolt's
	// remap and stall commits), and returns what matched with, when it
	// stopped on that bound, the cursor to continue from.
	ListPage(ctx context.Context, f Filter) (Page, error)
	// Expired returns up to limit finished (done or failed) tickets last
	// updated before cutoff, for retention: the service deletes them with
	// OpClose. The scan goes in ID order and may stop at the first ticket
	// created at or after cutoff: IDs minted by NewID are time-ordered.
	Expired(ctx context.Context, cutoff time.Time, limit int) ([]ID, error)
	// Counts returns how many tickets each service has in each state,
	// from counters the store keeps in the same transaction as the ops
	// (no ticket is read); services with none are absent. The service
	// reads them when it starts serving, then follows the ops it commits.
	Counts(ctx context.Context) (map[string]Counts, error)
	// Attempts returns a ticket's attempts that ended without a reply,
	// oldest first; Paused the services whose dispatch is paused
	// (OpPause), with when. Both read the local copy.
	Attempts(ctx context.Context, id ID) ([]Attempt, error)
	Paused(ctx context.Context) (map[string]time.Time, error)
	// Queued reads one window of a dispatch index (see QueueRead): the
	// dispatcher loads its queues a window at a time instead of holding
	// every unfinished ticket. It reads the local copy, in one read
	// transaction.
	Queued(ctx context.Context, r QueueRead) ([]QueuedTicket, error)
	// Usage reports the local data file's size and free space, for the
	// service's quota. It is cheap: the service calls it after every
	// commit.
	Usage() (Usage, error)
	// Snapshot writes a consistent copy of the whole store to w: a data
	// file that Open accepts (titanic.backup).
	Snapshot(ctx context.Context, w io.Writer) (int64, error)
	// Leadership returns the store's leadership when the store is
	// replicated and this node may not be the one that serves; nil for a
	// store that is the only copy of its data (BoltStore). See Leadership
	// for what the service does with it, and without it.
	Leadership() Leadership
	// Close releases what the store holds. Apply calls in flight finish or
	// fail; later ones fail with ErrClosed. (A replica.Node does not close
	// the BoltStore beneath it: that is its opener's.)
	Close() error
}

// Leadership is the optional part of a Store: a replicated store's answer
// to "is this node the one that serves, and is its copy up to date?". It
// is reached through Store.Leadership rather than by a type assertion, so
// that a Store wrapped by embedding (a timing wrapper, a test double)
// keeps it: a service that silently lost it would serve stale reads.
//
// Without it (Store.Leadership returns nil) the service treats its store
// as the only copy of the data, which cannot be behind: Activate reads the
// store at once, and lookups are answered from it without confirmation.
type Leadership interface {
	// Barrier returns once every entry committed before the call is
	// applied to this node's store; it fails on a node that is not the
	// leader. A node about to serve calls it before it reads the store to
	// rebuild its dispatch queues.
	Barrier(ctx context.Context) error
	// ConfirmLeader returns nil once this node was the leader at a moment
	// after the call began, with everything committed before then applied
	// to its store, so that a read begun before the call and made after it
	// returns sees every write acknowledged before the call. Otherwise it
	// returns an error (a deposed leader that has not noticed yet must not
	// call a ticket unknown). The service calls it from one goroutine,
	// batching the lookups that began before each call.
	ConfirmLeader(ctx context.Context) error
}
