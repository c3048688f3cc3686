package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The solo journal: which tickets each entry changed, for the entries a
// node of a pair applied while its raft had it as the only voter (Entry
// Solo). Those are the only entries its peer may never have seen: when
// the two meet again after a split brain, the node that yields reads the
// journal past the fork point (History.ForkPoint) to hand its work over
// (ForkOps). An entry committed by both nodes (Entry Shared: a command of
// a leader of two, applied after a configuration of two) is on both, and
// so is everything before it: the journal is pruned there. The journal is part of the store, so it
// survives log compaction and travels in snapshots.
//
//	solo  big-endian index ‖ big-endian op position → kind byte ‖ ID
//	      (a pause or resume: kind byte ‖ service name)
//	soloTaken  the same key → the same record: it is of an op taken
//	           from the peer's handover (covered by its mark), not this
//	           node's own change
//
// The peer's work a node took in is the peer's: the peer still holds it
// while it keeps its fork (it drops its fork only after a complete
// handover, and a later split has a later fork point), so it is not
// handed back. Handed back, it undid what the peer's clients did since a
// try cut short (a ticket they closed adopted anew, a retry failed
// again). soloTaken is a bucket of its own so that the solo records keep
// the form every build reads: a build that does not know it hands those
// ops back as before. It holds the record, not just the key, because such
// a build neither prunes nor resets it: a mark left behind counts only
// for the record it was written with (ticket IDs do not recur), never for
// another written at its key once raft indexes count from 1 again.
var (
	soloBucket      = []byte("solo")
	soloTakenBucket = []byte("soloTaken")
)

func journalKey(index uint64, pos int) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, index), uint32(pos))
}

// journal notes the ops of a solo entry that changed a ticket, and
// which of them a handover's mark covers (soloTakenBucket). An unmarked
// handover's (an older yielder's) are noted as this node's own, as they
// were before marks.
func (t *txn) journal(index uint64, ops []Op, res []Result) error {
	b, err := t.tx.CreateBucketIfNotExists(soloBucket)
	if err != nil {
		return fmt.Errorf("create solo journal: %w", err)
	}
	var taken *bolt.Bucket
	covered := 0 // ops still ahead that a handover's mark covers
	for i := range ops {
		fromPeer := covered > 0
		if fromPeer {
			covered--
		}
		if ops[i].Kind == OpHandover {
			// A mark applyOps took as one (no error): it covers the
			// same ops there and here.
			if res[i].Err == nil {
				covered, _ = ops[i].handoverCovers(len(ops) - i - 1)
			}
			continue
		}
		if res[i].Err != nil || res[i].Duplicate || (ops[i].Kind == OpClose || ops[i].Kind == OpPurge) && !res[i].Existed {
			continue
		}
		rec := append([]byte{byte(ops[i].Kind)}, ops[i].ID[:]...)
		if ops[i].Kind == OpPause || ops[i].Kind == OpResume {
			// By service: a pause made on the side that yields is
			// handed over too (it was journaled with the zero ticket,
			// and handed over as a close of it, which the peer refused).
			rec = append([]byte{byte(ops[i].Kind)}, ops[i].Service...)
		}
		if err := b.Put(journalKey(index, i), rec); err != nil {
			return fmt.Errorf("put solo journal: %w", err)
		}
		if fromPeer {
			if taken == nil {
				if taken, err = t.tx.CreateBucketIfNotExists(soloTakenBucket); err != nil {
					return fmt.Errorf("create solo journal: %w", err)
				}
			}
			if err := taken.Put(journalKey(index, i), rec); err != nil {
				return fmt.Errorf("put solo journal: %w", err)
			}
		}
	}
	return nil
}

// pruneJournal forgets the journal before index: shared by both nodes.
func (t *txn) pruneJournal(index uint64) error {
	for _, name := range [][]byte{soloBucket, soloTakenBucket} {
		b := t.tx.Bucket(name)
		if b == nil {
			continue
		}
		c := b.Cursor()
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) < index; k, _ = c.First() {
			if err := c.Delete(); err != nil {
				return fmt.Errorf("prune solo journal: %w", err)
			}
		}
	}
	return nil
}

