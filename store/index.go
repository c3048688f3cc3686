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

// The dispatch indexes: what the dispatcher reads a window at a time
// (Queued) instead of holding every unfinished ticket in memory. Each is
// one flat top-level bucket whose keys begin with the service (svcPrefix:
// its length as a uvarint, then its bytes; flat, so that a small store's
// buckets stay inline in their parent's page), kept in the same write
// transaction as the ticket change, by the apply code the single-node
// writer and the raft FSM share, so every replica has them. They are not
// part of the layout checkLayout requires: the first release neither
// reads nor writes them, which is why they need no new format version.
//
//	ixready    [service][level byte][big-endian Seq] → ID: unfinished
//	           tickets that are not delayed (dispatched ones included: a
//	           restart redelivers them at their FIFO position)
//	ixdelayed  [service][due][Seq] → ID: pending tickets with a due time
//	ixdeadline [service][deadline][Seq] → ID: pending tickets never
//	           dispatched that have a deadline
//	ixcount    service → uint64: the entries of the service's ixdelayed
//
// A time in a key is 8 bytes: its Unix nanoseconds, big-endian, with the
// sign bit flipped so that keys sort as times do (timeKey).
//
// A ticket is in ixdelayed when it is pending with a non-zero Due, in
// ixready when it is otherwise unfinished: whether a due time has passed
// is the dispatcher's business (apply never reads the clock), so a
// ticket stays in ixdelayed after its time until it is dispatched.
//
// meta "ixtx" holds the ID of the bbolt transaction that last wrote the
// file with the indexes kept. Every write transaction of this build
// writes it; a binary that does not know the indexes (the first release,
// after a rollback and a roll forward) writes without it. Open compares
// it with the file's last transaction: another value means the indexes
// may be stale, and they are rebuilt (rebuildIndexes, O(unfinished)
// once, logged).
var (
	readyBucket    = []byte("ixready")
	delayedBucket  = []byte("ixdelayed")
	deadlineBucket = []byte("ixdeadline")
	ixCountBucket  = []byte("ixcount")

	indexBuckets = [][]byte{readyBucket, delayedBucket, deadlineBucket, ixCountBucket}

	ixTxKey = []byte("ixtx")
)

// Queue names a dispatch index for Queued.
type Queue uint8

// The dispatch indexes.
const (
	// QueueReady holds, per service and priority level, the unfinished
	// tickets without a due time, in Seq order.
	QueueReady Queue = iota + 1
	// QueueDelayed holds, per service, the pending tickets with a due
	// time (past or not), in (Due, Seq) order.
	QueueDelayed
	// QueueDeadline holds, per service, the pending tickets never
	// dispatched that have a deadline, in (Deadline, Seq) order.
	QueueDeadline
)

// Key is a position in a dispatch index: At is a time in Unix
// nanoseconds (0 in QueueReady), then Seq.
type Key struct {
	At  int64
	Seq uint64
}

// Less orders keys as their index does.
func (k Key) Less(o Key) bool { return k.At < o.At || k.At == o.At && k.Seq < o.Seq }

// TimeKey is the At of a time in a Key.
func TimeKey(t time.Time) int64 {
	s := t.Unix()
	switch {
	case s >= math.MaxInt64/int64(time.Second):
		return math.MaxInt64
	case s <= math.MinInt64/int64(time.Second):
		return math.MinInt64
	}
	return s*int64(time.Second) + int64(t.Nanosecond())
}

// QueueRead selects one window of a dispatch index (Queued).
type QueueRead struct {
	Queue   Queue
	Service string
	// Level is the priority level of QueueReady.
	Level Priority
	// After, when Started, is the last key already read: the window
	// begins after it. Otherwise it begins at the index's first key.
	After   Key
	Started bool
	// Limit bounds the tickets returned (at least 1).
	Limit int
}

// QueuedTicket is a ticket read from a dispatch index, with its key there.
type QueuedTicket struct {
	Ticket
	Key Key
}

// levelByte is a priority's byte in QueueReady's keys: high first.
func levelByte(p Priority) byte {
	switch {
	case p > PriorityNormal:
		return 0
	case p < PriorityNormal:
		return 2
	}
	return 1
}

