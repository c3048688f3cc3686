package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/titanicmq/titanic/internal/leftovers"
)

// Bucket layout. Every bucket is top level except the per-service FIFO
// buckets, which are nested in fifoBucket.
//
//	meta     "format" → uint32 formatVersion; "seq" → uint64 next Seq;
//	         "applied" → uint64 log index; "cluster" → uint64 cluster version
//	tickets  ID → ticket record without body (encodeTicket)
//	bodies   ID → request frames (encodeFrames)
//	replies  ID → reply frames (encodeFrames)
//	idem     idempotency key → ID
//	fifo     service → bucket of big-endian Seq → ID, unfinished tickets only
//	counts   state byte + service → uint64 number of tickets
//	ix*      the dispatch indexes (index.go), not required by checkLayout
//
// Bodies live apart from ticket records so that status lookups, List and
// Unfinished (which runs at every start-up) never page in request bodies.
var (
	metaBucket    = []byte("meta")
	ticketsBucket = []byte("tickets")
	bodiesBucket  = []byte("bodies")
	repliesBucket = []byte("replies")
	idemBucket    = []byte("idem")
	fifoBucket    = []byte("fifo")
	countsBucket  = []byte("counts")

	allBuckets = [][]byte{metaBucket, ticketsBucket, bodiesBucket, repliesBucket, idemBucket, fifoBucket, countsBucket}

	formatKey = []byte("format")
	// byRaiseKey marks a file at formatV2 only because its cluster's
	// version was raised: no op of a newer kind applied yet.
	byRaiseKey = []byte("format-by-raise")
	seqKey     = []byte("seq")
	// appliedKey holds the highest replicated-log index applied (ApplyAt).
	appliedKey = []byte("applied")
	// clusterKey holds the cluster version (Entry.ClusterVersion); no
	// key is version 1, the first release's.
	clusterKey = []byte("cluster")
)

// Data format versions, written in the meta bucket. A store is made in
// formatV1, which every release reads. formatV2 has the same layout; it
// marks a store that applied an op of a kind the first release does not
// read (OpAdopt, OpRetry...), or a raise of its cluster's version (after
// which any member may write such ops): its replicated log and its peers
// may hold such ops, and that release skips log entries it cannot read
// instead of stopping. A node rolled back to it must not start on the
// store, and it does not: it refuses any format but its own. Until a
// feature that needs a newer kind is used (a single node) or the cluster
// version is raised (a pair or group), a rollback works. Open refuses a newer
// format than this build's (ErrUnsupported) and anything else unknown
// (ErrCorrupt).
const (
	formatV1      uint32 = 1
	formatV2      uint32 = 2
	formatVersion        = formatV2
)

// FormatVersion is the newest data file format this build reads and writes
// (`titanic version` prints it). Buckets added without a new format (the
// epoch history, the solo journal) are ignored by builds that predate
// them, so it moves only when an older build would misread the file, or
// must not run on it.
const FormatVersion = formatVersion

// Defaults for Options.
const (
	DefaultLockTimeout = 5 * time.Second
	DefaultMaxBatch    = 4096
	// DefaultMaxBatchBytes bounds a batch's bytes (OpsSize). In a
	// replicated store one batch is one raft log entry, sent to a
	// follower inside one AppendEntries RPC (with up to
	// replica.MaxAppendEntries others) and stored as one raft-boltdb
	// value: 4 MiB keeps an entry well below bbolt's value limit and an
	// RPC of a few entries sendable within the transport's timeout on a
	// slow link, while still holding thousands of ordinary submits, so
	// it costs no fsyncs in practice. A single op larger than the bound
	// still goes, alone.
	DefaultMaxBatchBytes = 4 << 20
)

