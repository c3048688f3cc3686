package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// A split brain's handover, taken once. The node that yields hands its
// fork over in batches (HandoverOps), each preceded by an OpHandover that
// names the handover and says which of its ops the batch holds. The taker
// keeps, per handover, how far it took it, in the same transaction as
// the ops (so in the replicated state: a failover of the taker keeps it),
// and leaves out what it took before. A handover is redone from the fork
// point when an answer is lost; the adopted bucket made adoptions
// idempotent, but the verdicts on tickets both sides held (OpFail,
// OpCancel, OpRetry) and the pauses were applied again over what the
// taker's clients did in between (an acknowledged retry undone).
//
// Two forms of mark:
//
//   - keyed (ops record version 7, HandoverKeyedMark): the handover is
//     named by the yielding node and its fork point alone (HandoverName),
//     and each op by the solo journal key of the last change of its
//     ticket or service and its place among that ticket's ops
//     (HandoverKey). HandoverOps hands tickets over in the order of
//     those keys, so the taker keeps the highest key it took and leaves
//     out every op at or below it. A fork that grew between two tries
//     (the yielding node served alone again) keeps its name: a ticket
//     unchanged since keeps its key and is left out, a ticket changed
//     since moves past every key taken and is taken with its new state,
//     and what ForkOps leaves out (a ticket created and closed) shifts
//     nothing.
//   - by position (version 6, HandoverMark, what builds of version 6
//     read): the handover is named by the node, its fork point and the
//     last change of its fork (HandoverID), and each batch by its place
//     in the sequence of ops. A fork that grew is another handover,
//     taken again whole, undoing what the taker's clients did since the
//     first try: written only while the pair's cluster version is below
//     7.
//
// Apart from the marks, the form says how a purge goes over: as one at
// version 8 (HandoverPurgeVersion), as a close below it.
//
// A handover keeps the form of its first try on every redo (HandoverForm):
// the yielding node's cluster version may be raised between two tries (it
// serves alone again, its leader the only member), and a redo under the
// other form's name is another handover, taken whole again.
//
// A handover is taken by a raft the yielding node is not in (it leaves its
// own only once it handed everything over, and joins after), so an entry
// committed by both nodes of the pair (Entry Shared) comes after every
// handover either could still redo: the bucket is emptied there.
//
//	handovers  handover ID → big-endian uint64: ops of it taken (by position)
//	                       | HandoverKey: the highest key taken (keyed)
var handoversBucket = []byte("handovers")

// HandoverMarkVersion is the cluster version a position mark needs: a
// node that yields marks its batches only when its cluster is at it (the
// taker then reads them); an older taker takes a handover without marks,
// and without this idempotence, as before.
const HandoverMarkVersion = opsRecordV6

// HandoverKeyVersion is the cluster version a keyed mark needs
// (HandoverKeyedMark); below it, a handover is marked by position.
const HandoverKeyVersion = opsRecordV7

// HandoverPurgeVersion is the cluster version at which a handover
// carries a purge its yielding node's client made as one (OpPurge: the
// taker closes the ticket only if it is still failed there, so a retry
// its own client made during the split stands). Below it, a purge goes
// over as the unconditional OpClose that a taker of an older build
// applies (PurgeAsClose): its Merge refuses an OpPurge, and with it the
// whole batch, at every try.
const HandoverPurgeVersion = opsRecordV8

// PurgeAsClose returns an OpPurge as an OpClose of the same ticket (see
// HandoverPurgeVersion), any other op as it is.
func (o Op) PurgeAsClose() Op {
	if o.Kind == OpPurge {
		o.Kind = OpClose
	}
	return o
}

// HandoverKey is where an op of a keyed handover comes from: the solo
// journal key (big-endian index ‖ op position) of the last change of its
// ticket or service, then its place among that ticket's ops (big-endian
// uint32). Keys compare as bytes.
type HandoverKey [handoverKeyLen]byte

const handoverKeyLen = 12 + 4

func handoverKey(journal []byte, ord int) HandoverKey {
	var k HandoverKey
	copy(k[:12], journal)
	binary.BigEndian.PutUint32(k[12:], uint32(ord))
	return k
}

// HandoverMark returns the position mark that goes before the count ops
// at position pos (the ops of the handover before them) of handover id
// (HandoverID), in the same call.
func HandoverMark(id ID, pos, count int) Op {
	return Op{Kind: OpHandover, ID: id, Body: [][]byte{
		binary.BigEndian.AppendUint64(nil, uint64(max(pos, 0))),
		binary.BigEndian.AppendUint64(nil, uint64(max(count, 0))),
	}}
}