func appendTimeKey(b []byte, at int64) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(at)^(1<<63))
}

func readyKey(level byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{level}, seq)
}

func timedKey(at int64, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(appendTimeKey(make([]byte, 0, 16), at), seq)
}

// svcPrefix begins every index key of service.
func svcPrefix(service string) []byte { return appendSvcPrefix(nil, service) }

func appendSvcPrefix(b []byte, service string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(service))), service...)
}

// ixKey is the full key of an index entry: the service's prefix, then
// the entry's own key.
func ixKey(service string, k []byte) []byte { return appendIxKey(nil, service, k) }

func appendIxKey(b []byte, service string, k []byte) []byte {
	return append(appendSvcPrefix(b, service), k...)
}

// ixSlot is an index entry's own key (readyKey or timedKey), held in
// place so that working out a ticket's placement allocates nothing.
type ixSlot struct {
	b [16]byte
	n uint8
}

func (s *ixSlot) set(k []byte) { s.n = uint8(copy(s.b[:], k)) }

// key is the entry's key, nil when the ticket is not in that index.
func (s *ixSlot) key() []byte {
	if s.n == 0 {
		return nil
	}
	return s.b[:s.n]
}

// placement is where an index keeps a ticket: the key in each index,
// none when the ticket is not in it.
type placement struct {
	ready, delayed, deadline ixSlot
}

// slot is the index i of ready, delayed, deadline.
func (p *placement) slot(i int) *ixSlot {
	switch i {
	case 0:
		return &p.ready
	case 1:
		return &p.delayed
	}
	return &p.deadline
}

func placeOf(tk *Ticket) placement {
	var p placement
	if tk == nil || (tk.State != StatePending && tk.State != StateDispatched) {
		return p
	}
	// The keys are built in place: readyKey and timedKey would allocate.
	if tk.State == StatePending && !tk.Due.IsZero() {
		p.delayed.set(binary.BigEndian.AppendUint64(appendTimeKey(p.delayed.b[:0], TimeKey(tk.Due)), tk.Seq))
	} else {
		p.ready.b[0] = levelByte(tk.Priority)
		p.ready.set(binary.BigEndian.AppendUint64(p.ready.b[:1], tk.Seq))
	}
	if tk.State == StatePending && tk.Attempts == 0 && !tk.Deadline.IsZero() {
		p.deadline.set(binary.BigEndian.AppendUint64(appendTimeKey(p.deadline.b[:0], TimeKey(tk.Deadline)), tk.Seq))
	}
	return p
}

// indexes are a transaction's index buckets.
type indexes struct {
	ready, delayed, deadline, count *bolt.Bucket
}

func openIndexes(tx *bolt.Tx) (indexes, error) {
	ix := indexes{
		ready:    tx.Bucket(readyBucket),
		delayed:  tx.Bucket(delayedBucket),
		deadline: tx.Bucket(deadlineBucket),
		count:    tx.Bucket(ixCountBucket),
	}
	if ix.ready == nil || ix.delayed == nil || ix.deadline == nil || ix.count == nil {
		return ix, fmt.Errorf("%w: dispatch index bucket missing", ErrCorrupt)
	}
	return ix, nil
}

// reindex moves a ticket's index entries from where old kept it to where
// tk keeps it (old nil: a new ticket; tk nil: deleted); delayed counts the
// change of the service's ixdelayed entries. id is the entries' value: it
// must stay valid until the transaction ends; keys are built in bufs.key.
func (ix indexes) reindex(bufs *txnBufs, service string, id []byte, old, tk *Ticket, delayed map[string]int) error {
	was, is := placeOf(old), placeOf(tk)
	// The buckets apart from the keys: escape analysis does not tell a
	// struct's fields apart, and a bucket passed to bbolt would take the
	// placements, which live on the stack, to the heap with it.
	for i, b := range [...]*bolt.Bucket{ix.ready, ix.delayed, ix.deadline} {
		x := struct {
			was, is  []byte
			isDelayQ bool
		}{was.slot(i).key(), is.slot(i).key(), i == 1}
		if bytes.Equal(x.was, x.is) {
			continue
		}
		if x.was != nil {
			bufs.key = appendIxKey(bufs.key[:0], service, x.was)
			if err := b.Delete(bufs.key); err != nil {
				return fmt.Errorf("delete index entry: %w", err)
			}
			if x.isDelayQ {
				delayed[service]--
			}
		}
		if x.is != nil {
			bufs.key = appendIxKey(bufs.key[:0], service, x.is)
			if err := b.Put(bufs.key, id); err != nil {
				return fmt.Errorf("put index entry: %w", err)
			}
			if x.isDelayQ {
				delayed[service]++
			}
		}
	}
	return nil
}