// ForkOps returns, in batches of at most about maxBytes, the ops that
// carry over to the peer the work this store did after the fork point:
// the tickets it took in alone (OpAdopt with their bodies and their
// dispatches here, then OpReply or OpFail when they finished), the answers it recorded for older tickets
// (OpReply, OpFail, OpCancel), the failed tickets it gave another round (OpRetry),
// the older tickets its clients closed (OpClose, or OpPurge when the last
// close was a purge: the peer closes the ticket only if still failed
// there; Op.PurgeAsClose for a peer that takes no purge), and the services its
// operators paused or resumed (OpPause, OpResume: as they are now).
// Tickets created and closed after the fork, and attempts that did not
// finish, carry nothing: the peer redelivers what is unfinished. But a
// ticket created and closed under different raft terms is closed there
// (OpClose): a try of the handover, cut short, may have come in between
// and handed it over (a try halts the raft, and the node appends again
// only in a later term), and the peer would run it again. A ticket
// adopted after the fork (a handover the peer made before, cut short)
// came from the peer, which may still hold it: it is handed back as an
// older ticket is (OpClose when closed here; OpAdopt, then OpRetry when
// retried here, then its answer), not as one created here, whose
// adoption and close cancelled out, and whose retry was left out. Only
// once this store changed it itself, though: a ticket or service whose
// last change it took from the peer's handover is the peer's still, and
// is left out, and so is a retry it took (see soloTakenBucket). fn may
// keep the batch.
func (s *BoltStore) ForkOps(ctx context.Context, fork uint64, maxBytes int, fn func([]Op) error) error {
	return s.HandoverOps(ctx, fork, maxBytes, func(ops []Op, _ []HandoverKey) error { return fn(ops) })
}

