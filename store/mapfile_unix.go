//go:build unix

package store

import (
	"errors"
	"os"
	"syscall"
)

// mapFile maps the first n bytes of f read-only (fewer when the file is
// shorter); unmap releases them.
func mapFile(f *os.File, n uint64) (data []byte, unmap func(), err error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	size := min(uint64(fi.Size()), n)
	if size == 0 || size > 1<<46 {
		return nil, nil, errors.New("nothing to map")
	}
	data, err = syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return data, func() { _ = syscall.Munmap(data) }, nil
}