// Options configures a BoltStore. The zero value is a durable store with
// the defaults below.
type Options struct {
	// NoSync skips the fsync at each commit: Apply returns before the data
	// is on disk and a power failure can lose acknowledged ops. For tests
	// and benchmarks only.
	NoSync bool
	// LockTimeout bounds the wait for the file lock when another process
	// has the store open. Zero means DefaultLockTimeout: bbolt's own zero
	// (wait forever) would hang a second broker started by mistake.
	LockTimeout time.Duration
	// Logger receives the store's logs; nil means slog.Default().
	Logger *slog.Logger
	// ObserveCommit, when set, is told how long each write transaction
	// took to commit (writing and fsyncing the pages).
	ObserveCommit func(time.Duration)
	// MaxBatch caps the ops one write transaction takes (a single Apply is
	// never split, so one larger call still commits alone). Zero means
	// DefaultMaxBatch.
	MaxBatch int
	// MaxBatchBytes caps the bytes (OpsSize) one write transaction takes,
	// beside MaxBatch; again a single larger Apply commits alone. Zero
	// means DefaultMaxBatchBytes.
	MaxBatchBytes int

	// Linger is how long the writer may hold ops that only record what
	// workers did (dispatch marks, replies, requeues, failures, handed
	// over with ApplyAsync: nobody waits on them) for more to commit with
	// them; ops anyone waits on (every Apply, a submit, a close...) end
	// the wait at once and take those along, as does LingerOps of them
	// queued. A worker never waits on the disk, so with few workers each
	// reply was a commit of its own: two fdatasyncs and most of the
	// broker's CPU per job. Zero: no wait (the default of the package;
	// the broker's config sets it).
	Linger time.Duration

	// freelistSyncAbove is the data in use from which commits may
	// write bbolt's free page list (see syncFreelist); zero means
	// freelistSyncAbove. Tests lower it.
	freelistSyncAbove int64
}