// HandoverOps is ForkOps with the key of each op (HandoverKey: the
// journal key of the last change of its ticket or service, and its place
// among the ticket's ops), the tickets and services in the order of
// those keys: the ops of a handover rise by key, so that a taker that
// keeps the highest key it took knows what it took, also once the fork
// grew (a ticket changed since moves past it, with what it is now).
func (s *BoltStore) HandoverOps(ctx context.Context, fork uint64, maxBytes int, fn func(ops []Op, keys []HandoverKey) error) error {
	type change struct {
		id      ID
		created bool   // submitted here after the fork: the peer never held it
		at      uint64 // the index it was submitted at
		adopted bool   // adopted here after the fork: the peer may hold it
		closed  bool
		purged  bool     // its last close was a purge (OpPurge)
		retried bool     // by this node (not taken from the peer)
		taken   bool     // its last change was taken from the peer's handover
		paused  bool     // a service paused or resumed, not a ticket
		service string   // the service paused or resumed
		last    [12]byte // the journal key of its last change
	}
	var (
		seen   = map[string]*change{} // by "t" ‖ ticket, "s" ‖ service
		units  []*change
		paused bool
	)
	// unit notes the change at journal key k of a ticket or service.
	unit := func(key string, k []byte, first change) *change {
		ch := seen[key]
		if ch == nil {
			ch = &first
			seen[key] = ch
			units = append(units, ch)
		}
		copy(ch.last[:], k)
		return ch
	}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(soloBucket)
		if b == nil {
			return nil
		}
		tb := tx.Bucket(soloTakenBucket)
		c := b.Cursor()
		for k, v := c.Seek(journalKey(fork+1, 0)); k != nil; k, v = c.Next() {
			taken := tb != nil && bytes.Equal(tb.Get(k), v)
			if len(v) > 0 && (OpKind(v[0]) == OpPause || OpKind(v[0]) == OpResume) {
				// Its service, or (an older build's record) the zero
				// ticket: nothing to hand over then.
				if svc := string(v[1:]); len(v) != 1+len(ID{}) || !ID(v[1:]).IsZero() {
					unit("s"+svc, k, change{paused: true, service: svc}).taken = taken
					paused = true
				}
				continue
			}
			if len(v) != 1+len(ID{}) {
				return fmt.Errorf("%w: solo journal record", ErrCorrupt)
			}
			id := ID(v[1:])
			ch := unit("t"+string(id[:]), k, change{id: id})
			ch.taken = taken
			switch OpKind(v[0]) {
			case OpSubmit:
				ch.created, ch.closed, ch.purged = true, false, false
				ch.at = binary.BigEndian.Uint64(k)
			case OpAdopt:
				ch.adopted, ch.closed, ch.purged = true, false, false
			case OpClose, OpPurge:
				ch.closed, ch.purged = true, OpKind(v[0]) == OpPurge
			case OpRetry:
				ch.retried = ch.retried || !taken
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(units, func(a, b *change) int { return bytes.Compare(a.last[:], b.last[:]) })
	// The services paused or resumed alone, as they are now here.
	var state map[string]time.Time
	if paused {
		var err error
		if state, err = s.Paused(ctx); err != nil {
			return fmt.Errorf("fork ops: %w", err)
		}
	}
	var (
		batch []Op
		keys  []HandoverKey
		size  int
		hist  *History // read for the first ticket created here
	)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := fn(batch, keys)
		batch, keys, size = nil, nil, 0
		return err
	}
	for _, ch := range units {
		if ch.taken {
			// Its last change is the peer's, as the peer handed it
			// over: the peer holds it (see soloTakenBucket).
			continue
		}
		var ops []Op
		if ch.paused {
			op := Op{Kind: OpResume, Service: ch.service}
			if at, ok := state[ch.service]; ok {
				op = Op{Kind: OpPause, Service: ch.service, Time: at}
			}
			ops = append(ops, op)
		} else {
			closeCreated := false
			if ch.created {
				if hist == nil {
					h, err := s.History(ctx)
					if err != nil {
						return fmt.Errorf("fork ops: %w", err)
					}
					hist = &h
				}
				// Unknown terms (0) differ too: closed there, to be safe.
				t := hist.TermAt(ch.at)
				closeCreated = t == 0 || t != hist.TermAt(binary.BigEndian.Uint64(ch.last[:]))
			}
			if ops, err = s.ticketForkOps(ctx, ch.id, ch.created, ch.adopted, ch.retried, ch.purged, closeCreated); err != nil {
				return err
			}
		}
		// A ticket's ops go in one batch when they fit in one; one that
		// does not fit in what is left of the batch starts the next. A
		// ticket whose ops alone are larger than a batch (a large body
		// and a large reply) goes over one op per batch: together they
		// were sent as one message larger than the peer takes
		// (limits.max_message_size), refused at every try, and the
		// pair never became whole. In between, the peer holds the
		// ticket pending and may run it once more (at least once).
		opSize := func(op *Op) int {
			return 64 + len(op.Service) + len(op.IdemKey) + len(op.Reason) + framesSize(op.Body) + framesSize(op.Reply)
		}
		tsize := 0
		for i := range ops {
			tsize += opSize(&ops[i])
		}
		if len(batch) > 0 && size+tsize > maxBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		for i := range ops {
			batch = append(batch, ops[i])
			keys = append(keys, handoverKey(ch.last[:], i))
			size += opSize(&ops[i])
			if tsize > maxBytes {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if size >= maxBytes {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// ticketForkOps returns the ops that hand ticket id over (see ForkOps):
// created, adopted, retried and purged say what the solo journal holds of
// it; closeCreated, that a created ticket that is gone is closed there.
func (s *BoltStore) ticketForkOps(ctx context.Context, id ID, created, adopted, retried, purged, closeCreated bool) ([]Op, error) {
	var ops []Op
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(ticketsBucket).Get(id[:])
		if v == nil {
			if !created || closeCreated {
				// A purge as one: the peer closes the ticket only if
				// it is still failed there. Its client may have
				// retried it meanwhile (acknowledged), and a close
				// undid that retry.
				kind := OpClose
				if purged {
					kind = OpPurge
				}
				ops = append(ops, Op{Kind: kind, ID: id})
			}
			return nil
		}
		tk, err := decodeTicket(id, v)
		if err != nil {
			return err
		}
		if created || adopted {
			// An adopted ticket too: the peer may have dropped it
			// with a fork of its own since (it then takes it anew),
			// or hold it (a duplicate there, left alone).
			body, err := decodeFrames(tx.Bucket(bodiesBucket).Get(id[:]))
			if err != nil {
				return err
			}
			// With its dispatches here: a ticket dispatched once
			// does not expire, and its attempts are spent.
			ops = append(ops, Op{Kind: OpAdopt, ID: id, Time: tk.Created, Service: tk.Service, Body: body, IdemKey: tk.IdemKey, Lifecycle: tk.Lifecycle,
				Attempts: tk.Attempts, Dispatched: tk.State == StateDispatched})
		}
		if !created && retried && tk.State != StateFailed {
			// The peer may still hold it failed; the answer below
			// (or the redelivery of what is unfinished) needs it
			// pending there first. A ticket the peer already has
			// pending refuses the retry (ErrNotFailed), harmlessly.
			ops = append(ops, Op{Kind: OpRetry, ID: id, Time: tk.Updated})
		}
		switch tk.State {
		case StateDone:
			reply, err := decodeFrames(tx.Bucket(repliesBucket).Get(id[:]))
			if err != nil {
				return err
			}
			ops = append(ops, Op{Kind: OpReply, ID: id, Time: tk.Updated, Reply: reply})
		case StateFailed:
			ops = append(ops, Op{Kind: OpFail, ID: id, Time: tk.Updated, Reason: tk.Reason})
		case StateCancelled:
			ops = append(ops, Op{Kind: OpCancel, ID: id, Time: tk.Updated, Reason: tk.Reason})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fork ops of %s: %w", id, err)
	}
	return ops, nil
}