// addCounts writes the changes of the services' ixdelayed counts.
func (ix indexes) addCounts(delayed map[string]int) error {
	for svc, d := range delayed {
		if d == 0 {
			continue
		}
		var n int64
		if v := ix.count.Get([]byte(svc)); len(v) == 8 {
			n = int64(binary.BigEndian.Uint64(v))
		}
		n = max(n+int64(d), 0)
		var err error
		if n == 0 {
			err = ix.count.Delete([]byte(svc))
		} else {
			err = ix.count.Put([]byte(svc), binary.BigEndian.AppendUint64(nil, uint64(n)))
		}
		if err != nil {
			return fmt.Errorf("put index count: %w", err)
		}
	}
	return nil
}

// markIndexed records that this transaction kept the indexes (see
// ixTxKey).
func markIndexed(tx *bolt.Tx) error {
	if err := tx.Bucket(metaBucket).Put(ixTxKey, binary.BigEndian.AppendUint64(nil, uint64(tx.ID()))); err != nil {
		return fmt.Errorf("put index mark: %w", err)
	}
	return nil
}

// remarkIndexed is markIndexed for a transaction that changes no ticket:
// the mark moves only when it was current, so that stale indexes stay
// known as stale.
func remarkIndexed(tx *bolt.Tx) error {
	if v := tx.Bucket(metaBucket).Get(ixTxKey); len(v) == 8 && binary.BigEndian.Uint64(v) == uint64(tx.ID()-1) {
		return markIndexed(tx)
	}
	return nil
}

// indexesCurrent reports whether the indexes were kept by the file's last
// write transaction, and if not, why.
func indexesCurrent(tx *bolt.Tx) (bool, string) {
	for _, name := range indexBuckets {
		if tx.Bucket(name) == nil {
			return false, "the dispatch indexes are missing (a store of an earlier release)"
		}
	}
	v := tx.Bucket(metaBucket).Get(ixTxKey)
	if len(v) != 8 {
		return false, "no index mark"
	}
	if got := binary.BigEndian.Uint64(v); got != uint64(tx.ID()) {
		return false, fmt.Sprintf("the file's last write (transaction %d) was not made by this release (index mark %d): written by an older binary", tx.ID(), got)
	}
	return true, ""
}

// rebuildChunk is how many unfinished tickets one transaction of a
// rebuild indexes: it bounds the dirty pages bbolt holds in memory.
const rebuildChunk = 100_000