func (o Options) withDefaults() Options {
	if o.freelistSyncAbove <= 0 {
		o.freelistSyncAbove = freelistSyncAbove
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if o.Linger < 0 {
		o.Linger = 0
	}
	return o
}

// BoltStore is the single-node Store: one bbolt file, written by one writer
// goroutine that group-commits every Apply and ApplyAsync queued while the
// previous commit was running, so one fsync covers many callers. Reads run concurrently in
// bbolt read transactions. All methods are safe for concurrent use.
type BoltStore struct {
	path string
	opts Options
	log  *slog.Logger

	// dbMu guards db: read methods hold it shared for the length of their
	// transaction; the writer holds it exclusively to swap the file in
	// Restore, and Close to close it. db is nil once closed.
	dbMu sync.RWMutex
	db   *bolt.DB

	// mu guards the queue of Apply calls (and control requests) waiting
	// for the writer, and closed.
	mu     sync.Mutex
	queue  []*request
	closed bool
	wake   chan struct{} // capacity 1: "the queue may be non-empty"
	done   chan struct{} // closed when the writer has returned

	// finished collects the ApplyAsync calls of the commit in progress
	// (writer only); completions carries them, commit by commit, to the
	// completer goroutine, which closes completed when it returns.
	finished    []completion
	completions chan []completion
	completed   chan struct{}

	// stopped, once set, fails every later commit: see afterFailedCommit.
	// Only the writer goroutine touches it. writesStopped is closed when
	// it is first set (stopOnce).
	stopped       error
	writesStopped chan struct{}
	stopOnce      sync.Once

	// bufs are the write transactions' key buffer and value arena
	// (arena.go); only the writer goroutine touches them.
	bufs txnBufs
	// prefill writes zeros ahead of the file's high-water mark, from the
	// size the last commit began with (grown); writer only (prefill.go).
	prefill prefiller
	grown   int64

	// failOp, set only by tests, makes applying an op fail as a bbolt
	// error would.
	failOp func(*Op) error

	// lingerTimer ends the writer's wait for company of lazy requests
	// (Options.Linger); writer only.
	lingerTimer *time.Timer

	commits atomic.Uint64
	applies atomic.Uint64
	ops     atomic.Uint64

	// newerFormat caches whether the data file is at formatV2 (see
	// NewerFormat), so that callers on the broker's loop read no store.
	newerFormat atomic.Bool
	// newerKinds caches whether an op of a newer kind was applied (see
	// NewerKinds).
	newerKinds atomic.Bool
}

var _ Store = (*BoltStore)(nil)

// Open opens the store at path, creating it when the path does not exist.
// An existing file must be a complete titanic store: an empty, truncated or
// foreign file gives an error wrapping ErrCorrupt and is left untouched.
// When another process holds the file, Open fails after opts.LockTimeout.
func Open(path string, opts Options) (*BoltStore, error) {
	opts = opts.withDefaults()
	db, err := openDB(path, opts, true)
	if err != nil {
		return nil, err
	}
	log := opts.Logger.With("component", "store", "path", path)
	if m, err := latestMeta(path); err == nil && m.alone {
		// bbolt opens at the other page. From the pages alone this is
		// either a meta write torn by a crash (that commit was never
		// acknowledged: nothing is lost) or a disk that damaged the
		// newest page (its commit is lost). Said, not refused: a power
		// cut must not stop the node.
		log.Warn("one of the data file's two meta pages is not valid: opened at the other, the previous commit; after a crash or power cut this is expected, otherwise the disk damaged the file and its last commit is lost (run titanic check, restore a backup)",
			"txid", m.txid)
	}
	removeLeftovers(path, log)
	if err := ensureIndexes(db, log); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &BoltStore{
		path: path,
		opts: opts,
		log:  log,
		db:   db,
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
		// A few commits may wait for their dones while the writer goes
		// on; beyond that the writer waits for the completer.
		completions:   make(chan []completion, 8),
		completed:     make(chan struct{}),
		writesStopped: make(chan struct{}),
	}
	s.loadFormat()
	go s.run()
	go s.complete()
	return s, nil
}

// NewerFormat reports whether the data file is at format 2: an op of a
// kind the first release does not read was applied (or the file was
// restored from one that had), so that release will not open it any more
// and a rollback to it is over anyway. Optional fields that would
// otherwise end it (Op.Worker) are kept only from then on. It reads no
// store.
func (s *BoltStore) NewerFormat() bool { return s.newerFormat.Load() }

// NewerKinds reports whether an op of a newer kind than the first
// release's was applied: a file at format 2 only because its cluster's
// version was raised has none. Optional newer fields (Op.Worker) are
// written only from then on, so that a raise alone writes no entry the
// first release skips (a node rolled back as the raise committed, before
// its store applied it, would skip them). It reads no store.
func (s *BoltStore) NewerKinds() bool { return s.newerKinds.Load() }

// loadFormat sets the NewerFormat cache from the open file (at Open and
// after the file was swapped). A file that cannot be read leaves it as it
// was: Open has checked the layout already.
func (s *BoltStore) loadFormat() {
	if s.db == nil {
		return
	}
	_ = s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(metaBucket)
		if v := meta.Get(formatKey); len(v) == 4 {
			s.newerFormat.Store(binary.BigEndian.Uint32(v) >= formatV2)
			s.newerKinds.Store(binary.BigEndian.Uint32(v) >= formatV2 && meta.Get(byRaiseKey) == nil)
		}
		return nil
	})
}

// Leadership implements Store: nil, a BoltStore is the only copy of its
// data (replicas apply to a BoltStore, but through replica.Node).
func (s *BoltStore) Leadership() Leadership { return nil }

