package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Limits checked by Apply; an op beyond them fails with ErrInvalidOp
// before anything is written. Services and idempotency keys are bbolt keys
// (bbolt allows 32 KiB); these limits are far above any sane name and far
// below what would bloat the index pages.
const (
	MaxServiceLen = 1024
	MaxIdemKeyLen = 1024
)

// txn applies ops inside one bbolt write transaction. It is used only by
// the writer goroutine. Counter changes and the next Seq are kept in memory
// and written once, by finish, so a batch of many submits to one service
// costs one counter write, not one per op.
type txn struct {
	tx                                                   *bolt.Tx
	meta, tickets, bodies, replies, idem, fifo, counters *bolt.Bucket
	// ix are the dispatch indexes (index.go), ixDelayed the change of
	// each service's delayed entries in this transaction.
	ix        indexes
	ixDelayed map[string]int

	seq      uint64 // next Seq to assign
	seqDirty bool
	// applied is the highest log index applied through ApplyAt.
	applied      uint64
	appliedDirty bool
	// cluster is the cluster version (see BoltStore.ClusterVersion).
	cluster      uint64
	clusterDirty bool
	// newerKind: an op of a kind the first release does not read was
	// applied (see formatV2); format is the data file's format when the
	// transaction began.
	newerKind bool
	format    uint32
	// byRaise: the file is at formatV2 only because its cluster's
	// version was raised (byRaiseKey); raise: this transaction applies
	// such a raise.
	byRaise, raise bool
	// logged: the ops being applied come from a replicated log entry
	// (every replica applies them alike), not from a local Apply.
	logged bool
	deltas map[countKey]int
	// bufs are the writer's key buffer and value arena (arena.go).
	bufs *txnBufs
}

// appendFill is how full bbolt fills a page before it splits one, in the
// buckets whose keys mostly grow: tickets and bodies (by ID, time-ordered
// UUIDv7), the FIFO and the ready index (by Seq within a service). At
// bbolt's default (0.5) a page split at the right edge stays half empty
// for good, since no later key lands in it: 1,000,000 pending tickets of
// 100 bytes took 578 MiB of data file, 306 MiB at 0.95. Not 1: a record
// grows a little at its first dispatch (its attempt and worker), and the
// room spares most pages a split then.
const appendFill = 0.95

type countKey struct {
	service string
	state   State
}

// newTxn begins applying ops in tx. bufs are reset: the values of the
// previous transaction are no longer held.
func newTxn(tx *bolt.Tx, bufs *txnBufs) (*txn, error) {
	bufs.reset()
	t := &txn{
		tx:       tx,
		bufs:     bufs,
		meta:     tx.Bucket(metaBucket),
		tickets:  tx.Bucket(ticketsBucket),
		bodies:   tx.Bucket(bodiesBucket),
		replies:  tx.Bucket(repliesBucket),
		idem:     tx.Bucket(idemBucket),
		fifo:     tx.Bucket(fifoBucket),
		counters: tx.Bucket(countsBucket),
		deltas:   make(map[countKey]int),

		ixDelayed: make(map[string]int),
	}
	var err error
	if t.ix, err = openIndexes(tx); err != nil {
		return nil, err
	}
	if t.meta == nil || t.tickets == nil || t.bodies == nil || t.replies == nil ||
		t.idem == nil || t.fifo == nil || t.counters == nil {
		return nil, fmt.Errorf("%w: bucket missing", ErrCorrupt)
	}
	t.tickets.FillPercent, t.bodies.FillPercent, t.ix.ready.FillPercent = appendFill, appendFill, appendFill
	v := t.meta.Get(seqKey)
	if len(v) != 8 {
		return nil, fmt.Errorf("%w: sequence counter", ErrCorrupt)
	}
	t.seq = binary.BigEndian.Uint64(v)
	if v := t.meta.Get(appliedKey); len(v) == 8 {
		t.applied = binary.BigEndian.Uint64(v)
	}
	if v := t.meta.Get(clusterKey); len(v) == 8 {
		t.cluster = binary.BigEndian.Uint64(v)
	}
	if v := t.meta.Get(formatKey); len(v) == 4 {
		t.format = binary.BigEndian.Uint32(v)
	}
	t.byRaise = t.meta.Get(byRaiseKey) != nil
	return t, nil
}

