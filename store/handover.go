package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// A split brain's handover, taken once. The node that yields hands its
// fork over in batches (ForkOps), each preceded by an OpHandover that
// names the handover and says where the batch is in it. The taker keeps,
// per handover, how many of its ops it took, in the same transaction as
// the ops (so in the replicated state: a failover of the taker keeps
// it), and leaves out what it took before. A handover is redone from the
// fork point when an answer is lost; the adopted bucket made adoptions
// idempotent, but the verdicts on tickets both sides held (OpFail,
// OpCancel, OpRetry) and the pauses were applied again over what the
// taker's clients did in between (an acknowledged retry undone).
//
//	handovers  handover ID → big-endian uint64: ops of it taken
var handoversBucket = []byte("handovers")

// HandoverMarkVersion is the cluster version an OpHandover needs: a node
// that yields marks its batches only when its cluster is at it (the taker
// then reads them); an older taker takes a handover without marks, and
// without this idempotence, as before.
const HandoverMarkVersion = opsRecordV6

// HandoverMark returns the OpHandover that goes before the count ops at
// position pos (the ops of the handover before them) of handover id, in
// the same call.
func HandoverMark(id ID, pos, count int) Op {
	return Op{Kind: OpHandover, ID: id, Body: [][]byte{
		binary.BigEndian.AppendUint64(nil, uint64(max(pos, 0))),
		binary.BigEndian.AppendUint64(nil, uint64(max(count, 0))),
	}}
}

// HandoverSpan reads an OpHandover's position and count (HandoverMark).
func (o *Op) HandoverSpan() (pos, count uint64, ok bool) {
	if o.Kind != OpHandover || len(o.Body) != 2 || len(o.Body[0]) != 8 || len(o.Body[1]) != 8 {
		return 0, 0, false
	}
	pos, count = binary.BigEndian.Uint64(o.Body[0]), binary.BigEndian.Uint64(o.Body[1])
	return pos, count, pos+count >= pos
}

// HandoverID names the handover of this store's fork past fork by node,
// the node that yields: the same on every redo of it (the node's replica
// is halted, or failed, so the fork does not change; a restart between
// two tries keeps it), and another once the fork holds more (the last
// change the solo journal holds is part of it: a fork that grew, the
// node having served it again, is a handover whose positions mean other
// ops). A later split's fork point is another.
func (s *BoltStore) HandoverID(ctx context.Context, node string, fork uint64) (ID, error) {
	var last []byte
	err := s.view(ctx, func(tx *bolt.Tx) error {
		if b := tx.Bucket(soloBucket); b != nil {
			if k, _ := b.Cursor().Last(); k != nil {
				last = append(last, k...)
			}
		}
		return nil
	})
	if err != nil {
		return ID{}, fmt.Errorf("handover id: %w", err)
	}
	h := sha256.New()
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(node))))
	h.Write([]byte(node))
	h.Write(binary.BigEndian.AppendUint64(nil, fork))
	h.Write(last)
	return ID(h.Sum(nil)[:len(ID{})]), nil
}

// handover applies an OpHandover followed by left ops of its call: it
// records how many ops of the handover are taken once these are, and
// returns how many of the count ops after it were taken before (skip:
// they are left out).
func (t *txn) handover(op *Op, left int) (res Result, skip int, err error) {
	pos, count, ok := op.HandoverSpan()
	if !ok || count > uint64(left) {
		return Result{ID: op.ID, Err: opErr(op, ErrInvalidOp, fmt.Sprintf("handover mark of %d ops with %d after it", count, left))}, 0, nil
	}
	t.newerKind = true
	b, err := t.tx.CreateBucketIfNotExists(handoversBucket)
	if err != nil {
		return Result{ID: op.ID}, 0, fmt.Errorf("create handovers bucket: %w", err)
	}
	var taken uint64
	if v := b.Get(op.ID[:]); len(v) == 8 {
		taken = binary.BigEndian.Uint64(v)
	}
	if taken > pos {
		skip = int(min(taken-pos, count))
	}
	if end := pos + count; end > taken {
		if err := b.Put(t.bufs.keep(op.ID[:]), binary.BigEndian.AppendUint64(nil, end)); err != nil {
			return Result{ID: op.ID}, 0, fmt.Errorf("put handover: %w", err)
		}
	}
	return Result{ID: op.ID, Existed: taken > 0, Duplicate: count > 0 && skip == int(count)}, skip, nil
}
