package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// maxCheckErrors caps the problems Check reports, so that a badly damaged
// file gives a readable error.
const maxCheckErrors = 20

// Snapshot implements Store: it writes a consistent copy of the file, as of
// one read transaction, while writes go on. The copy is itself a store file
// that Open and Restore accept. A long copy holds that transaction open;
// the writer can then not shrink the mmap and the file may grow meanwhile.
func (s *BoltStore) Snapshot(ctx context.Context, w io.Writer) (int64, error) {
	var n int64
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(ctxWriter{ctx, w})
		return err
	})
	if err != nil {
		return n, fmt.Errorf("snapshot: %w", err)
	}
	return n, nil
}

// Restore implements Store. The snapshot is written to a temporary file
// next to the store and fully checked (bbolt structure and our layout)
// before anything is replaced. Then, on the writer goroutine between two
// commits, the current file is closed, the new one renamed over it and
// opened. Reads wait for the swap; Apply calls queued behind the Restore
// apply to the restored content. If the final open fails (it cannot, short
// of a disk failure, since the file was checked), the store returns
// ErrClosed until it is closed and opened again.
//
// Whoever keeps state derived from the store (the dispatcher's queues)
// must rebuild it after a Restore.
func (s *BoltStore) Restore(ctx context.Context, r io.Reader) error {
	return s.RestoreChecked(ctx, r, nil)
}

// RestoreChecked is Restore with a last word for the caller: accept, when
// set, is given the incoming snapshot's applied history once it is
// received and checked, and an error from it leaves the store as it was
// (ErrKeepCurrent: and RestoreChecked reports success).
// A replica uses it to refuse a snapshot that would silently drop entries
// only it holds (a fork).
func (s *BoltStore) RestoreChecked(ctx context.Context, r io.Reader, accept func(History) error) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	tmp, err := s.receive(ctx, r)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer os.Remove(tmp) // gone already once renamed
	if accept != nil {
		h, err := fileHistory(tmp, s.opts)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		if err := accept(h); err != nil {
			if errors.Is(err, ErrKeepCurrent) {
				s.log.Info("snapshot not restored: the store already holds all of it", "snapshot_applied", h.Applied)
				return nil
			}
			return fmt.Errorf("restore: %w", err)
		}
	}
	if err := s.control(ctx, func() error { return s.swap(tmp) }); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	s.log.Info("store restored from snapshot")
	return nil
}

// receive writes r to a temporary file beside the store, syncs it and
// checks that it is a sound store file. It returns the file's path.
func (s *BoltStore) receive(ctx context.Context, r io.Reader) (string, error) {
	dir, base := filepath.Split(s.path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, base+".restore-*")
	if err != nil {
		return "", err
	}
	tmp := f.Name()
	_, err = io.Copy(f, ctxReader{ctx, r})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = checkFile(tmp, s.opts)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return "", err
	}
	return tmp, nil
}