// kindsUsed reports whether an op of a newer kind than the first
// release's was applied to the store (this transaction included): only
// then are the optional newer fields (an attempt's worker and start, a
// backoff's due time) worth keeping. A file at formatV2 because its
// cluster's version was raised (byRaise) has none applied yet.
func (t *txn) kindsUsed() bool {
	return t.newerKind || t.format >= formatV2 && !t.byRaise
}

// putTicket writes a ticket's record. A store the first release may still
// open (format 1, no op of a newer kind applied) keeps records that release
// reads: the extras a ticket may carry without any newer op (the start
// and worker of its last attempt) are left out; a ticket with a Lifecycle
// came with an op of a newer kind.
func (t *txn) putTicket(tk *Ticket) error {
	rec := tk
	if !t.kindsUsed() && (!tk.Started.IsZero() || tk.Worker != "") {
		c := *tk
		c.Started, c.Worker = time.Time{}, ""
		rec = &c
	}
	if err := t.tickets.Put(t.idKey(&tk.ID), appendTicket(t.bufs.value(ticketSizeHint(rec)), rec)); err != nil {
		return fmt.Errorf("put ticket: %w", err)
	}
	return nil
}

// opErr builds an op's own error, e.g. "dispatch 0190…: ticket not found".
func opErr(op *Op, err error, detail string) error {
	if detail == "" {
		return fmt.Errorf("%s %s: %w", op.Kind, op.ID, err)
	}
	return fmt.Errorf("%s %s: %w: %s", op.Kind, op.ID, err, detail)
}

// apply applies one op. The op's own failures go in Result.Err and leave
// the transaction untouched; the error return is for bbolt failures, which
// abort the whole transaction.
func (t *txn) apply(op *Op) (Result, error) {
	if op.Worker != "" && !t.kindsUsed() {
		// The worker's name alone must not move the file to formatV2:
		// that would end a rollback to the first release without any
		// feature of a newer kind being used. It is kept from then on.
		if bare := op.WithoutOptional(); bare.Version() == opsRecordV1 {
			op = &bare
		}
	}
	if op.Kind == OpRequeue && !op.Due.IsZero() && !t.logged && !t.kindsUsed() {
		// A backoff's due time alone must not end a rollback to
		// the first release (one failed attempt did): a store of
		// no cluster refuses it as a cluster at version 1 does, and
		// the service keeps the backoff in memory (found by a
		// reviewer of upgrades). A store that already moved to
		// formatV2 takes it.
		return Result{ID: op.ID, Err: &ClusterVersionError{Kind: op.Kind, Need: opsRecordV3, Have: opsRecordV1}}, nil
	}
	// An undispatch writes only what the first release reads (state,
	// attempts): applied locally, with no log that the first release
	// would meet, it must not end a rollback to it (a send that failed
	// at once did; found by a reviewer of the day's changes).
	if op.Kind != OpUndispatch || t.logged {
		t.newerKind = t.newerKind || op.Version() > opsRecordV1
	}
	switch op.Kind {
	case OpPause, OpResume:
		return t.pause(op)
	}
	if op.ID.IsZero() {
		return Result{Err: opErr(op, ErrInvalidOp, "zero ticket id")}, nil
	}
	switch op.Kind {
	case OpSubmit:
		return t.submit(op)
	case OpDispatch, OpRequeue, OpReply, OpFail, OpUndispatch:
		return t.transition(op)
	case OpClose:
		return t.close(op)
	case OpPurge:
		return t.purge(op)
	case OpAdopt:
		return t.adopt(op)
	case OpRetry:
		return t.retry(op)
	case OpCancel:
		return t.cancel(op)
	}
	return Result{ID: op.ID, Err: opErr(op, ErrInvalidOp, "unknown kind")}, nil
}

// load returns the ticket record for id, ok false when there is none.
func (t *txn) load(id ID) (Ticket, bool, error) {
	v := t.tickets.Get(id[:])
	if v == nil {
		return Ticket{}, false, nil
	}
	tk, err := decodeTicketIn(id, v, &t.bufs.names)
	return tk, err == nil, err
}

func resultOf(tk *Ticket) Result {
	return Result{ID: tk.ID, Seq: tk.Seq, State: tk.State, Attempts: tk.Attempts, Existed: true}
}