// Close applies the Apply calls already queued, stops the writer and closes
// the file. Every later call, Close included, returns ErrClosed.
func (s *BoltStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	s.mu.Unlock()
	s.signal()
	<-s.done
	<-s.completed

	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	if s.db == nil { // a failed Restore left no file open
		return nil
	}
	if s.stopped == nil {
		s.saveFreelist()
	}
	err := s.db.Close()
	s.db = nil
	if err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// When commits write bbolt's list of free pages (as bbolt does by
// default) and when they leave it out (NoFreelistSync, see boltOptions).
//
// A file whose last commit left the list out has it rebuilt at the next
// Open by reading every page in use: ~0.5 ms per MiB in use in the page
// cache (80 ms for a 1.1 GB file with 130 MB in use, 0.25 s for 500 MB
// in use, 2.5-3 s for the 5.6 GB of 10,000,000 pending tickets), several
// times that from a cold disk. A broker that crashed or was killed pays
// it before it serves; so does, in bbolt v1.5, each commit that fails to
// write (a full disk: its rollback reloads the list from the last
// commit's page if there is one, else by the same rebuild; a transaction
// we abandon with an error is rolled back without either). A clean Close
// writes the list once (saveFreelist).
//
// Written at every commit, the list costs 8 bytes per free page, written
// and synced with the commit's pages: nothing measurable while few pages
// are free, ~25% of durable submits in BenchmarkApplySubmitDeep (small
// commits, 64 writers) with 146 MB free beside 590 MB in use (a 300 KB
// list), ~77% with 1 GB free (2 MB). Through the broker at 8,000,000
// pending with 1.1 GB free (2.4 MB): submits unchanged, dispatch 5-8%
// slower (`make backlog`).
//
// So a commit writes the list when the data in use reaches
// Options.freelistSyncAbove (freelistSyncAbove: below, the rebuild takes
// at most ~0.25 s warm, and each commit saves the list's page) and the
// free pages are at most 1/freelistMaxFreeShare of those in use. A file
// mostly free, as a drained backlog leaves it, goes without: its list
// would be long, and the rebuild reads only the part in use. `titanic
// compact` gives that space back.
const (
	freelistSyncAbove    = 512 << 20
	freelistMaxFreeShare = 2
)

// syncFreelist sets whether db's next commits write the free page list,
// from its data size (tx.Size: the high-water mark, free pages included)
// and its free page count. bbolt reads the flag at each commit, so it is
// set only while no write transaction runs: by openDB, and by the writer
// after each of its commits.
func syncFreelist(db *bolt.DB, size int64, opts Options) {
	st := db.Stats()
	pageSize := int64(db.Info().PageSize)
	free := int64(st.FreePageN + st.PendingPageN)
	inUse := size/pageSize - free
	db.NoFreelistSync = inUse*pageSize < opts.freelistSyncAbove || free*freelistMaxFreeShare > inUse
}

// saveFreelistAbove is the data size above which Close saves the free
// page list when the last commit did not: rebuilding it for a file of
// 64 MiB takes some tens of milliseconds.
const saveFreelistAbove = 64 << 20

// saveFreelist writes the free page list in one last commit if the file
// is past saveFreelistAbove and its last commit did not write the list
// (see syncFreelist), so that the next Open reads the list instead of
// reading every page in use to rebuild it: once, whatever the list's
// length. A store that was not closed (a crash) and whose commits did
// not write the list pays that rebuild at its next Open. The writer has
// stopped: no other write transaction runs.
func (s *BoltStore) saveFreelist() {
	var size int64
	if err := s.db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil }); err != nil || size < saveFreelistAbove {
		return // the scan of a small file is quick: its layout stays as the commits left it
	}
	if m, err := latestMeta(s.path); err == nil && m.freelist != boltNoFreelist {
		return // the last commit wrote it
	}
	s.db.NoFreelistSync = false
	err := s.db.Update(remarkIndexed)
	if err != nil {
		s.log.Warn("free page list not saved: the next open rebuilds it", "err", err)
	}
}

