package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"os"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DefaultListLimit is the page size of List when Filter.Limit is 0.
const DefaultListLimit = 100

// unfinishedChunk is how many tickets Unfinished reads per transaction.
const unfinishedChunk = 1024

// view runs fn in a read transaction. Everything fn returns must be copied
// out of the transaction: bbolt's byte slices point into the mmap, which is
// unmapped when the file grows.
func (s *BoltStore) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.db == nil {
		return ErrClosed
	}
	return s.db.View(fn)
}

// Get implements Store.
func (s *BoltStore) Get(ctx context.Context, id ID) (Ticket, error) {
	var t Ticket
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		if t, err = readTicket(tx, id); err != nil {
			return err
		}
		t.Body, err = decodeFrames(tx.Bucket(bodiesBucket).Get(id[:]))
		if err != nil {
			return fmt.Errorf("body: %w", err)
		}
		return nil
	})
	if err != nil {
		return Ticket{}, fmt.Errorf("get %s: %w", id, err)
	}
	return t, nil
}

// Reply implements Store. A done ticket whose reply had zero frames gives a
// non-nil empty slice, so that it can be told from "no reply yet".
func (s *BoltStore) Reply(ctx context.Context, id ID) (Ticket, [][]byte, error) {
	var (
		t     Ticket
		reply [][]byte
	)
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		if t, err = readTicket(tx, id); err != nil {
			return err
		}
		if v := tx.Bucket(repliesBucket).Get(id[:]); v != nil {
			if reply, err = decodeFrames(v); err != nil {
				return fmt.Errorf("reply: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return Ticket{}, nil, fmt.Errorf("reply %s: %w", id, err)
	}
	return t, reply, nil
}

func readTicket(tx *bolt.Tx, id ID) (Ticket, error) {
	v := tx.Bucket(ticketsBucket).Get(id[:])
	if v == nil {
		return Ticket{}, ErrNotFound
	}
	return decodeTicket(id, v)
}

// Unfinished implements Store. It reads the FIFO index in chunks of
// unfinishedChunk tickets, each in its own read transaction, and calls fn
// between transactions: fn may call Apply, and a long iteration does not
// pin old pages. The price is that it is not one snapshot: a ticket that
// changes during the iteration may or may not be seen, but each ticket is
// seen at most once and every service in Seq order. An index entry without
// its ticket is reported as ErrCorrupt.
func (s *BoltStore) Unfinished(ctx context.Context, fn func(Ticket) error) error {
	var (
		service []byte // resume point: the last service and Seq given to fn
		seq     uint64
		started bool
	)
	for {
		chunk := make([]Ticket, 0, unfinishedChunk)
		err := s.view(ctx, func(tx *bolt.Tx) error {
			var err error
			chunk, err = readUnfinished(tx, chunk, service, seq, started)
			return err
		})
		if err != nil {
			return fmt.Errorf("unfinished: %w", err)
		}
		for _, t := range chunk {
			if err := fn(t); err != nil {
				return err
			}
		}
		if len(chunk) < unfinishedChunk {
			return nil
		}
		last := chunk[len(chunk)-1]
		service, seq, started = []byte(last.Service), last.Seq, true
	}
}

// readUnfinished appends to chunk, until it is full, the unfinished
// tickets that follow (service, seq) in index order (all of them when not
// started).
func readUnfinished(tx *bolt.Tx, chunk []Ticket, service []byte, seq uint64, started bool) ([]Ticket, error) {
	fifo, tickets := tx.Bucket(fifoBucket), tx.Bucket(ticketsBucket)
	sc := fifo.Cursor()
	for name, _ := sc.Seek(service); name != nil; name, _ = sc.Next() {
		b := fifo.Bucket(name)
		if b == nil {
			return nil, fmt.Errorf("%w: fifo entry %q is not a bucket", ErrCorrupt, name)
		}
		c := b.Cursor()
		k, v := c.First()
		if started && bytes.Equal(name, service) {
			if seq == ^uint64(0) {
				continue
			}
			k, v = c.Seek(seqKeyOf(seq + 1))
		}
		for ; k != nil; k, v = c.Next() {
			if len(chunk) == cap(chunk) {
				return chunk, nil
			}
			if len(k) != 8 || len(v) != len(ID{}) {
				return nil, fmt.Errorf("%w: fifo entry of service %q", ErrCorrupt, name)
			}
			id := ID(v)
			rec := tickets.Get(id[:])
			if rec == nil {
				return nil, fmt.Errorf("%w: fifo entry of service %q names missing ticket %s", ErrCorrupt, name, id)
			}
			t, err := decodeTicket(id, rec)
			if err != nil {
				return nil, err
			}
			if t.State.Final() || t.Service != string(name) || t.Seq != binary.BigEndian.Uint64(k) {
				return nil, fmt.Errorf("%w: fifo entry of service %q disagrees with ticket %s", ErrCorrupt, name, id)
			}
			chunk = append(chunk, t)
		}
	}
	return chunk, nil
}

// DefaultMaxScan is how many tickets one ListPage examines when
// Filter.MaxScan is 0: some milliseconds of one read transaction.
const DefaultMaxScan = 10_000

// List implements Store: ListPage until Limit tickets matched or the end.
func (s *BoltStore) List(ctx context.Context, f Filter) ([]Ticket, error) {
	return ListAll(ctx, s, f)
}

// ListAll is List for any store, in pages from st.ListPage: each read
// transaction is bounded, the call is not.
func ListAll(ctx context.Context, st interface {
	ListPage(context.Context, Filter) (Page, error)
}, f Filter) ([]Ticket, error) {
	if f.Limit <= 0 {
		f.Limit = DefaultListLimit
	}
	var out []Ticket
	for {
		p, err := st.ListPage(ctx, f)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Tickets...)
		if !p.More || len(out) >= f.Limit {
			return out, nil
		}
		f.After, f.Limit = p.Next, f.Limit-len(p.Tickets)
	}
}

// ListPage implements Store. It walks the tickets in ID order from
// f.After, decoding each record (never a body), so a filter that matches
// few tickets of a large store costs a scan, in steps of f.MaxScan.
func (s *BoltStore) ListPage(ctx context.Context, f Filter) (Page, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	maxScan := f.MaxScan
	if maxScan <= 0 {
		maxScan = DefaultMaxScan
	}
	var (
		out      []Ticket
		examined int
		next     ID
		more     bool
	)
	err := s.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(ticketsBucket).Cursor()
		var k, v []byte
		step := c.Next
		switch {
		case !f.Reverse:
			k, v = c.Seek(f.After[:])
			if k != nil && bytes.Equal(k, f.After[:]) {
				k, v = c.Next()
			}
		case f.After.IsZero():
			k, v = c.Last()
			step = c.Prev
		default:
			step = c.Prev
			if k, _ = c.Seek(f.After[:]); k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev() // the first key below After
			}
		}
		for ; k != nil && len(out) < limit; k, v = step() {
			if examined == maxScan {
				more = true
				break
			}
			if len(k) != len(ID{}) {
				return fmt.Errorf("%w: ticket key of %d bytes", ErrCorrupt, len(k))
			}
			examined++
			next = ID(k)
			t, err := decodeTicket(ID(k), v)
			if err != nil {
				return err
			}
			if (f.Service == "" || f.Service == t.Service) && (f.State == 0 || f.State == t.State) {
				out = append(out, t)
			}
		}
		return nil
	})
	if err != nil {
		return Page{}, fmt.Errorf("list: %w", err)
	}
	p := Page{Tickets: out, Examined: examined, More: more}
	if more {
		p.Next = next
	}
	return p, nil
}