// checkSubmit reports what makes a new ticket's fields unacceptable.
func checkSubmit(op *Op) error {
	switch {
	case op.Service == "":
		return opErr(op, ErrInvalidOp, "empty service")
	case len(op.Service) > MaxServiceLen:
		return opErr(op, ErrInvalidOp, fmt.Sprintf("service name longer than %d bytes", MaxServiceLen))
	case len(op.IdemKey) > MaxIdemKeyLen:
		return opErr(op, ErrInvalidOp, fmt.Sprintf("idempotency key longer than %d bytes", MaxIdemKeyLen))
	case framesSize(op.Body) > bolt.MaxValueSize:
		return opErr(op, ErrInvalidOp, "body too large")
	}
	return nil
}

func (t *txn) submit(op *Op) (Result, error) {
	res := Result{ID: op.ID}
	if res.Err = checkSubmit(op); res.Err != nil {
		return res, nil
	}
	if op.IdemKey != "" {
		if v := t.idem.Get(t.keyOf(op.IdemKey)); v != nil {
			return t.duplicate(op, v), nil
		}
	}
	if t.tickets.Get(op.ID[:]) != nil {
		res.Err = opErr(op, ErrInvalidOp, "ticket id already used")
		return res, nil
	}
	tk, err := t.create(op)
	if err != nil {
		return res, err
	}
	if op.IdemKey != "" {
		if err := t.idem.Put(t.keyOf(op.IdemKey), t.bufs.keep(op.ID[:])); err != nil {
			return res, fmt.Errorf("put idempotency key: %w", err)
		}
	}
	res = resultOf(&tk)
	res.Existed = false
	return res, nil
}

// adoptedBucket holds the ID of every ticket a store adopted (OpAdopt), so
// that an adoption is taken once, also after the ticket was closed. Only a
// split brain's handover adopts: it grows by the size of those.
var adoptedBucket = []byte("adopted")

// adopt takes in a ticket minted by another history (see OpAdopt).
func (t *txn) adopt(op *Op) (Result, error) {
	if err := checkSubmit(op); err != nil {
		return Result{ID: op.ID, Err: err}, nil
	}
	if op.Attempts < 0 || op.Attempts > maxAttempts || op.Dispatched && op.Attempts == 0 {
		return Result{ID: op.ID, Err: opErr(op, ErrInvalidOp, fmt.Sprintf("adopted with %d attempts (dispatched %t)", op.Attempts, op.Dispatched))}, nil
	}
	if tk, ok, err := t.load(op.ID); err != nil {
		return Result{ID: op.ID, Err: opErr(op, err, "")}, nil
	} else if ok {
		res := resultOf(&tk)
		res.Duplicate = true
		return res, nil
	}
	once, err := t.tx.CreateBucketIfNotExists(adoptedBucket)
	if err != nil {
		return Result{ID: op.ID}, fmt.Errorf("create adopted bucket: %w", err)
	}
	if once.Get(op.ID[:]) != nil {
		// Adopted before and closed since: a handover redone (its
		// answer lost, the yielding node killed between two batches)
		// brought it back, pending, run again and holding its key again
		// (found by a reviewer of the pair).
		return Result{ID: op.ID, Duplicate: true}, nil
	}
	if err := once.Put(t.bufs.keep(op.ID[:]), []byte{1}); err != nil {
		return Result{ID: op.ID}, fmt.Errorf("put adopted: %w", err)
	}
	// A keyed resend that reached both sides of a split made two tickets
	// for one key: both stay, and the key names the older; the other
	// keeps no key (so that closing it leaves the key alone).
	adopted := *op
	var older *Ticket
	if op.IdemKey != "" {
		if v := t.idem.Get([]byte(op.IdemKey)); len(v) == len(ID{}) {
			if other, ok, err := t.load(ID(v)); err == nil && ok {
				if op.Time.Before(other.Created) || op.Time.Equal(other.Created) && bytes.Compare(op.ID[:], other.ID[:]) < 0 {
					older = &other // ours is older: the other gives up the key
				} else {
					adopted.IdemKey = ""
				}
			}
		}
	}
	tk, err := t.create(&adopted)
	if err != nil {
		return Result{ID: op.ID}, err
	}
	if older != nil {
		older.IdemKey = ""
		if err := t.putTicket(older); err != nil {
			return Result{ID: op.ID}, err
		}
	}
	if adopted.IdemKey != "" {
		if err := t.idem.Put(t.keyOf(adopted.IdemKey), t.bufs.keep(op.ID[:])); err != nil {
			return Result{ID: op.ID}, fmt.Errorf("put idempotency key: %w", err)
		}
	}
	res := resultOf(&tk)
	res.Existed = false
	return res, nil
}

