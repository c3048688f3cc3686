package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// The epoch history of a replica store: for every raft term in which the
// store applied log entries, the index of the first entry of that term
// (Kafka's leader-epoch cache). Two histories that agree on (index, term)
// agree on everything before it (raft's log matching), so comparing two
// histories finds the last entry two stores share at any depth of their
// logs, without keeping the entries. It costs one record per term.
//
//	epochs  big-endian first index → uvarint term [‖ uvarint last index]
//
// The last index of an epoch is written when the next one starts: entries
// the store never sees (raft's no-op at the start of each term) lie
// between two epochs, so the end of one is not the start of the next
// minus one.
//
// The bucket is created on the first replicated apply. Stores written by
// the first release kept the terms of their last 16,384 entries under
// "term/INDEX" in the meta bucket instead; the first apply converts them.
var (
	epochsBucket  = []byte("epochs")
	oldTermPrefix = []byte("term/")
)

// Epoch is the start of one term in a store's applied history.
type Epoch struct {
	Term  uint64
	Start uint64 // index of the first entry applied in Term
	// End is the index of the last entry applied in Term; 0 for the
	// latest epoch (it ends at History.Applied) and in stores written
	// before it was recorded (then the next epoch's Start - 1).
	End uint64
}

// History is a replica store's applied history: its epochs in order and
// the last index it applied.
type History struct {
	Epochs  []Epoch
	Applied uint64
}

// TermAt returns the term under which the entry at index was applied, or 0
// when index is beyond Applied or before the first recorded epoch.
func (h History) TermAt(index uint64) uint64 {
	if index == 0 || index > h.Applied {
		return 0
	}
	for i := len(h.Epochs) - 1; i >= 0; i-- {
		if h.Epochs[i].Start <= index {
			if index > h.end(i) {
				return 0 // between two epochs: an entry the store never saw
			}
			return h.Epochs[i].Term
		}
	}
	return 0
}

// Replayed reports whether a log entry at index under term was applied
// before, as the store itself decides it for ApplyAt: an index it applied
// under the same term, or one whose term it or the entry does not know.
// An applied index under another term is a divergence, not a replay.
func (h History) Replayed(index, term uint64) bool {
	return index != 0 && index <= h.Applied && sameTerm(h.TermAt(index), term)
}

// sameTerm is the store's rule for an entry at an index it applied before:
// the terms agree unless both are known and differ.
func sameTerm(was, term uint64) bool { return was == 0 || term == 0 || was == term }

// LastTerm is the term of the last applied entry (0 if unknown).
func (h History) LastTerm() uint64 { return h.TermAt(h.Applied) }

// ForkPoint returns the last index at which h and o hold the same entry,
// as far as their epochs tell: entries up to it are shared, entries after
// it (on either side) are not. By raft's log matching, two logs with the
// same term at an index hold the same entries up to it, so the answer is
// the highest index both applied under the same term; 0 when none is
// known.
func (h History) ForkPoint(o History) uint64 {
	var fork uint64
	for i, a := range h.Epochs {
		aEnd := h.end(i)
		for j, b := range o.Epochs {
			if b.Term != a.Term {
				continue
			}
			if lo, hi := max(a.Start, b.Start), min(aEnd, o.end(j)); lo <= hi && hi > fork {
				fork = hi
			}
		}
	}
	return fork
}

// end is the last index applied in the i-th epoch.
func (h History) end(i int) uint64 {
	switch {
	case h.Epochs[i].End != 0:
		return h.Epochs[i].End
	case i+1 < len(h.Epochs):
		return h.Epochs[i+1].Start - 1
	}
	return h.Applied
}

func epochKey(start uint64) []byte { return binary.BigEndian.AppendUint64(nil, start) }

// History returns the store's applied history.
func (s *BoltStore) History(ctx context.Context) (History, error) {
	var h History
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		h, err = readHistory(tx)
		return err
	})
	return h, err
}

func readHistory(tx *bolt.Tx) (History, error) {
	var h History
	meta := tx.Bucket(metaBucket)
	if v := meta.Get(appliedKey); len(v) == 8 {
		h.Applied = binary.BigEndian.Uint64(v)
	}
	if b := tx.Bucket(epochsBucket); b != nil {
		err := b.ForEach(func(k, v []byte) error {
			e, err := decodeEpoch(k, v)
			h.Epochs = append(h.Epochs, e)
			return err
		})
		if err != nil {
			return h, err
		}
		old, err := oldEpochs(meta)
		if err != nil || len(old) == 0 {
			return h, err
		}
		return foldOld(h, old), nil
	}
	old, err := oldEpochs(meta)
	h.Epochs = old
	return h, err
}

// foldOld adds to h the epochs old that the first release recorded after
// this build had made the epochs bucket: a node rolled back to it applied
// entries (in later terms, say) that h did not hold. Which indexes of h's
// latest epoch that release applied in its term is not known, so the
// epoch ends at its start (the rest reads as unknown, never as a wrong
// term); old epochs that begin at or before it are dropped. Taking them
// for the latest epoch's term made the node, upgraded again, find the
// entries raft replayed "diverged", and stop for good (found by a
// reviewer of upgrades).
func foldOld(h History, old []Epoch) History {
	n := len(h.Epochs)
	if n == 0 {
		h.Epochs = old
		return h
	}
	last := &h.Epochs[n-1]
	if last.End == 0 {
		last.End = last.Start
	}
	for _, e := range old {
		if e.Start > last.End && e.Term >= last.Term {
			h.Epochs = append(h.Epochs, e)
		}
	}
	return h
}