func boltOptions(o Options) *bolt.Options {
	return &bolt.Options{
		Timeout: o.LockTimeout,
		NoSync:  o.NoSync,
		// The freelist is rebuilt by a scan at open instead of being
		// written at every commit: one page less per commit, which gave
		// 10-20% more durable submits/s in BenchmarkApplySubmit with 64
		// writers (about 25,000 against 21,000 on a 2-core VM), at the
		// price of a slower open of a large file that was not closed
		// cleanly; so only while the data in use is small or the file
		// mostly free (syncFreelist, which openDB calls). The
		// map freelist avoids the array's linear scans once the file is
		// fragmented.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	}
}

// removeLeftovers removes what a crash left beside the store at path: a
// snapshot being received (RestoreChecked) or an empty store being built
// (Reset), each as large as a whole store at most, one more per crash, on
// the disk the store needs to grow. Called with the store's lock held:
// no other process is writing them.
func removeLeftovers(path string, log *slog.Logger) {
	base := filepath.Base(path)
	left := func(name string) bool {
		return strings.HasPrefix(name, base+".restore-") || strings.HasPrefix(name, base+".reset-")
	}
	_ = leftovers.Remove(filepath.Dir(path), left, nil, log,
		"removed a file a crash left beside the store (an unfinished snapshot install or reset)",
		"a file a crash left beside the store not removed")
}

// mmapRoom is the mapping a store opens with: room for the file to
// double, 8 GiB at least. bbolt remaps when a commit grows the file past
// its mapping, under a lock every read transaction holds shared: a long
// read (a raft snapshot's or a backup's copy of the whole store, 13 s at
// 4.7 GB) then stalled that commit, so every acknowledgement, and every
// read begun after it. A mapping past the file's end costs address
// space only; under a limit on it (RLIMIT_AS) a quarter of the limit is
// taken at most.
func mmapRoom(size int64) int {
	room := max(int64(8<<30), 2*size)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_AS, &lim); err == nil && lim.Cur != ^uint64(0) {
		room = min(room, int64(lim.Cur/4))
	}
	return int(max(room, 0))
}

// openDB opens the file at path after checking that bbolt can map it
// safely, then checks that it holds our layout.
func openDB(path string, opts Options, create bool) (*bolt.DB, error) {
	opts = opts.withDefaults()
	for tries := 1; ; tries++ {
		db, err := openDBOnce(path, opts, create)
		if !errors.Is(err, errReplaced) || tries == 3 {
			return db, err
		}
	}
}

// errReplaced: the file at path was replaced while bbolt waited for its
// lock.
var errReplaced = errors.New("the file was replaced while this waited for its lock (a compaction or a restore); try again")

func openDBOnce(path string, opts Options, create bool) (*bolt.DB, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		if err := createDB(path, opts); err != nil {
			return nil, err
		}
		fi, err = os.Stat(path)
	}
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("open store %s: not a regular file", path)
	}
	if err := precheck(path, fi.Size()); err != nil {
		return nil, err
	}
	bo := boltOptions(opts)
	bo.InitialMmapSize = mmapRoom(fi.Size())
	db, err := boltOpen(path, bo)
	if err != nil {
		return nil, err
	}
	// bbolt waited for the lock of the file it opened. A compaction
	// renames its copy over path and only then lets go of the old file:
	// the file locked may be the old one, under another name now, and
	// what this store acknowledged would be lost with it. Open again.
	if now, err := os.Stat(path); err != nil || !os.SameFile(fi, now) {
		_ = db.Close()
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return nil, fmt.Errorf("open store %s: %w", path, errReplaced)
	}
	var size int64
	if err := db.View(func(tx *bolt.Tx) error { size = tx.Size(); return checkLayout(tx, fi.Size()) }); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	syncFreelist(db, size, opts)
	return db, nil
}

// boltOpen calls bolt.Open, turning its format errors into ErrCorrupt.
// bbolt panics on some damaged pages; that is recovered here too, so that a
// damaged file is reported instead of crashing the process.
//
// It takes the file's lock itself (as bbolt would: exclusive unless
// o.ReadOnly, waiting up to o.Timeout) and hands bbolt the locked file, so
// that its pages can be walked (walkPages) before bbolt reads them: bbolt
// would rebuild the free page list of a file that has none saved (the
// store's commits leave it out) in a goroutine of its own, whose panic on
// a damaged page no recover here reaches.
func boltOpen(path string, o *bolt.Options) (*bolt.DB, error) {
	f, err := lockFile(path, !o.ReadOnly, o.Timeout)
	if err != nil {
		return nil, boltOpenError(path, err)
	}
	return boltOpenFile(path, f, o)
}