// fileHistory reads the applied history of the store file at path.
func fileHistory(path string, opts Options) (History, error) {
	db, err := openDB(path, opts, false)
	if err != nil {
		return History{}, err
	}
	var h History
	err = db.View(func(tx *bolt.Tx) error {
		var err error
		h, err = readHistory(tx)
		return err
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return h, err
}

// checkFile opens the file at path as a store and runs the full check.
func checkFile(path string, opts Options) error {
	db, err := openDB(path, opts, false)
	if err != nil {
		return err
	}
	err = checkDB(db)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}

// swap replaces the open file with the checked file tmp. It runs on the
// writer goroutine, so no write transaction is open.
func (s *BoltStore) swap(tmp string) error {
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	if s.db != nil {
		if err := s.db.Close(); err != nil {
			s.log.Warn("close before restore", "err", err)
		}
		s.db = nil
	}
	renameErr := os.Rename(tmp, s.path)
	if renameErr == nil {
		renameErr = syncDir(filepath.Dir(s.path))
	}
	// Open whatever is in place now: the restored file, or the old one
	// if the rename failed, so that the store stays usable either way.
	db, err := openDB(s.path, s.opts, false)
	if err != nil {
		s.log.Error("reopen after restore", "err", err)
		return errors.Join(renameErr, fmt.Errorf("reopen: %w", err))
	}
	// A snapshot or backup may come from a binary that did not keep the
	// dispatch indexes.
	if err := ensureIndexes(db, s.log); err != nil {
		s.log.Error("reopen after restore", "err", err)
		_ = db.Close()
		return errors.Join(renameErr, fmt.Errorf("reopen: %w", err))
	}
	s.db = db
	s.loadFormat()
	if renameErr == nil {
		s.stopped = nil // the file whose last commit was in doubt is gone
	}
	return renameErr
}

// Check runs bbolt's consistency check and then checks that the content
// agrees with itself: every record decodes, every unfinished ticket is in
// its service's FIFO index and every index entry names an unfinished
// ticket, idempotency keys, bodies and replies belong to existing tickets,
// and the state counters match the tickets. Problems are returned as one
// error wrapping ErrCorrupt.
//
// Check runs on the writer goroutine (bbolt's check is not safe beside a
// concurrent write transaction), so writes wait while it runs: on a large
// store, run it at quiet times.
func (s *BoltStore) Check(ctx context.Context) error {
	return s.control(ctx, func() error {
		if s.db == nil {
			return ErrClosed
		}
		return checkDB(s.db)
	})
}

func checkDB(db *bolt.DB) error {
	if m, err := latestMeta(db.Path()); err == nil && m.alone {
		return checkAtValidMeta(db.Path(), m)
	}
	f, err := os.Open(db.Path())
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	defer f.Close()
	return checkDBFile(db, f)
}

// checkAtValidMeta checks the file at path, one of whose meta pages is
// not valid (m is the other), as bbolt opened it: at m. bbolt's check
// reads both meta pages and stops at the first with a damaged header
// (a torn or zeroed page), so it runs on a copy whose invalid meta page
// is the valid one under its own page id. The copy is made beside the
// file (on its file system: cloned where that can) and unlinked at once,
// so that it is gone when the check ends, or the process is killed.
func checkAtValidMeta(path string, m boltMeta) error {
	src, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	defer src.Close()
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".check-*")
	if err != nil {
		return fmt.Errorf("check: a copy to check at the valid meta page: %w", err)
	}
	_ = os.Remove(f.Name())
	owned := true
	defer func() {
		if owned {
			_ = f.Close()
		}
	}()
	page := make([]byte, m.pageSize)
	bad := 1 - m.page
	_, err = io.Copy(f, src)
	if err == nil {
		_, err = src.ReadAt(page, int64(m.page*m.pageSize))
	}
	if err == nil {
		binary.NativeEndian.PutUint64(page, bad) // the page header's id
		_, err = f.WriteAt(page, int64(bad*m.pageSize))
	}
	if err != nil {
		return fmt.Errorf("check: a copy to check at the valid meta page: %w", err)
	}
	owned = false // bbolt closes it
	db, err := boltOpenFile(path, f, &bolt.Options{ReadOnly: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	defer db.Close()
	return checkDBFile(db, f)
}

// InvalidMetaPage reports whether one of the two meta pages of the store
// file at path is not valid, and the transaction of the other, at which
// the file opens (the previous commit): either a meta write torn by a
// crash or power cut (that commit was never acknowledged) or a disk that
// damaged the newest page (its commit is lost). From the pages alone the
// two cannot be told apart.
func InvalidMetaPage(path string) (validTx uint64, invalid bool) {
	m, err := latestMeta(path)
	if err != nil || !m.alone {
		return 0, false
	}
	return m.txid, true
}

// checkDBFile is checkDB of db, whose file f is: its pages are walked
// first (walkPages), as bbolt's check, in a goroutine of its own, recovers
// from its assertions but not from a page it reads past its map.
func checkDBFile(db *bolt.DB, f *os.File) (err error) {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	size := fi.Size()
	if err := walkPages(f); err != nil {
		return fmt.Errorf("check: %w", err)
	}
	defer func() {
		if r := recover(); r != nil { // bbolt panics on some damaged pages
			err = fmt.Errorf("check: %w: bbolt: %v", ErrCorrupt, r)
		}
	}()
	var errs []error
	err = db.View(func(tx *bolt.Tx) error {
		for e := range tx.Check() {
			if len(errs) < maxCheckErrors {
				errs = append(errs, e)
			}
		}
		if len(errs) > 0 {
			return nil // the content cannot be trusted for the next step
		}
		if err := checkLayout(tx, size); err != nil {
			if errors.Is(err, ErrUnsupported) {
				// A newer titanic's file, not a damaged one.
				return err
			}
			errs = append(errs, err)
			return nil
		}
		errs = checkContent(tx)
		return nil
	})
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("check: %w: %w", ErrCorrupt, errors.Join(errs...))
	}
	return nil
}

// checkContent checks the invariants between buckets (see Check).
func checkContent(tx *bolt.Tx) []error {
	var errs []error
	add := func(format string, args ...any) {
		if len(errs) < maxCheckErrors {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	var (
		tickets = tx.Bucket(ticketsBucket)
		bodies  = tx.Bucket(bodiesBucket)
		replies = tx.Bucket(repliesBucket)
		idem    = tx.Bucket(idemBucket)
		fifo    = tx.Bucket(fifoBucket)
		next    = binary.BigEndian.Uint64(tx.Bucket(metaBucket).Get(seqKey))
		counted = make(map[countKey]int)
	)
	_ = tickets.ForEach(func(k, v []byte) error {
		if len(k) != len(ID{}) {
			add("ticket key of %d bytes", len(k))
			return nil
		}
		t, err := decodeTicket(ID(k), v)
		if err != nil {
			add("%v", err)
			return nil
		}
		counted[countKey{t.Service, t.State}]++
		if t.Seq >= next {
			add("ticket %s: seq %d not below next seq %d", t.ID, t.Seq, next)
		}
		if _, err := decodeFrames(bodies.Get(k)); err != nil {
			add("ticket %s: body: %v", t.ID, err)
		}
		if r := replies.Get(k); r != nil {
			if _, err := decodeFrames(r); err != nil {
				add("ticket %s: reply: %v", t.ID, err)
			}
			if t.State != StateDone {
				add("ticket %s: %s but has a reply", t.ID, t.State)
			}
		} else if t.State == StateDone {
			add("ticket %s: done without a reply", t.ID)
		}
		if !t.State.Final() {
			b := fifo.Bucket([]byte(t.Service))
			if b == nil || !bytes.Equal(b.Get(seqKeyOf(t.Seq)), k) {
				add("ticket %s: %s but not in the fifo index of %q", t.ID, t.State, t.Service)
			}
		}
		if t.IdemKey != "" && !bytes.Equal(idem.Get([]byte(t.IdemKey)), k) {
			add("ticket %s: idempotency key %q names another ticket", t.ID, t.IdemKey)
		}
		return nil
	})
	_ = fifo.ForEach(func(name, v []byte) error {
		b := fifo.Bucket(name)
		if v != nil || b == nil {
			add("fifo entry %q is not a bucket", name)
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			t, err := decodeTicket(ID{}, tickets.Get(v))
			if len(k) != 8 || len(v) != len(ID{}) || err != nil || t.State.Final() ||
				t.Service != string(name) || t.Seq != binary.BigEndian.Uint64(k) {
				add("fifo entry %x of service %q does not name an unfinished ticket of that service and seq", k, name)
			}
			return nil
		})
	})
	_ = idem.ForEach(func(k, v []byte) error {
		t, err := decodeTicket(ID{}, tickets.Get(v))
		if len(v) != len(ID{}) || err != nil || t.IdemKey != string(k) {
			add("idempotency key %q names a ticket without that key", k)
		}
		return nil
	})
	for name, b := range map[string]*bolt.Bucket{"body": bodies, "reply": replies} {
		_ = b.ForEach(func(k, _ []byte) error {
			if tickets.Get(k) == nil {
				add("%s %x without a ticket", name, k)
			}
			return nil
		})
	}
	checkIndexes(tx, add)
	stored := make(map[countKey]int)
	_ = tx.Bucket(countsBucket).ForEach(func(k, v []byte) error {
		if len(k) < 1 || len(v) != 8 {
			add("counter entry %x", k)
			return nil
		}
		stored[countKey{string(k[1:]), State(k[0])}] = int(binary.BigEndian.Uint64(v))
		return nil
	})
	keys := slices.Collect(maps.Keys(counted))
	for k := range stored {
		if _, ok := counted[k]; !ok {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		if counted[k] != stored[k] {
			add("service %q: %d %s tickets, counter says %d", k.service, counted[k], k.state, stored[k])
		}
	}
	return errs
}

// ctxReader and ctxWriter end a long copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// Reset replaces the store's whole content with an empty store, as if the
// file were new: a replica that must drop a history its peers do not share
// (see store/replica Node.Resync) resets and catches up from them.
func (s *BoltStore) Reset(ctx context.Context) error {
	dir, base := filepath.Split(s.path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, base+".reset-*")
	if err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	tmp := f.Name()
	_ = f.Close()
	_ = os.Remove(tmp)
	defer os.Remove(tmp) // gone already once renamed
	if err := createDB(tmp, s.opts); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	if err := s.control(ctx, func() error { return s.swap(tmp) }); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	s.log.Warn("store reset to empty")
	return nil
}

// Replication is the replication bookkeeping a store carries from the
// cluster it belonged to (see ResetReplication).
type Replication struct {
	// Applied is the highest raft log index the store applied.
	Applied uint64
	// Epochs is the number of epoch records (the applied history);
	// OldTerms the number of entry-term records of a first-release store.
	Epochs, OldTerms int
	// Journal is the number of solo journal records (a pair node).
	Journal int
	// Handovers is the number of split-brain handovers the store took
	// (see OpHandover): their names are made of raft indexes, which a new
	// cluster counts from 1 again, so a new handover could bear an old
	// one's name and have its first ops left out as taken.
	Handovers int
	// ClusterVersion is the cluster version the old cluster had raised
	// (0: none recorded). The new cluster's members may run other
	// releases: it raises its own once they have reported.
	ClusterVersion int
}

// IsZero reports whether r records nothing: a store that never belonged
// to a replicated cluster, or one that was reset.
func (r Replication) IsZero() bool { return r == Replication{} }

// ResetReplication clears, in one transaction, the replication bookkeeping
// of the cluster the store belonged to: the applied index, the applied
// history (epochs, and a first-release store's entry terms), the solo
// journal, the handovers taken and the cluster version. Tickets, bodies, replies, idempotency keys, the FIFO index, the
// counters and the sequence counter are left as they are. It returns what
// was cleared.
//
// It is for a store that starts a new cluster (titanic restore): a new
// raft log starts at index 1, so a store that says it applied index N
// would skip the new log's first N entries, and an old history makes the
// new cluster's first terms look like a fork. Never call it on a member of
// a running cluster: its peers would replay entries it already holds.
func (s *BoltStore) ResetReplication(ctx context.Context) (Replication, error) {
	var r Replication
	err := s.updateAside(ctx, func(tx *bolt.Tx) error {
		var err error
		if r, err = clearReplication(tx); err != nil {
			return err
		}
		// Tickets are untouched: indexes that were current stay so.
		return remarkIndexed(tx)
	})
	if err != nil {
		return Replication{}, fmt.Errorf("reset replication: %w", err)
	}
	if !r.IsZero() {
		s.log.Warn("replication bookkeeping cleared", "applied", r.Applied, "epochs", r.Epochs, "old_terms", r.OldTerms, "journal", r.Journal, "cluster_version", r.ClusterVersion)
	}
	return r, nil
}

// updateAside runs fn in a write transaction of its own, outside the writer's
// batches (between two of its commits), for what the store writes other
// than ops: a commit that fails once its data is written stops writes, as
// the writer's does (afterFailedCommit).
func (s *BoltStore) updateAside(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	return s.control(ctx, func() error {
		switch {
		case s.db == nil:
			return ErrClosed
		case s.stopped != nil:
			return s.stopped
		}
		var (
			txid    int
			written bool // an error now comes from the commit
		)
		err := s.db.Update(func(tx *bolt.Tx) error {
			txid = tx.ID()
			if err := fn(tx); err != nil {
				return err
			}
			written = true
			return nil
		})
		if err != nil && written {
			s.afterFailedCommit(txid, err)
		}
		return err
	})
}

// clearReplication deletes the bookkeeping ResetReplication names, and
// returns what it deleted.
func clearReplication(tx *bolt.Tx) (Replication, error) {
	var r Replication
	meta := tx.Bucket(metaBucket)
	if v := meta.Get(appliedKey); v != nil {
		if len(v) == 8 {
			r.Applied = binary.BigEndian.Uint64(v)
		}
		if err := meta.Delete(appliedKey); err != nil {
			return r, fmt.Errorf("delete applied index: %w", err)
		}
	}
	if v := meta.Get(clusterKey); v != nil {
		if len(v) == 8 {
			r.ClusterVersion = int(min(binary.BigEndian.Uint64(v), 1<<20))
		}
		if err := meta.Delete(clusterKey); err != nil {
			return r, fmt.Errorf("delete cluster version: %w", err)
		}
	}
	var err error
	if r.OldTerms, err = deleteOldTerms(meta); err != nil {
		return r, err
	}
	// A yielding node's forms of its handovers go with the handovers:
	// their fork points are the old log's indexes.
	var taken, forms int // marks of Journal's records: not counted apart
	for _, x := range []struct {
		name []byte
		n    *int
	}{{epochsBucket, &r.Epochs}, {soloBucket, &r.Journal}, {soloTakenBucket, &taken}, {handoversBucket, &r.Handovers}, {formsBucket, &forms}} {
		b := tx.Bucket(x.name)
		if b == nil {
			continue
		}
		*x.n = b.Stats().KeyN
		if err := tx.DeleteBucket(x.name); err != nil {
			return r, fmt.Errorf("delete %s bucket: %w", x.name, err)
		}
	}
	return r, nil
}