// HandoverSpan reads a position mark's position and count (HandoverMark).
func (o *Op) HandoverSpan() (pos, count uint64, ok bool) {
	if o.Kind != OpHandover || len(o.Body) != 2 || len(o.Body[0]) != 8 || len(o.Body[1]) != 8 {
		return 0, 0, false
	}
	pos, count = binary.BigEndian.Uint64(o.Body[0]), binary.BigEndian.Uint64(o.Body[1])
	return pos, count, pos+count >= pos
}

// HandoverKeyedMark returns the keyed mark that goes before the ops of
// handover id (HandoverName) whose keys are keys (HandoverOps), one each,
// in the same call. Its body is one frame, the keys end to end: a
// position mark's is two.
func HandoverKeyedMark(id ID, keys []HandoverKey) Op {
	all := make([]byte, 0, len(keys)*handoverKeyLen)
	for _, k := range keys {
		all = append(all, k[:]...)
	}
	return Op{Kind: OpHandover, ID: id, Body: [][]byte{all}}
}

// HandoverKeys reads a keyed mark (HandoverKeyedMark): its keys end to
// end, and how many there are.
func (o *Op) HandoverKeys() (keys []byte, count int, ok bool) {
	if o.Kind != OpHandover || len(o.Body) != 1 || len(o.Body[0]) == 0 || len(o.Body[0])%handoverKeyLen != 0 {
		return nil, 0, false
	}
	return o.Body[0], len(o.Body[0]) / handoverKeyLen, true
}

// HandoverName names the keyed handover of node's fork past fork: the
// same on every try, however the fork grew in between (its ops carry
// what changed: HandoverKey). A later split's fork point is another.
func HandoverName(node string, fork uint64) ID {
	h := sha256.New()
	h.Write([]byte("titanic keyed handover\x00"))
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(node))))
	h.Write([]byte(node))
	h.Write(binary.BigEndian.AppendUint64(nil, fork))
	return ID(h.Sum(nil)[:len(ID{})])
}

// HandoverID names the handover by position of this store's fork past
// fork by node, the node that yields: the same on every redo of it while
// the fork does not change (the node's replica is halted, or failed; a
// restart between two tries keeps it), and another once the fork holds
// more (the last change the solo journal holds is part of it: positions
// in a fork that grew mean other ops). The sequence the positions count
// is HandoverOps', which orders tickets by their last change since this
// build: the name says so, so that a redo by a build that ordered them
// otherwise (by their first) is another handover, taken whole, not one
// whose positions fall on other ops. So does a fork that holds ops taken
// from the peer's handover, which HandoverOps leaves out since this build
// (soloTakenBucket) where an older build handed them back; a fork
// without any is the same sequence for both, and keeps its name.
func (s *BoltStore) HandoverID(ctx context.Context, node string, fork uint64) (ID, error) {
	var last []byte
	tookIn := false
	err := s.view(ctx, func(tx *bolt.Tx) error {
		if b := tx.Bucket(soloBucket); b != nil {
			if k, _ := b.Cursor().Last(); k != nil {
				last = append(last, k...)
			}
			if tb := tx.Bucket(soloTakenBucket); tb != nil {
				c := tb.Cursor()
				for k, v := c.Seek(journalKey(fork+1, 0)); k != nil && !tookIn; k, v = c.Next() {
					tookIn = bytes.Equal(b.Get(k), v)
				}
			}
		}
		return nil
	})
	if err != nil {
		return ID{}, fmt.Errorf("handover id: %w", err)
	}
	h := sha256.New()
	if tookIn {
		h.Write([]byte("titanic handover by position, ordered by last change, taken ops left out\x00"))
	} else {
		h.Write([]byte("titanic handover by position, ordered by last change\x00"))
	}
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(node))))
	h.Write([]byte(node))
	h.Write(binary.BigEndian.AppendUint64(nil, fork))
	h.Write(last)
	return ID(h.Sum(nil)[:len(ID{})]), nil
}

