package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime/debug"
)

// bbolt's page layout (bbolt internal/common/page.go and inode.go): a
// 16-byte header (id, flags, count, overflow), then count 16-byte
// elements whose keys and values lie at pos bytes from the element.
const (
	boltPageHeader   = 16
	boltElemSize     = 16
	boltBranchPage   = 0x01
	boltLeafPage     = 0x02
	boltFreelistPage = 0x10
	boltBucketLeaf   = 0x01
	boltBucketHeader = 16 // root page id, sequence; an inline page follows when root is 0
)

// walkPages reads every page reachable from the meta page bbolt would use
// in the store file r (with plain reads, not bbolt's map) and checks what
// bbolt takes for granted when it reads them: each page is in the file
// below the high-water mark, reached once, names itself in its header, is
// of the type its place wants, and its elements, keys and values lie
// within it. bbolt asserts some of that with a panic and trusts the rest
// (a page past the map is a fault): at open it rebuilds the free page
// list by walking the tree in a goroutine of its own, where no recover
// reaches, so a zeroed page crashed the process (the broker, check,
// compact, restore) with a Go trace. The error wraps ErrCorrupt.
func walkPages(r io.ReaderAt) (err error) {
	m, err := latestMetaOf(r)
	if err != nil {
		return err
	}
	w := pageWalker{r: r, pageSize: m.pageSize, pgid: m.pgid, seen: make([]byte, m.pgid/8+1)}
	if f, ok := r.(*os.File); ok {
		// Read through a map of the file: a read call and a buffer per
		// page made the walk 1.6 times as long as bbolt's own free page
		// scan, which runs after it at the open that follows a crash.
		if data, unmap, merr := mapFile(f, m.pgid*m.pageSize); merr == nil {
			defer unmap()
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
			defer func() {
				// The file shrank under the map (another process).
				if r := recover(); r != nil {
					err = fmt.Errorf("%w: reading its pages: %v", ErrCorrupt, r)
				}
			}()
			w.data = data
		}
	}
	if m.freelist != boltNoFreelist {
		if err := w.freelist(m.freelist); err != nil {
			return fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
	}
	if err := w.tree(m.root); err != nil {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return nil
}

type pageWalker struct {
	r              io.ReaderAt
	data           []byte // the file mapped up to the high-water mark, or nil: read r
	pageSize, pgid uint64
	seen           []byte // a bit per page id
}

// read returns page id with its overflow pages.
func (w *pageWalker) read(id uint64) ([]byte, error) {
	if id < 2 || id >= w.pgid {
		return nil, fmt.Errorf("page %d: not between the meta pages and the high-water mark %d", id, w.pgid)
	}
	var p []byte
	if w.data != nil {
		if (id+1)*w.pageSize > uint64(len(w.data)) {
			return nil, fmt.Errorf("page %d: past the end of the file (%d bytes)", id, len(w.data))
		}
		p = w.data[id*w.pageSize : (id+1)*w.pageSize : (id+1)*w.pageSize]
	} else {
		p = make([]byte, w.pageSize)
		if _, err := w.r.ReadAt(p, int64(id*w.pageSize)); err != nil {
			return nil, fmt.Errorf("page %d: %w", id, err)
		}
	}
	ne := binary.NativeEndian
	if got := ne.Uint64(p); got != id {
		return nil, fmt.Errorf("page %d: its header names page %d (a zeroed or misplaced page)", id, got)
	}
	over := uint64(ne.Uint32(p[12:]))
	if id+over >= w.pgid {
		return nil, fmt.Errorf("page %d: %d overflow pages reach past the high-water mark %d", id, over, w.pgid)
	}
	for i := id; i <= id+over; i++ {
		if w.seen[i/8]&(1<<(i%8)) != 0 {
			return nil, fmt.Errorf("page %d: reached twice", i)
		}
		w.seen[i/8] |= 1 << (i % 8)
	}
	if over > 0 && w.data != nil {
		if (id+1+over)*w.pageSize > uint64(len(w.data)) {
			return nil, fmt.Errorf("page %d: its %d overflow pages reach past the end of the file (%d bytes)", id, over, len(w.data))
		}
		p = w.data[id*w.pageSize : (id+1+over)*w.pageSize : (id+1+over)*w.pageSize]
	} else if over > 0 {
		p = make([]byte, (1+over)*w.pageSize)
		if _, err := w.r.ReadAt(p, int64(id*w.pageSize)); err != nil {
			return nil, fmt.Errorf("page %d: %w", id, err)
		}
	}
	return p, nil
}

func (w *pageWalker) freelist(id uint64) error {
	p, err := w.read(id)
	if err != nil {
		return err
	}
	ne := binary.NativeEndian
	if f := ne.Uint16(p[8:]); f != boltFreelistPage {
		return fmt.Errorf("page %d: the free page list's page is of type %#x", id, f)
	}
	ids, n := p[boltPageHeader:], uint64(ne.Uint16(p[10:]))
	if n == 0xFFFF { // the count is the first element
		if len(ids) < 8 {
			return fmt.Errorf("page %d: free page list cut short", id)
		}
		n, ids = ne.Uint64(ids), ids[8:]
	}
	if n > uint64(len(ids))/8 {
		return fmt.Errorf("page %d: %d free page ids do not fit in the page", id, n)
	}
	for i := range n {
		if f := ne.Uint64(ids[8*i:]); f < 2 || f >= w.pgid {
			return fmt.Errorf("page %d: free page id %d not between the meta pages and the high-water mark %d", id, f, w.pgid)
		}
	}
	return nil
}

// tree walks the bucket tree whose root is page id.
func (w *pageWalker) tree(id uint64) error {
	p, err := w.read(id)
	if err != nil {
		return err
	}
	return w.node(p, id)
}

// node checks page p (page id, or an inline bucket's page in its parent
// id) and walks what it points to.
func (w *pageWalker) node(p []byte, id uint64) error {
	if len(p) < boltPageHeader {
		return fmt.Errorf("page %d: an inline bucket's page cut short", id)
	}
	ne := binary.NativeEndian
	flags, count := ne.Uint16(p[8:]), uint64(ne.Uint16(p[10:]))
	if boltPageHeader+count*boltElemSize > uint64(len(p)) {
		return fmt.Errorf("page %d: %d elements do not fit in it", id, count)
	}
	switch flags {
	case boltBranchPage:
		if count == 0 {
			return fmt.Errorf("page %d: a branch page without elements", id)
		}
		for i := range count {
			at := boltPageHeader + i*boltElemSize
			e := p[at:]
			if at+uint64(ne.Uint32(e))+uint64(ne.Uint32(e[4:])) > uint64(len(p)) {
				return fmt.Errorf("page %d: branch element %d lies outside the page", id, i)
			}
			if err := w.tree(ne.Uint64(e[8:])); err != nil {
				return err
			}
		}
	case boltLeafPage:
		for i := range count {
			at := boltPageHeader + i*boltElemSize
			e := p[at:]
			start := at + uint64(ne.Uint32(e[4:])) + uint64(ne.Uint32(e[8:]))
			end := start + uint64(ne.Uint32(e[12:]))
			if end > uint64(len(p)) {
				return fmt.Errorf("page %d: leaf element %d lies outside the page", id, i)
			}
			if ne.Uint32(e)&boltBucketLeaf == 0 {
				continue
			}
			v := p[start:end]
			if len(v) < boltBucketHeader {
				return fmt.Errorf("page %d: bucket element %d is cut short", id, i)
			}
			var err error
			if root := ne.Uint64(v); root != 0 {
				err = w.tree(root)
			} else {
				err = w.node(v[boltBucketHeader:], id)
			}
			if err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("page %d: of type %#x where a branch or leaf page belongs", id, flags)
	}
	return nil
}

// CheckBoltFile checks a bbolt file other than the store's (the raft log)
// before bbolt opens it, as Open checks the store's: it must not be
// truncated below its meta page's high-water mark (bbolt's map of it
// would fault) and its pages must be whole (walkPages). A missing or empty
// file passes: bbolt makes a new one. The error names the file and wraps
// ErrCorrupt when the file is damaged. The caller must hold the file
// (no other process writes it).
func CheckBoltFile(path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) || err == nil && fi.Size() == 0 {
		return nil
	}
	if err != nil {
		return err
	}
	if err := precheck(path, fi.Size()); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := walkPages(f); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