// boltOpenFile is boltOpen of f, the file at path already open and locked
// (or a copy of it); bbolt closes it with the DB, and f is closed here if
// the open fails.
func boltOpenFile(path string, f *os.File, o *bolt.Options) (db *bolt.DB, err error) {
	if m, merr := latestMetaOf(f); merr == nil && (m.freelist == boltNoFreelist || o.ReadOnly) {
		// bbolt scans the tree for free pages at open (read-only: at the
		// first check).
		if err := walkPages(f); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	}
	bo := *o
	bo.OpenFile = func(string, int, os.FileMode) (*os.File, error) { return f, nil }
	defer func() {
		if r := recover(); r != nil {
			_ = f.Close() // and its lock: a later open in this process must not wait on it
			db, err = nil, fmt.Errorf("open store %s: %w: bbolt: %v", path, ErrCorrupt, r)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	db, err = bolt.Open(path, 0o600, &bo)
	if err != nil {
		return nil, boltOpenError(path, err)
	}
	return db, nil
}

// boltOpenError words an error of bolt.Open (or of lockFile) for path.
func boltOpenError(path string, err error) error {
	switch {
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch),
		errors.Is(err, berrors.ErrChecksum):
		return fmt.Errorf("open store %s: %w: %v", path, ErrCorrupt, err)
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("open store %s: locked by another process: %w", path, err)
	}
	return fmt.Errorf("open store %s: %w", path, err)
}

// createDB creates a fresh store at path. It is built under a temporary
// name and linked into place only when complete, so a crash during
// creation never leaves a file that Open would reject as corrupt.
func createDB(path string, opts Options) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, base+".init-*")
	if err != nil {
		return fmt.Errorf("create store %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Close(); err != nil {
		return fmt.Errorf("create store %s: %w", path, err)
	}
	bo := boltOptions(opts)
	bo.NoSync = false
	db, err := bolt.Open(tmp, 0o600, bo)
	if err != nil {
		return fmt.Errorf("create store %s: %w", path, err)
	}
	err = db.Update(initLayout)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create store %s: %w", path, err)
	}
	// Link fails if someone created path meanwhile; rename would clobber.
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // theirs; Open checks it like any existing file
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("create store %s: %w", path, err)
		}
	}
	return syncDir(dir)
}

func initLayout(tx *bolt.Tx) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	for _, name := range indexBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	meta := tx.Bucket(metaBucket)
	if err := meta.Put(formatKey, binary.BigEndian.AppendUint32(nil, formatV1)); err != nil {
		return err
	}
	if err := markIndexed(tx); err != nil {
		return err
	}
	return meta.Put(seqKey, binary.BigEndian.AppendUint64(nil, 1))
}

// checkLayout reports ErrCorrupt unless tx sees our buckets and format
// version, and the file holds every page the transaction refers to.
func checkLayout(tx *bolt.Tx, fileSize int64) error {
	if tx.Size() > fileSize {
		return fmt.Errorf("%w: file is %d bytes, data needs %d", ErrCorrupt, fileSize, tx.Size())
	}
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		return fmt.Errorf("%w: no meta bucket: not a titanic store", ErrCorrupt)
	}
	v := meta.Get(formatKey)
	if len(v) != 4 {
		return fmt.Errorf("%w: no format version: not a titanic store", ErrCorrupt)
	}
	if got := binary.BigEndian.Uint32(v); got > formatVersion {
		return fmt.Errorf("%w: data format %d, this build reads up to %d: run a newer titanic on it", ErrUnsupported, got, formatVersion)
	} else if got < formatV1 {
		return fmt.Errorf("%w: format version %d, this build reads %d to %d", ErrCorrupt, got, formatV1, formatVersion)
	}
	if len(meta.Get(seqKey)) != 8 {
		return fmt.Errorf("%w: no sequence counter", ErrCorrupt)
	}
	for _, name := range allBuckets {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("%w: bucket %s missing", ErrCorrupt, name)
		}
	}
	return nil
}

// bbolt's on-disk meta page (bbolt internal/common/meta.go, file format
// version 2): a 16-byte page header, then these fields in native byte
// order, the last being an FNV-64a checksum of those before it.
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	boltMetaOff    = 16 // page header size
	boltMetaLen    = 64
	boltNoFreelist = ^uint64(0)
)

