package store

import (
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

// Prefilling the data file's growth room.
//
// bbolt grows its file with ftruncate, which leaves the new room a hole:
// the first write of each page past the high-water mark allocates its
// blocks, and the commit's fdatasync must then also commit the file
// system's journal (ext4: the new extents). Nearly every commit of a
// growing store writes such a page, so nearly every commit paid for a
// journal commit: 4-page commits measured 90 µs of CPU and 340-400 µs
// per fdatasync into a hole, 60 µs and 230-270 µs into written blocks
// (2-core VM, ext4). So the writer writes zeros over the room bbolt has
// reserved but not used yet, a little ahead of the high-water mark: one
// allocation per prefillChunk instead of one per commit.
//
// Only pages at or past the high-water mark are written, and only by the
// writer goroutine between its transactions: bbolt uses no such page
// (committed data, free pages and the pages of a transaction not
// committed are all below it) until the writer's next commit. The file's
// size is never changed (bbolt's own growth decides it), and nothing is
// synced here: the zeros reach the disk with the next commit's
// fdatasync, which allocates their blocks once. A failed write (a full
// disk) only stops the prefill for this file: bbolt's own writes meet
// the error as they did without it.
const (
	// prefillAhead: prefill when less room than this is written ahead of
	// the high-water mark...
	prefillAhead = 256 << 10
	// ...up to this much ahead (within the file's size).
	prefillChunk = 1 << 20
)

// prefiller writes zeros ahead of one bbolt file's high-water mark.
// Writer goroutine only.
type prefiller struct {
	db     *bolt.DB // the file it fills; another db starts over
	f      *os.File // written with WriteAt, never synced
	filled int64    // bytes from the start that are written (zeros or data)
	off    bool     // a write failed: leave this file alone
	zeros  []byte
}

// after runs after each commit of db, whose high-water mark was size
// when the commit began: it prefills when the room written ahead of it
// runs low.
func (p *prefiller) after(db *bolt.DB, size int64) {
	if db != p.db {
		p.reset(db)
	}
	if p.off || db.NoSync || p.filled-size >= prefillAhead {
		return
	}
	if err := p.fill(db); err != nil {
		p.off = true
		p.close()
	}
}

// fill writes zeros from the high-water mark (or what is filled past
// it) to prefillChunk past it, within the file.
func (p *prefiller) fill(db *bolt.DB) error {
	var hwm int64
	if err := db.View(func(tx *bolt.Tx) error { hwm = tx.Size(); return nil }); err != nil {
		return fmt.Errorf("prefill: high-water mark: %w", err)
	}
	if p.f == nil {
		f, err := os.OpenFile(db.Path(), os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("prefill: %w", err)
		}
		p.f = f
	}
	fi, err := p.f.Stat()
	if err != nil {
		return fmt.Errorf("prefill: %w", err)
	}
	from, to := max(p.filled, hwm), min(hwm+prefillChunk, fi.Size())
	if p.zeros == nil {
		p.zeros = make([]byte, 256<<10)
	}
	for from < to {
		n, err := p.f.WriteAt(p.zeros[:min(int64(len(p.zeros)), to-from)], from)
		from += int64(n)
		if err != nil {
			return fmt.Errorf("prefill: %w", err)
		}
	}
	p.filled = max(p.filled, from)
	return nil
}

// reset starts over for db (the writer opened another file: a restore).
func (p *prefiller) reset(db *bolt.DB) {
	p.close()
	p.db, p.filled, p.off = db, 0, false
}

// close releases the file (the writer stops, or the file changed).
func (p *prefiller) close() {
	if p.f != nil {
		_ = p.f.Close()
		p.f = nil
	}
}