// Counts holds how many tickets of one service are in each state.
type Counts struct {
	Pending, Dispatched, Done, Failed, Cancelled int
	// Delayed is how many of the pending tickets have a due time, past
	// or not (the dispatch index QueueDelayed holds them); it is not
	// counted again in Total.
	Delayed int
}

// Total returns the number of tickets counted.
func (c Counts) Total() int { return c.Pending + c.Dispatched + c.Done + c.Failed + c.Cancelled }

func (c *Counts) add(st State, n int) {
	switch st {
	case StatePending:
		c.Pending += n
	case StateDispatched:
		c.Dispatched += n
	case StateDone:
		c.Done += n
	case StateFailed:
		c.Failed += n
	case StateCancelled:
		c.Cancelled += n
	}
}

// Stats describes a BoltStore. Services comes from counters kept in the
// file and updated in the same transaction as the ops, so it is exact and
// costs one small bucket scan. The activity counters count since Open.
type Stats struct {
	Services map[string]Counts // tickets per service; services with none are absent
	NextSeq  uint64            // Seq the next submitted ticket gets
	Size     int64             // bytes of the file in use (bbolt's high-water mark)

	Commits uint64 // write transactions committed: one fsync each
	Applies uint64 // Apply calls answered
	Ops     uint64 // ops applied (including those with their own error)
}

// ServiceNames returns the names in st.Services, sorted.
func (st Stats) ServiceNames() []string { return slices.Sorted(maps.Keys(st.Services)) }