// handover applies an OpHandover followed by left ops of its call: it
// records how far the handover is taken once these are, and returns how
// many of the ops after it were taken before (skip: they are left out).
func (t *txn) handover(op *Op, left int) (res Result, skip int, err error) {
	keys, _, keyed := op.HandoverKeys()
	pos, span, _ := op.HandoverSpan()
	count, ok := op.handoverCovers(left)
	if !ok {
		// Covering nothing: its ops are applied as an unmarked
		// handover's (a redo applies them again), none is left out.
		return Result{ID: op.ID, Err: opErr(op, ErrInvalidOp, fmt.Sprintf("handover mark (%d body frames) that does not fit the %d ops after it", len(op.Body), left))}, 0, nil
	}
	t.newerKind = true
	b, err := t.tx.CreateBucketIfNotExists(handoversBucket)
	if err != nil {
		return Result{ID: op.ID}, 0, fmt.Errorf("create handovers bucket: %w", err)
	}
	v := b.Get(op.ID[:])
	var taken, end []byte
	if keyed {
		if len(v) == handoverKeyLen {
			taken = v
		}
		// The keys rise: those taken before are the first ones.
		for skip < count && bytes.Compare(keys[skip*handoverKeyLen:(skip+1)*handoverKeyLen], taken) <= 0 {
			skip++
		}
		if last := keys[len(keys)-handoverKeyLen:]; bytes.Compare(last, taken) > 0 {
			end = last
		}
	} else {
		var n uint64
		if len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
			taken = v
		}
		if n > pos {
			skip = int(min(n-pos, span))
		}
		if pos+span > n {
			end = binary.BigEndian.AppendUint64(nil, pos+span)
		}
	}
	if end != nil {
		if err := b.Put(t.bufs.keep(op.ID[:]), t.bufs.keep(end)); err != nil {
			return Result{ID: op.ID}, 0, fmt.Errorf("put handover: %w", err)
		}
	}
	return Result{ID: op.ID, Existed: taken != nil, Duplicate: count > 0 && skip == count}, skip, nil
}

// handoverCovers returns how many of the left ops after mark o (an
// OpHandover) it covers, and whether it is a mark that fits them: one
// that does not covers none (see handover).
func (o *Op) handoverCovers(left int) (int, bool) {
	if keys, count, keyed := o.HandoverKeys(); keyed && count <= left && increasing(keys) {
		return count, true
	}
	if _, span, ok := o.HandoverSpan(); ok && span <= uint64(left) {
		return int(span), true
	}
	return 0, false
}

// increasing reports whether keys (HandoverKeys) rise strictly: a mark
// whose do not cannot say by its highest key what it took.
func increasing(keys []byte) bool {
	for i := handoverKeyLen; i < len(keys); i += handoverKeyLen {
		if bytes.Compare(keys[i-handoverKeyLen:i], keys[i:i+handoverKeyLen]) >= 0 {
			return false
		}
	}
	return true
}

// forgetHandovers empties the handovers bucket before an entry committed
// by both nodes of the pair: every handover taken before it is complete
// for good. Its yielding node hands over from a raft of its own, leaves
// it only once all is taken (Resync, its fork set aside), and joins
// after; until it has, the taker's raft commits nothing that the pair
// shares. A redo of one of them would need a fork that no node holds.
// So are the forms of the handovers this node made (HandoverForm).
func (t *txn) forgetHandovers() error {
	for _, name := range [][]byte{handoversBucket, formsBucket} {
		if t.tx.Bucket(name) == nil {
			continue
		}
		if err := t.tx.DeleteBucket(name); err != nil {
			return fmt.Errorf("forget handovers: %w", err)
		}
	}
	return nil
}

// formsBucket holds, on a node that yields, the form of each handover it
// made (HandoverForm), written outside the log: the node's raft is
// halted for the handover.
//
//	handover-forms  big-endian fork point ‖ node → big-endian uint64: the
//	                cluster version its first try marked it by
var formsBucket = []byte("handover-forms")

// HandoverForm returns the cluster version by which node's handover of
// this store's fork past fork is marked (HandoverMarkVersion and
// HandoverKeyVersion choose the form, HandoverPurgeVersion how a purge
// goes over): the one its first try recorded,
// else now, recorded (and synced, as a commit is) before it returns, so
// that a try whose batches reach the taker has its form on record, a
// restart of the node included. It is forgotten at the next entry both
// nodes of the pair commit (forgetHandovers), and with the store when the
// node resyncs after its handover.
func (s *BoltStore) HandoverForm(ctx context.Context, node string, fork uint64, now int) (int, error) {
	key := append(binary.BigEndian.AppendUint64(nil, fork), node...)
	form := 0
	recorded := func(tx *bolt.Tx) {
		if b := tx.Bucket(formsBucket); b != nil {
			if v := b.Get(key); len(v) == 8 {
				form = int(min(max(binary.BigEndian.Uint64(v), 1), 1<<20))
			}
		}
	}
	// Read first: every round of a split tries again, and a record
	// found needs no commit.
	if err := s.view(ctx, func(tx *bolt.Tx) error { recorded(tx); return nil }); err != nil {
		return 0, fmt.Errorf("handover form: %w", err)
	}
	if form > 0 {
		return form, nil
	}
	err := s.updateAside(ctx, func(tx *bolt.Tx) error {
		if recorded(tx); form > 0 {
			return nil
		}
		b, err := tx.CreateBucketIfNotExists(formsBucket)
		if err != nil {
			return err
		}
		form = max(now, 1)
		return b.Put(key, binary.BigEndian.AppendUint64(nil, uint64(form)))
	})
	if err != nil {
		return 0, fmt.Errorf("handover form: %w", err)
	}
	return form, nil
}