// ensureIndexes rebuilds the dispatch indexes unless the file's last write
// kept them. Only the opener or the writer (no other write transaction can
// run) calls it.
func ensureIndexes(db *bolt.DB, log interface{ Warn(string, ...any) }) error {
	var (
		ok  bool
		why string
	)
	if err := db.View(func(tx *bolt.Tx) error { ok, why = indexesCurrent(tx); return nil }); err != nil {
		return err
	}
	if ok {
		return nil
	}
	start := time.Now()
	n, err := rebuildIndexes(db)
	if err != nil {
		return fmt.Errorf("rebuild dispatch indexes: %w", err)
	}
	log.Warn("dispatch indexes rebuilt", "why", why, "unfinished", n, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// rebuildIndexes makes the dispatch indexes again from the FIFO index,
// in transactions of rebuildChunk tickets; the last one writes the mark,
// so a rebuild cut short is done again at the next Open.
func rebuildIndexes(db *bolt.DB) (int, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		for _, name := range indexBuckets {
			if tx.Bucket(name) != nil {
				if err := tx.DeleteBucket(name); err != nil {
					return err
				}
			}
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		// Not current until the last chunk says so.
		return tx.Bucket(metaBucket).Delete(ixTxKey)
	})
	if err != nil {
		return 0, err
	}
	var (
		service []byte
		seq     uint64
		started bool
		total   int
	)
	for {
		done := false
		err := db.Update(func(tx *bolt.Tx) error {
			chunk, err := readUnfinished(tx, make([]Ticket, 0, rebuildChunk), service, seq, started)
			if err != nil {
				return err
			}
			ix, err := openIndexes(tx)
			if err != nil {
				return err
			}
			delayed := make(map[string]int)
			var bufs txnBufs
			for i := range chunk {
				// chunk outlives the transaction: its IDs are the values.
				tk := &chunk[i]
				if err := ix.reindex(&bufs, tk.Service, tk.ID[:], nil, tk, delayed); err != nil {
					return err
				}
			}
			if err := ix.addCounts(delayed); err != nil {
				return err
			}
			total += len(chunk)
			if len(chunk) < rebuildChunk {
				done = true
				return markIndexed(tx)
			}
			last := chunk[len(chunk)-1]
			service, seq, started = []byte(last.Service), last.Seq, true
			return nil
		})
		if err != nil {
			return total, err
		}
		if done {
			return total, nil
		}
	}
}

// DueDelayed counts, for each of services, the tickets of the dispatch
// index QueueDelayed that are due at now (their due time is not after
// it: they wait for a worker like any pending ticket), and returns the
// earliest due time among them (zero when none is due). Only keys are
// read, in one read transaction; the work is in the due entries, not
// in those still delayed.
func (s *BoltStore) DueDelayed(ctx context.Context, services []string, now time.Time) (map[string]DueCount, error) {
	out := make(map[string]DueCount, len(services))
	at := TimeKey(now)
	err := s.view(ctx, func(tx *bolt.Tx) error {
		top := tx.Bucket(delayedBucket)
		if top == nil {
			return fmt.Errorf("%w: dispatch index %s missing", ErrCorrupt, delayedBucket)
		}
		c := top.Cursor()
		for _, svc := range services {
			prefix := svcPrefix(svc)
			var d DueCount
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				k := k[len(prefix):]
				if len(k) != 16 {
					return fmt.Errorf("%w: %s entry %x of service %q", ErrCorrupt, delayedBucket, k, svc)
				}
				due := int64(binary.BigEndian.Uint64(k) ^ (1 << 63))
				if due > at {
					break
				}
				if d.Due == 0 {
					d.First = time.Unix(0, due)
				}
				d.Due++
			}
			out[svc] = d
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("due delayed: %w", err)
	}
	return out, nil
}

// DueCount is a service's delayed tickets that are due (DueDelayed).
type DueCount struct {
	Due   int
	First time.Time // the earliest due time among them
}

// Queued reads one window of a dispatch index: up to r.Limit tickets of
// r.Service that follow r.After, in key order, without bodies, in one
// read transaction (one consistent snapshot). It is how the dispatcher
// loads its queues a window at a time.
func (s *BoltStore) Queued(ctx context.Context, r QueueRead) ([]QueuedTicket, error) {
	var out []QueuedTicket
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		out, err = readQueued(tx, r)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("queued %s: %w", r.Service, err)
	}
	return out, nil
}

func readQueued(tx *bolt.Tx, r QueueRead) ([]QueuedTicket, error) {
	var name []byte
	switch r.Queue {
	case QueueReady:
		name = readyBucket
	case QueueDelayed:
		name = delayedBucket
	case QueueDeadline:
		name = deadlineBucket
	default:
		return nil, fmt.Errorf("%w: unknown queue %d", ErrInvalidOp, r.Queue)
	}
	top := tx.Bucket(name)
	if top == nil {
		return nil, fmt.Errorf("%w: dispatch index %s missing", ErrCorrupt, name)
	}
	prefix := svcPrefix(r.Service)
	limit := max(r.Limit, 1)
	tickets := tx.Bucket(ticketsBucket)
	level := levelByte(r.Level)
	seek := prefix
	if r.Queue == QueueReady {
		seek = append(bytes.Clone(prefix), level)
		if r.Started {
			if r.After.Seq == math.MaxUint64 {
				return nil, nil
			}
			seek = append(bytes.Clone(prefix), readyKey(level, r.After.Seq+1)...)
		}
	} else if r.Started {
		seek = append(bytes.Clone(prefix), timedKey(r.After.At, r.After.Seq)...)
	}
	var out []QueuedTicket
	c := top.Cursor()
	for k, v := c.Seek(seek); k != nil && len(out) < limit; k, v = c.Next() {
		if !bytes.HasPrefix(k, prefix) {
			break // the next service's
		}
		k := k[len(prefix):]
		var key Key
		switch {
		case r.Queue == QueueReady && len(k) == 9:
			if k[0] != level {
				return out, nil
			}
			key.Seq = binary.BigEndian.Uint64(k[1:])
		case r.Queue != QueueReady && len(k) == 16:
			key.At = int64(binary.BigEndian.Uint64(k) ^ (1 << 63))
			key.Seq = binary.BigEndian.Uint64(k[8:])
			if r.Started && !r.After.Less(key) {
				continue // the seek landed on After itself
			}
		default:
			return nil, fmt.Errorf("%w: %s entry %x of service %q", ErrCorrupt, name, k, r.Service)
		}
		if len(v) != len(ID{}) {
			return nil, fmt.Errorf("%w: %s entry %x of service %q", ErrCorrupt, name, k, r.Service)
		}
		id := ID(v)
		rec := tickets.Get(id[:])
		if rec == nil {
			return nil, fmt.Errorf("%w: %s entry of service %q names missing ticket %s", ErrCorrupt, name, r.Service, id)
		}
		t, err := decodeTicket(id, rec)
		if err != nil {
			return nil, err
		}
		out = append(out, QueuedTicket{Ticket: t, Key: key})
	}
	return out, nil
}

// checkIndexes reports, on a store whose indexes are current, every
// unfinished ticket not where its index keeps it, every entry that names
// no such ticket, and counts that disagree.
func checkIndexes(tx *bolt.Tx, add func(string, ...any)) {
	if ok, _ := indexesCurrent(tx); !ok {
		return // rebuilt at the next Open
	}
	ix, err := openIndexes(tx)
	if err != nil {
		add("%v", err)
		return
	}
	tickets := tx.Bucket(ticketsBucket)
	want := make(map[string]int) // ixdelayed entries per service
	n := 0
	_ = tickets.ForEach(func(k, v []byte) error {
		t, err := decodeTicket(ID(k), v)
		if err != nil {
			return nil // checkContent reports it
		}
		p := placeOf(&t)
		for _, x := range []struct {
			b   *bolt.Bucket
			key []byte
		}{{ix.ready, p.ready.key()}, {ix.delayed, p.delayed.key()}, {ix.deadline, p.deadline.key()}} {
			if x.key == nil {
				continue
			}
			n++
			if !bytes.Equal(x.b.Get(ixKey(t.Service, x.key)), k) {
				add("ticket %s (%s) is not in its dispatch index entry %x", t.ID, t.State, x.key)
			}
		}
		if p.delayed.n != 0 {
			want[t.Service]++
		}
		return nil
	})
	entries := 0
	for _, b := range []*bolt.Bucket{ix.ready, ix.delayed, ix.deadline} {
		entries += b.Stats().KeyN
	}
	if entries != n {
		add("dispatch indexes hold %d entries, the tickets need %d", entries, n)
	}
	got := make(map[string]int)
	_ = ix.count.ForEach(func(k, v []byte) error {
		if len(v) == 8 {
			got[string(k)] = int(binary.BigEndian.Uint64(v))
		}
		return nil
	})
	for svc, w := range want {
		if got[svc] != w {
			add("service %q: %d delayed tickets, index count says %d", svc, w, got[svc])
		}
		delete(got, svc)
	}
	for svc, g := range got {
		add("service %q: no delayed tickets, index count says %d", svc, g)
	}
}
