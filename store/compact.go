package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Compaction. bbolt reuses the pages of deleted records but never gives
// them back to the file system: a store that once held many large tickets
// keeps its size after they are closed. Compact copies the live records,
// bucket by bucket (bucket sequences included, and the meta bucket with
// its applied raft index and cluster version, so a replicated node's
// store is the same FSM state), into a new file, packed, checks the copy
// and swaps it in. It is offline: it holds the store's lock from before
// the copy until after the swap, so a broker can neither be running on
// the file nor start on it meanwhile.

// ErrInUse is returned by Compact when another process (a running broker)
// holds the store file.
var ErrInUse = errors.New("store file in use")

// CompactSuffix names the copy of the store file as it was before a
// compaction (kept beside it unless CompactOptions.RemoveOld).
const CompactSuffix = ".precompact"

// CompactOptions tune Compact.
type CompactOptions struct {
	// RemoveOld deletes the old file once the compacted one is in place
	// and checked; by default it is kept as path+CompactSuffix, for the
	// operator to delete once the broker serves from the new one.
	RemoveOld bool
	// LockTimeout bounds the wait for the store's lock; zero: 2 s.
	LockTimeout time.Duration
}

// CompactResult reports a compaction.
type CompactResult struct {
	Before, After int64  // file sizes in bytes
	Old           string // the kept old file ("" when removed)
}

// compactTxSize bounds the bytes copied per transaction of the new file,
// so that a large store is not copied in one transaction held in memory.
const compactTxSize = 64 << 20

// Compact rewrites the store file at path without its free pages. The new
// file is written beside it (path+".compact"), synced, checked
// (bbolt's check and the store's own, as Check, and a digest of every
// bucket, key, value and sequence that must equal the old file's), and
// renamed over path, the directory synced; only then is the old file
// dropped (kept as path+CompactSuffix unless opts.RemoveOld). It fails
// with ErrInUse when a broker holds the file. A failure before the rename
// leaves the store as it was.
func Compact(ctx context.Context, path string, opts CompactOptions) (CompactResult, error) {
	var res CompactResult
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 2 * time.Second
	}
	fi, err := os.Stat(path)
	if err != nil {
		return res, fmt.Errorf("compact: %w", err)
	}
	res.Before = fi.Size()
	// Read-write, so that the lock taken is bbolt's exclusive one: no
	// broker can open the file until the swap is done.
	// Without the free list's sync, as the store opens it: else bbolt
	// writes a transaction at open (to save a list the store's commits
	// leave out), and that transaction, made without the index mark,
	// would make the indexes look stale.
	src, err := boltOpen(path, &bolt.Options{Timeout: opts.LockTimeout, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return res, fmt.Errorf("compact: %w: %w", ErrInUse, err)
		}
		return res, fmt.Errorf("compact: %w", err)
	}
	srcOpen := true
	defer func() {
		if srcOpen {
			_ = src.Close()
		}
	}()
	// As openDB: the file locked must still be the one at path (another
	// compaction may have swapped it while this waited), or this would
	// compact an old file over a newer one.
	if now, err := os.Stat(path); err != nil || !os.SameFile(fi, now) {
		return res, fmt.Errorf("compact: %s: %w", path, errReplaced)
	}
	if err := checkDB(src); errors.Is(err, ErrUnsupported) {
		return res, fmt.Errorf("compact: %w", err)
	} else if err != nil {
		return res, fmt.Errorf("compact: the store fails its check, not compacted (restore a backup): %w", err)
	}
	want, err := digest(ctx, src)
	if err != nil {
		return res, fmt.Errorf("compact: %w", err)
	}

	tmp := path + ".compact"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("compact: %w", err)
	}
	keepTmp := false
	defer func() {
		if !keepTmp {
			_ = os.Remove(tmp)
		}
	}()
	// NoSync while copying (the file is not in use until it is renamed);
	// one Sync at the end makes it durable before the rename.
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		return res, fmt.Errorf("compact: %w", err)
	}
	err = bolt.Compact(dst, src, compactTxSize)
	if err == nil {
		err = dst.Sync()
	}
	if err == nil {
		err = verifyCopy(ctx, dst, want)
	}
	if err == nil {
		// The copy's transactions are numbered anew: its index mark
		// would name none of them, and the next open would rebuild
		// every dispatch index (and say an older binary wrote it).
		// When the old file's indexes were current, the copy's are.
		var current bool
		_ = src.View(func(tx *bolt.Tx) error { current, _ = indexesCurrent(tx); return nil })
		if current {
			if err = dst.Update(markIndexed); err == nil {
				err = dst.Sync()
			}
		}
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return res, fmt.Errorf("compact: the copy: %w", err)
	}
	if fi, err := os.Stat(tmp); err == nil {
		res.After = fi.Size()
	}

	// Swap: the old file gets a second name first, so that at every
	// instant path names a complete store (the old one, then the new).
	old := path + CompactSuffix
	if err := os.Remove(old); err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("compact: %w", err)
	}
	if err := os.Link(path, old); err != nil {
		return res, fmt.Errorf("compact: keep the old file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(old)
		return res, fmt.Errorf("compact: swap: %w", err)
	}
	keepTmp = true // renamed: nothing left to remove
	if err := syncDir(filepath.Dir(path)); err != nil {
		return res, fmt.Errorf("compact: swap: %w", err)
	}
	srcOpen = false
	if err := src.Close(); err != nil {
		return res, fmt.Errorf("compact: close the old file: %w", err)
	}
	res.Old = old
	if opts.RemoveOld {
		if err := os.Remove(old); err != nil {
			return res, fmt.Errorf("compact: remove the old file: %w", err)
		}
		res.Old = ""
		if err := syncDir(filepath.Dir(path)); err != nil {
			return res, fmt.Errorf("compact: %w", err)
		}
	}
	return res, nil
}

// verifyCopy checks the compacted copy as Check would and compares its
// digest with the original's.
func verifyCopy(ctx context.Context, db *bolt.DB, want [sha256.Size]byte) error {
	if err := checkDB(db); err != nil {
		return err
	}
	got, err := digest(ctx, db)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%w: the compacted copy's content differs from the original's", ErrCorrupt)
	}
	return nil
}

// digest hashes every bucket (its path and sequence), key and value of db,
// in bbolt's order, which is the keys' byte order in both files.
func digest(ctx context.Context, db *bolt.DB) (sum [sha256.Size]byte, err error) {
	h := sha256.New()
	n := 0
	var walk func(path [][]byte, b *bolt.Bucket) error
	walk = func(path [][]byte, b *bolt.Bucket) error {
		h.Write([]byte{'B'})
		writeFrames(h, path...)
		h.Write(binary.BigEndian.AppendUint64(nil, b.Sequence()))
		return b.ForEach(func(k, v []byte) error {
			if n++; n%4096 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			if v == nil {
				return walk(append(path[:len(path):len(path)], k), b.Bucket(k))
			}
			h.Write([]byte{'K'})
			writeFrames(h, k, v)
			return nil
		})
	}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return walk([][]byte{name}, b)
		})
	})
	if err != nil {
		return sum, fmt.Errorf("digest: %w", err)
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// writeFrames hashes each frame with its length, so that frames cannot
// run into each other.
func writeFrames(h hash.Hash, frames ...[]byte) {
	for _, f := range frames {
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(f))))
		h.Write(f)
	}
}