// create writes a new pending ticket from a submit or adopt op.
func (t *txn) create(op *Op) (Ticket, error) {
	tk := Ticket{
		ID:      op.ID,
		Service: op.Service,
		State:   StatePending,
		Seq:     t.seq,
		IdemKey: op.IdemKey,
		Created: op.Time,
		Updated: op.Time,
	}
	tk.Lifecycle = op.Lifecycle
	if op.Kind == OpAdopt {
		// Its dispatches in the other history count here: it does not
		// expire (the deadline index holds only the never dispatched),
		// and one still running there is an attempt no worker of this
		// history holds (the service counts it as cut short).
		tk.Attempts = op.Attempts
		if op.Dispatched {
			tk.State = StateDispatched
		}
	}
	t.seq++
	t.seqDirty = true
	if err := t.putTicket(&tk); err != nil {
		return tk, err
	}
	if err := t.bodies.Put(t.idKey(&op.ID), appendFramesRecord(t.bufs.value(framesSize(op.Body)), op.Body)); err != nil {
		return tk, fmt.Errorf("put body: %w", err)
	}
	if err := t.enqueue(&tk); err != nil {
		return tk, err
	}
	if err := t.reindex(nil, &tk); err != nil {
		return tk, err
	}
	t.deltas[countKey{tk.Service, tk.State}]++
	return tk, nil
}

// duplicate answers a submit whose idempotency key is known. A resend
// (same service, same body frames) gets the original ticket, unchanged;
// anything else is a key conflict and creates nothing. The decision reads
// only the original's record and stored body, so every replica applying
// the same op to the same state reaches it too. Neither writes anything,
// so a replica of an older release (which took every known key for a
// duplicate) keeps the same state; only the answer differs.
func (t *txn) duplicate(op *Op, v []byte) Result {
	if len(v) != len(ID{}) {
		return Result{ID: op.ID, Err: opErr(op, ErrCorrupt, "idempotency entry")}
	}
	orig := ID(v)
	tk, ok, err := t.load(orig)
	if err != nil || !ok {
		return Result{ID: op.ID, Err: opErr(op, ErrCorrupt, "idempotency key names missing ticket "+orig.String())}
	}
	conflict := func(field string) Result {
		return Result{ID: orig, Err: &KeyConflictError{Key: op.IdemKey, Ticket: orig, Service: tk.Service, Field: field}}
	}
	if tk.Service != op.Service {
		return conflict("service")
	}
	// Decoded rather than compared as encoded bytes, so that a body
	// stored under an older record version still matches its resend.
	body, err := decodeFrames(t.bodies.Get(orig[:]))
	if err != nil {
		return Result{ID: op.ID, Err: opErr(op, err, "body of "+orig.String())}
	}
	if !slices.EqualFunc(body, op.Body, bytes.Equal) {
		return conflict("body")
	}
	res := resultOf(&tk)
	res.Duplicate = true
	return res
}

// existing loads the ticket op names; ok is false, with the op's failed
// result, when it cannot be read or does not exist.
func (t *txn) existing(op *Op) (Ticket, Result, bool) {
	tk, ok, err := t.load(op.ID)
	switch {
	case err != nil:
		return tk, Result{ID: op.ID, Err: opErr(op, err, "")}, false
	case !ok:
		return tk, Result{ID: op.ID, Err: opErr(op, ErrNotFound, "")}, false
	}
	return tk, Result{}, true
}