// oldEpochs reads the first release's window of entry terms, as epochs.
func oldEpochs(meta *bolt.Bucket) ([]Epoch, error) {
	var out []Epoch
	// A first-release store: its window of entry terms, as epochs. That
	// release recorded the terms of command entries only, not of the
	// configuration entries raft also commits (a new leader's AddVoter,
	// say): an epoch ends at the last index recorded in its term, so that
	// an unrecorded entry between two epochs reads as unknown, not as the
	// earlier term (which took the configuration entry that opens a new
	// leader's term for a divergence, and stopped the replica).
	c := meta.Cursor()
	var last uint64 // the last index recorded in the current epoch
	for k, v := c.Seek(oldTermPrefix); k != nil && bytes.HasPrefix(k, oldTermPrefix); k, v = c.Next() {
		term, n := binary.Uvarint(v)
		if len(k) != len(oldTermPrefix)+8 || n <= 0 {
			return out, fmt.Errorf("%w: entry term record", ErrCorrupt)
		}
		index := binary.BigEndian.Uint64(k[len(oldTermPrefix):])
		if len(out) == 0 || out[len(out)-1].Term != term {
			if n := len(out); n > 0 {
				out[n-1].End = last
			}
			out = append(out, Epoch{Term: term, Start: index})
		}
		last = index
	}
	return out, nil
}

// decodeEpoch decodes one record of the epochs bucket.
func decodeEpoch(k, v []byte) (Epoch, error) {
	term, n := binary.Uvarint(v)
	if len(k) != 8 || n <= 0 {
		return Epoch{}, fmt.Errorf("%w: epoch record", ErrCorrupt)
	}
	e := Epoch{Term: term, Start: binary.BigEndian.Uint64(k)}
	if rest := v[n:]; len(rest) > 0 {
		end, m := binary.Uvarint(rest)
		if m <= 0 || end < e.Start {
			return Epoch{}, fmt.Errorf("%w: epoch record", ErrCorrupt)
		}
		e.End = end
	}
	return e, nil
}

// epochs is the write side of the history, inside one write transaction.
// Every replicated commit opens it, so it reads only the latest epoch;
// the whole history is read only for an entry replayed at an index
// already applied (termAt).
type epochs struct {
	tx   *bolt.Tx
	b    *bolt.Bucket
	last Epoch // the latest epoch (zero when none)
}

// openEpochs creates the bucket on first use, converting a first-release
// store's term window.
func openEpochs(tx *bolt.Tx) (*epochs, error) {
	b := tx.Bucket(epochsBucket)
	meta := tx.Bucket(metaBucket)
	if k, _ := meta.Cursor().Seek(oldTermPrefix); b == nil || k != nil && bytes.HasPrefix(k, oldTermPrefix) {
		// A first-release store, or one that release wrote to since
		// (a node rolled back, then upgraded again): its terms go into
		// the bucket (foldOld).
		h, err := readHistory(tx)
		if err != nil {
			return nil, err
		}
		if b == nil {
			if b, err = tx.CreateBucket(epochsBucket); err != nil {
				return nil, fmt.Errorf("create epochs bucket: %w", err)
			}
		}
		for _, e := range h.Epochs {
			v := binary.AppendUvarint(nil, e.Term)
			if e.End != 0 {
				v = binary.AppendUvarint(v, e.End)
			}
			if err := b.Put(epochKey(e.Start), v); err != nil {
				return nil, fmt.Errorf("put epoch: %w", err)
			}
		}
		if _, err := deleteOldTerms(tx.Bucket(metaBucket)); err != nil {
			return nil, err
		}
	}
	e := &epochs{tx: tx, b: b}
	if k, v := b.Cursor().Last(); k != nil {
		last, err := decodeEpoch(k, v)
		if err != nil {
			return nil, err
		}
		e.last = last
	}
	return e, nil
}

// deleteOldTerms deletes a first-release store's entry terms from the
// meta bucket and returns how many there were.
func deleteOldTerms(meta *bolt.Bucket) (int, error) {
	var old [][]byte
	c := meta.Cursor()
	for k, _ := c.Seek(oldTermPrefix); k != nil && bytes.HasPrefix(k, oldTermPrefix); k, _ = c.Next() {
		old = append(old, bytes.Clone(k))
	}
	for _, k := range old {
		if err := meta.Delete(k); err != nil {
			return 0, fmt.Errorf("delete entry term: %w", err)
		}
	}
	return len(old), nil
}

// record notes that the entry (index, term) is applied next, after
// applied. It reports a term lower than the last applied one: a log never
// goes back in term, so the entry comes from a history other than the one
// this store followed.
func (e *epochs) record(index, term, applied uint64) (backwards bool, err error) {
	if term == 0 || term == e.last.Term {
		return false, nil
	}
	if term < e.last.Term {
		return true, nil
	}
	if e.last.Term != 0 && applied >= e.last.Start {
		// Close the previous epoch where it really ended.
		v := binary.AppendUvarint(binary.AppendUvarint(nil, e.last.Term), applied)
		if err := e.b.Put(epochKey(e.last.Start), v); err != nil {
			return false, fmt.Errorf("put epoch: %w", err)
		}
	}
	e.last = Epoch{Term: term, Start: index}
	if err := e.b.Put(epochKey(index), binary.AppendUvarint(nil, term)); err != nil {
		return false, fmt.Errorf("put epoch: %w", err)
	}
	return false, nil
}

// termAt is History.TermAt over what this transaction has applied.
func (e *epochs) termAt(index, applied uint64) (uint64, error) {
	h, err := readHistory(e.tx)
	if err != nil {
		return 0, err
	}
	h.Applied = applied
	return h.TermAt(index), nil
}
