package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The attempt history: one record per attempt that ended without a reply
// (requeued after a worker failure, lease loss or timeout; failed; or
// cancelled while running), for the dead letters' "what happened". The
// attempt that was answered needs none: the ticket's Started, Worker and
// Updated describe it. Keeping only the failures costs nothing on the
// path of a job that succeeds.
//
//	attempts  ID ‖ big-endian start (Unix ns, offset) → attemptRecordV1
//	paused    service → time paused
var (
	attemptsBucket = []byte("attempts")
	pausedBucket   = []byte("paused")
)

const attemptRecordV1 = 1

// Attempt is one dispatch of a ticket that ended without a reply.
type Attempt struct {
	Start, End time.Time
	Worker     string
	// Outcome is what became of the ticket: pending (to be tried again),
	// failed or cancelled.
	Outcome State
	Error   string
}

func attemptKey(id ID, start time.Time) []byte {
	k := append(id[:len(id):len(id)], make([]byte, 8)...)
	ns := start.UnixNano()
	binary.BigEndian.PutUint64(k[len(id):], uint64(ns)^(1<<63)) // sorts negative times first
	return k
}

// recordAttempt notes the end of tk's current attempt by op (tk is still
// in its dispatched state).
func (t *txn) recordAttempt(tk *Ticket, op *Op) error {
	b, err := t.tx.CreateBucketIfNotExists(attemptsBucket)
	if err != nil {
		return fmt.Errorf("create attempts bucket: %w", err)
	}
	outcome := StatePending
	switch op.Kind {
	case OpFail:
		outcome = StateFailed
	case OpCancel:
		outcome = StateCancelled
	}
	start := tk.Started
	if start.IsZero() {
		start = tk.Updated // dispatched by a build that kept no start
	}
	v := []byte{attemptRecordV1, byte(outcome)}
	v = appendTime(v, op.Time)
	v = appendString(v, tk.Worker)
	v = appendString(v, op.Reason[:min(len(op.Reason), 4096)])
	if err := b.Put(attemptKey(tk.ID, start), v); err != nil {
		return fmt.Errorf("put attempt: %w", err)
	}
	return nil
}

// forgetAttempts deletes a closed ticket's history.
func (t *txn) forgetAttempts(id ID) error {
	b := t.tx.Bucket(attemptsBucket)
	if b == nil {
		return nil
	}
	c := b.Cursor()
	for k, _ := c.Seek(id[:]); k != nil && bytes.HasPrefix(k, id[:]); k, _ = c.Seek(id[:]) {
		if err := c.Delete(); err != nil {
			return fmt.Errorf("delete attempt: %w", err)
		}
	}
	return nil
}

// Attempts returns the attempts of a ticket that ended without a reply,
// oldest first (none for an unknown ticket).
func (s *BoltStore) Attempts(ctx context.Context, id ID) ([]Attempt, error) {
	var out []Attempt
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(attemptsBucket)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek(id[:]); k != nil && bytes.HasPrefix(k, id[:]); k, v = c.Next() {
			if len(k) != len(id)+8 {
				return fmt.Errorf("%w: attempt key", ErrCorrupt)
			}
			d := decoder{b: v}
			if ver := d.byte(); ver != attemptRecordV1 && d.err == nil {
				return fmt.Errorf("%w: attempt record version %d", ErrCorrupt, ver)
			}
			a := Attempt{Outcome: State(d.byte())}
			a.End = d.time()
			a.Worker = d.string()
			a.Error = d.string()
			if d.err != nil || len(d.b) != 0 {
				return fmt.Errorf("%w: attempt record of %s", ErrCorrupt, id)
			}
			ns := int64(binary.BigEndian.Uint64(k[len(id):]) ^ (1 << 63))
			if ns != math.MinInt64 {
				a.Start = time.Unix(0, ns).UTC()
			}
			out = append(out, a)
		}
		return nil
	})
	return out, err
}

// Paused returns the paused services and when each was paused.
func (s *BoltStore) Paused(ctx context.Context) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(pausedBucket)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			d := decoder{b: v}
			at := d.time()
			if d.err != nil {
				return fmt.Errorf("%w: paused record of %q", ErrCorrupt, k)
			}
			out[string(k)] = at
			return nil
		})
	})
	return out, err
}