// transition moves an unfinished ticket to the op's state.
func (t *txn) transition(op *Op) (Result, error) {
	tk, res, ok := t.existing(op)
	switch {
	case !ok:
		return res, nil
	case tk.State.Final():
		res := resultOf(&tk)
		res.Err = opErr(op, ErrFinal, tk.State.String())
		return res, nil
	case op.Kind == OpUndispatch && tk.State != StateDispatched:
		res := resultOf(&tk)
		res.Err = opErr(op, ErrNotDispatched, tk.State.String())
		return res, nil
	}
	prev := tk
	old := tk.State
	switch op.Kind {
	case OpUndispatch:
		tk.State = StatePending
		tk.Attempts = max(tk.Attempts-1, 0)
		tk.Started, tk.Worker = time.Time{}, ""
	case OpDispatch:
		if tk.Attempts >= maxAttempts {
			res := resultOf(&tk)
			res.Err = opErr(op, ErrInvalidOp, "attempt counter full")
			return res, nil
		}
		tk.State = StateDispatched
		tk.Attempts++
		tk.Started, tk.Worker = op.Time, op.Worker
	case OpRequeue:
		tk.State = StatePending
		tk.Reason = op.Reason
		tk.Due = op.Due
	case OpReply:
		if framesSize(op.Reply) > bolt.MaxValueSize {
			res := resultOf(&tk)
			res.Err = opErr(op, ErrInvalidOp, "reply too large")
			return res, nil
		}
		tk.State = StateDone
		if err := t.replies.Put(t.idKey(&op.ID), appendFramesRecord(t.bufs.value(framesSize(op.Reply)), op.Reply)); err != nil {
			return Result{ID: op.ID}, fmt.Errorf("put reply: %w", err)
		}
	case OpFail:
		tk.State = StateFailed
		tk.Reason = op.Reason
	}
	if old == StateDispatched && (op.Kind == OpRequeue || op.Kind == OpFail) {
		if err := t.recordAttempt(&tk, op); err != nil {
			return Result{ID: op.ID}, err
		}
	}
	tk.Updated = op.Time
	if tk.State.Final() {
		if err := t.dequeue(&tk); err != nil {
			return Result{ID: op.ID}, err
		}
	}
	if err := t.putTicket(&tk); err != nil {
		return Result{ID: op.ID}, err
	}
	if err := t.reindex(&prev, &tk); err != nil {
		return Result{ID: op.ID}, err
	}
	if old != tk.State {
		t.deltas[countKey{tk.Service, old}]--
		t.deltas[countKey{tk.Service, tk.State}]++
	}
	res = resultOf(&tk)
	if res.Unqueued = unqueued(&prev, &tk); res.Unqueued != 0 {
		res.Service = tk.Service
	}
	return res, nil
}

// retry gives a failed ticket another round (see OpRetry).
func (t *txn) retry(op *Op) (Result, error) {
	tk, res, ok := t.existing(op)
	switch {
	case !ok:
		return res, nil
	case tk.State != StateFailed:
		res := resultOf(&tk)
		res.Err = opErr(op, ErrNotFailed, tk.State.String())
		return res, nil
	}
	// A new Seq puts it behind the work queued while it lay failed, as a
	// fresh submit would be; a delay or deadline it had is spent.
	prev := tk
	tk.State, tk.Attempts, tk.Reason, tk.Updated = StatePending, 0, "", op.Time
	tk.Due, tk.Deadline = time.Time{}, time.Time{}
	tk.Seq = t.seq
	t.seq++
	t.seqDirty = true
	if err := t.enqueue(&tk); err != nil {
		return Result{ID: op.ID}, err
	}
	if err := t.putTicket(&tk); err != nil {
		return Result{ID: op.ID}, err
	}
	if err := t.reindex(&prev, &tk); err != nil {
		return Result{ID: op.ID}, err
	}
	t.deltas[countKey{tk.Service, StateFailed}]--
	t.deltas[countKey{tk.Service, StatePending}]++
	res = resultOf(&tk)
	res.Service, res.Lifecycle = tk.Service, tk.Lifecycle
	return res, nil
}

// cancel ends an unfinished ticket as cancelled (see OpCancel).
func (t *txn) cancel(op *Op) (Result, error) {
	tk, res, ok := t.existing(op)
	switch {
	case !ok:
		return res, nil
	case tk.State.Final():
		res = resultOf(&tk)
		res.Err = opErr(op, ErrFinal, tk.State.String())
		return res, nil
	}
	old := tk.State
	prev := tk
	if old == StateDispatched {
		if err := t.recordAttempt(&tk, op); err != nil {
			return Result{ID: op.ID}, err
		}
	}
	tk.State, tk.Updated, tk.Reason = StateCancelled, op.Time, op.Reason
	if tk.Reason == "" {
		tk.Reason = "cancelled"
	}
	if err := t.dequeue(&tk); err != nil {
		return Result{ID: op.ID}, err
	}
	if err := t.putTicket(&tk); err != nil {
		return Result{ID: op.ID}, err
	}
	if err := t.reindex(&prev, &tk); err != nil {
		return Result{ID: op.ID}, err
	}
	t.deltas[countKey{tk.Service, old}]--
	t.deltas[countKey{tk.Service, StateCancelled}]++
	res = resultOf(&tk)
	res.Service = tk.Service
	res.Unqueued = unqueued(&prev, &tk)
	return res, nil
}