// Stats returns the store's counters.
func (s *BoltStore) Stats(ctx context.Context) (Stats, error) {
	st := Stats{Services: make(map[string]Counts)}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		st.Size = tx.Size()
		if v := tx.Bucket(metaBucket).Get(seqKey); len(v) == 8 {
			st.NextSeq = binary.BigEndian.Uint64(v)
		}
		err := tx.Bucket(countsBucket).ForEach(func(k, v []byte) error {
			if len(k) < 1 || len(v) != 8 {
				return fmt.Errorf("%w: counter entry", ErrCorrupt)
			}
			c := st.Services[string(k[1:])]
			c.add(State(k[0]), int(binary.BigEndian.Uint64(v)))
			st.Services[string(k[1:])] = c
			return nil
		})
		if err != nil {
			return err
		}
		if b := tx.Bucket(ixCountBucket); b != nil {
			return b.ForEach(func(k, v []byte) error {
				if c, ok := st.Services[string(k)]; ok && len(v) == 8 {
					c.Delayed = int(binary.BigEndian.Uint64(v))
					st.Services[string(k)] = c
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return Stats{}, fmt.Errorf("stats: %w", err)
	}
	st.Commits = s.commits.Load()
	st.Applies = s.applies.Load()
	st.Ops = s.ops.Load()
	return st, nil
}

// Counts implements Store: Stats's Services.
func (s *BoltStore) Counts(ctx context.Context) (map[string]Counts, error) {
	st, err := s.Stats(ctx)
	if err != nil {
		return nil, err
	}
	return st.Services, nil
}

// Usage is how much of the data file holds data.
type Usage struct {
	FileSize int64 // bytes of the file
	Free     int64 // bytes of its free pages, reused before it grows
}

// Used is the bytes that hold data.
func (u Usage) Used() int64 { return u.FileSize - u.Free }

// Usage reports the data file's size and free space. It is cheap (no
// transaction), for quota checks on every commit.
func (s *BoltStore) Usage() (Usage, error) {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.db == nil {
		return Usage{}, ErrClosed
	}
	fi, err := os.Stat(s.path)
	if err != nil {
		return Usage{}, fmt.Errorf("usage: %w", err)
	}
	st := s.db.Stats()
	return Usage{FileSize: fi.Size(), Free: int64(st.FreeAlloc)}, nil
}

// Expired returns up to limit finished (done or failed) tickets last
// updated before cutoff, for retention. Ticket IDs are time-ordered (UUIDv7),
// so the scan stops at the first ticket created at or after cutoff: its
// cost follows the old tickets, not the whole store.
func (s *BoltStore) Expired(ctx context.Context, cutoff time.Time, limit int) ([]ID, error) {
	var out []ID
	err := s.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(ticketsBucket).Cursor()
		for k, v := c.First(); k != nil && len(out) < limit; k, v = c.Next() {
			if len(k) != len(ID{}) {
				return fmt.Errorf("%w: ticket key of %d bytes", ErrCorrupt, len(k))
			}
			t, err := decodeTicket(ID(k), v)
			if err != nil {
				return err
			}
			if !t.Created.Before(cutoff) {
				break
			}
			if t.State.Final() && t.Updated.Before(cutoff) {
				out = append(out, t.ID)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("expired: %w", err)
	}
	return out, nil
}

// Heads returns, per service with unfinished tickets, the ticket at the
// head of its FIFO (the oldest pending or dispatched one), without body:
// its Created is how long the queue has been waiting. The cost follows the
// number of services, not the queue lengths.
func (s *BoltStore) Heads(ctx context.Context) (map[string]Ticket, error) {
	out := make(map[string]Ticket)
	err := s.view(ctx, func(tx *bolt.Tx) error {
		tickets := tx.Bucket(ticketsBucket)
		fifo := tx.Bucket(fifoBucket)
		return fifo.ForEachBucket(func(name []byte) error {
			b := fifo.Bucket(name)
			if b == nil {
				return nil
			}
			_, id := b.Cursor().First()
			if id == nil {
				return nil
			}
			if len(id) != len(ID{}) {
				return fmt.Errorf("%w: fifo entry of %d bytes", ErrCorrupt, len(id))
			}
			v := tickets.Get(id)
			if v == nil {
				return fmt.Errorf("%w: fifo of %q names missing ticket %x", ErrCorrupt, name, id)
			}
			t, err := decodeTicket(ID(id), v)
			if err != nil {
				return err
			}
			out[string(name)] = t
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("heads: %w", err)
	}
	return out, nil
}
