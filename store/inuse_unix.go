//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// InUse reports whether a process (a running broker) has the store file
// at path open: bbolt holds an flock on the file while it is open, and
// Open takes it exclusively. A missing file is not in use.
func InUse(path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("in use: %w", err)
	}
	defer f.Close()
	fd := int(f.Fd())
	switch err := syscall.Flock(fd, syscall.LOCK_SH|syscall.LOCK_NB); {
	case errors.Is(err, syscall.EWOULDBLOCK):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("in use: %w", err)
	}
	_ = syscall.Flock(fd, syscall.LOCK_UN)
	return false, nil
}