// pause records that a service's tickets are not dispatched (OpPause) or
// no longer (OpResume).
func (t *txn) pause(op *Op) (Result, error) {
	if op.Service == "" || len(op.Service) > MaxServiceLen {
		return Result{Err: opErr(op, ErrInvalidOp, "service name empty or too long")}, nil
	}
	b, err := t.tx.CreateBucketIfNotExists(pausedBucket)
	if err != nil {
		return Result{}, fmt.Errorf("create paused bucket: %w", err)
	}
	key := []byte(op.Service)
	res := Result{Existed: b.Get(key) != nil, Service: op.Service}
	if op.Kind == OpPause {
		err = b.Put(key, appendTime(nil, op.Time))
	} else {
		err = b.Delete(key)
	}
	if err != nil {
		return Result{}, fmt.Errorf("%s %s: %w", op.Kind, op.Service, err)
	}
	return res, nil
}

// purge closes a ticket only if it has failed (see OpPurge).
func (t *txn) purge(op *Op) (Result, error) {
	tk, ok, err := t.load(op.ID)
	switch {
	case err != nil:
		return Result{ID: op.ID, Err: opErr(op, err, "")}, nil
	case !ok:
		return Result{ID: op.ID}, nil
	case tk.State != StateFailed:
		res := resultOf(&tk)
		res.Err = opErr(op, ErrNotFailed, tk.State.String())
		return res, nil
	}
	return t.close(op)
}

// close deletes a ticket and everything that refers to it.
func (t *txn) close(op *Op) (Result, error) {
	tk, ok, err := t.load(op.ID)
	if err != nil {
		return Result{ID: op.ID, Err: opErr(op, err, "")}, nil
	}
	if !ok {
		return Result{ID: op.ID}, nil
	}
	for _, b := range []*bolt.Bucket{t.tickets, t.bodies, t.replies} {
		if err := b.Delete(t.idKey(&op.ID)); err != nil {
			return Result{ID: op.ID}, fmt.Errorf("delete ticket: %w", err)
		}
	}
	if err := t.forgetAttempts(op.ID); err != nil {
		return Result{ID: op.ID}, err
	}
	if !tk.State.Final() {
		if err := t.dequeue(&tk); err != nil {
			return Result{ID: op.ID}, err
		}
		if err := t.reindex(&tk, nil); err != nil {
			return Result{ID: op.ID}, err
		}
	}
	if tk.IdemKey != "" {
		key := []byte(tk.IdemKey)
		if v := t.idem.Get(key); len(v) == len(op.ID) && ID(v) == op.ID {
			if err := t.idem.Delete(key); err != nil {
				return Result{ID: op.ID}, fmt.Errorf("delete idempotency key: %w", err)
			}
		}
	}
	t.deltas[countKey{tk.Service, tk.State}]--
	return Result{ID: op.ID, Seq: tk.Seq, Attempts: tk.Attempts, Existed: true, Closed: tk.State, Service: tk.Service, Unqueued: unqueued(&tk, nil)}, nil
}

// reindex keeps the dispatch indexes (index.go) in step with a ticket's
// change from old (nil: new) to tk (nil: deleted).
func (t *txn) reindex(old, tk *Ticket) error {
	x := tk
	if x == nil {
		x = old
	}
	return t.ix.reindex(t.bufs, x.Service, t.bufs.keep(x.ID[:]), old, tk, t.ixDelayed)
}

// unqueued is the dispatch index a change from old to tk took the ticket
// out of, leaving it in neither (Result.Unqueued).
func unqueued(old, tk *Ticket) Queue {
	was, is := placeOf(old), placeOf(tk)
	switch {
	case is.ready.n != 0 || is.delayed.n != 0:
		return 0
	case was.ready.n != 0:
		return QueueReady
	case was.delayed.n != 0:
		return QueueDelayed
	}
	return 0
}