type boltMeta struct {
	pageSize, root, freelist, pgid, txid uint64
	// alone: the other meta page was not valid (see Open).
	alone bool
	// page is the meta page this was read from, 0 or 1.
	page uint64
}

// readBoltMeta decodes the meta page at off, reporting false when it is
// missing, foreign or fails its checksum.
func readBoltMeta(f io.ReaderAt, off int64) (boltMeta, bool) {
	var b [boltMetaOff + boltMetaLen]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		return boltMeta{}, false
	}
	m := b[boltMetaOff:]
	ne := binary.NativeEndian
	if ne.Uint32(m[0:]) != boltMagic || ne.Uint32(m[4:]) != boltVersion {
		return boltMeta{}, false
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if h.Sum64() != ne.Uint64(m[56:]) {
		return boltMeta{}, false
	}
	return boltMeta{
		pageSize: uint64(ne.Uint32(m[8:])),
		root:     ne.Uint64(m[16:]),
		freelist: ne.Uint64(m[32:]),
		pgid:     ne.Uint64(m[40:]),
		txid:     ne.Uint64(m[48:]),
	}, true
}

// precheck refuses files that bbolt would map unsafely. bbolt treats an
// empty file as a new database (we would silently start empty), and it
// mmaps the file and touches pages up to the meta page's high-water mark:
// a page past the end of a truncated file raises SIGBUS, which Go cannot
// recover from. So the meta pages are read here first, as bbolt would pick
// them (the valid one with the higher transaction ID).
func precheck(path string, size int64) error {
	if size == 0 {
		return fmt.Errorf("open store %s: %w: empty file", path, ErrCorrupt)
	}
	m, err := latestMeta(path)
	if err != nil {
		return fmt.Errorf("open store %s: %w", path, err)
	}
	pageSize := int64(m.pageSize)
	if m.pgid < 2 || m.root >= m.pgid ||
		(m.freelist != boltNoFreelist && m.freelist >= m.pgid) {
		return fmt.Errorf("open store %s: %w: inconsistent meta page", path, ErrCorrupt)
	}
	if m.pgid > uint64(size)/m.pageSize || size < 2*pageSize {
		return fmt.Errorf("open store %s: %w: truncated: %d bytes, data needs %d pages of %d",
			path, ErrCorrupt, size, m.pgid, m.pageSize)
	}
	return nil
}

// latestMeta reads the meta page of the file at path that bbolt would
// use: the valid one with the higher transaction ID. An error wraps
// ErrCorrupt when neither is valid or the page size is implausible.
func latestMeta(path string) (boltMeta, error) {
	f, err := os.Open(path)
	if err != nil {
		return boltMeta{}, err
	}
	defer f.Close()
	return latestMetaOf(f)
}

// latestMetaOf is latestMeta of the file f.
func latestMetaOf(f io.ReaderAt) (boltMeta, error) {
	m0, ok0 := readBoltMeta(f, 0)
	pageSize := int64(os.Getpagesize())
	if ok0 {
		pageSize = int64(m0.pageSize)
	}
	if pageSize < 512 || pageSize > 1<<20 || pageSize&(pageSize-1) != 0 {
		return boltMeta{}, fmt.Errorf("%w: page size %d", ErrCorrupt, pageSize)
	}
	m1, ok1 := readBoltMeta(f, pageSize)
	switch {
	case ok0 && ok1 && m1.txid > m0.txid, !ok0 && ok1:
		m0 = m1
		m0.page = 1
	case !ok0 && !ok1:
		return boltMeta{}, fmt.Errorf("%w: not a bbolt file (no valid meta page)", ErrCorrupt)
	}
	if m0.pageSize != uint64(pageSize) {
		return boltMeta{}, fmt.Errorf("%w: inconsistent meta page", ErrCorrupt)
	}
	m0.alone = !ok0 || !ok1
	return m0, nil
}

// syncDir makes a rename or link in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	return nil
}