func seqKeyOf(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// idKey is id as a key in the transaction's key buffer (see keyOf). bbolt's
// Put and Delete hand their key to its logger, so a key sliced from a
// ticket or op on the stack would take it to the heap.
func (t *txn) idKey(id *ID) []byte {
	t.bufs.key = append(t.bufs.key[:0], id[:]...)
	return t.bufs.key
}

// keyOf is s as a key in the transaction's key buffer, valid until the
// next keyOf or key built there (bbolt copies the keys it keeps).
func (t *txn) keyOf(s string) []byte {
	t.bufs.key = append(t.bufs.key[:0], s...)
	return t.bufs.key
}

// enqueue adds a ticket to its service's FIFO index.
func (t *txn) enqueue(tk *Ticket) error {
	// Bucket finds a bucket opened earlier in the transaction without a
	// copy of the name, which CreateBucketIfNotExists always makes.
	b := t.fifo.Bucket(t.keyOf(tk.Service))
	if b == nil {
		var err error
		if b, err = t.fifo.CreateBucketIfNotExists(t.keyOf(tk.Service)); err != nil {
			return fmt.Errorf("create fifo bucket: %w", err)
		}
	}
	b.FillPercent = appendFill
	t.bufs.key = binary.BigEndian.AppendUint64(t.bufs.key[:0], tk.Seq)
	if err := b.Put(t.bufs.key, t.bufs.keep(tk.ID[:])); err != nil {
		return fmt.Errorf("put fifo entry: %w", err)
	}
	return nil
}

// dequeue removes a ticket from its service's FIFO index. A missing entry
// is left for Check to report rather than failing the batch.
func (t *txn) dequeue(tk *Ticket) error {
	b := t.fifo.Bucket(t.keyOf(tk.Service))
	if b == nil {
		return nil
	}
	t.bufs.key = binary.BigEndian.AppendUint64(t.bufs.key[:0], tk.Seq)
	if err := b.Delete(t.bufs.key); err != nil {
		return fmt.Errorf("delete fifo entry: %w", err)
	}
	return nil
}

func countsKeyOf(k countKey) []byte { return appendCountsKey(nil, k) }

func appendCountsKey(b []byte, k countKey) []byte {
	return append(append(b, byte(k.state)), k.service...)
}

// finish writes the next Seq and the per-service counters.
func (t *txn) finish() error {
	if t.appliedDirty {
		if err := t.meta.Put(appliedKey, seqKeyOf(t.applied)); err != nil {
			return fmt.Errorf("put applied index: %w", err)
		}
	}
	if t.clusterDirty {
		if err := t.meta.Put(clusterKey, seqKeyOf(t.cluster)); err != nil {
			return fmt.Errorf("put cluster version: %w", err)
		}
	}
	if t.newerKind || t.raise {
		// The first release must not run on this store any more (see
		// formatV2).
		if v := t.meta.Get(formatKey); len(v) != 4 || binary.BigEndian.Uint32(v) < formatV2 {
			if err := t.meta.Put(formatKey, binary.BigEndian.AppendUint32(nil, formatV2)); err != nil {
				return fmt.Errorf("put format version: %w", err)
			}
			if !t.newerKind {
				if err := t.meta.Put(byRaiseKey, []byte{1}); err != nil {
					return fmt.Errorf("put format mark: %w", err)
				}
			}
		}
		if t.newerKind && t.byRaise {
			if err := t.meta.Delete(byRaiseKey); err != nil {
				return fmt.Errorf("delete format mark: %w", err)
			}
		}
	}
	if t.seqDirty {
		if err := t.meta.Put(seqKey, binary.BigEndian.AppendUint64(t.bufs.value(8), t.seq)); err != nil {
			return fmt.Errorf("put sequence: %w", err)
		}
	}
	if err := t.ix.addCounts(t.ixDelayed); err != nil {
		return err
	}
	if err := markIndexed(t.tx); err != nil {
		return err
	}
	for k, d := range t.deltas {
		if d == 0 {
			continue
		}
		t.bufs.key = appendCountsKey(t.bufs.key[:0], k)
		key := t.bufs.key
		var n int64
		if v := t.counters.Get(key); len(v) == 8 {
			n = int64(binary.BigEndian.Uint64(v))
		}
		// A counter cannot go below zero unless it was already wrong;
		// Check reports that, and clamping keeps the store writable.
		n = max(n+int64(d), 0)
		var err error
		if n == 0 {
			err = t.counters.Delete(key)
		} else {
			err = t.counters.Put(key, binary.BigEndian.AppendUint64(t.bufs.value(8), uint64(n)))
		}
		if err != nil {
			return fmt.Errorf("put counter: %w", err)
		}
	}
	return nil
}
