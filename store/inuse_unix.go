//go:build unix

package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	berrors "go.etcd.io/bbolt/errors"
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

// WaitUnlocked waits until no process holds the store file at path (the
// lock Open takes), up to timeout, polling as bbolt's Open does; unlike
// Open, it heeds ctx: it returns ctx's error when ctx ends first, else
// nil once the file is free, missing or unreadable, or at the timeout:
// Open then says why (at the timeout, with its own wait, which also
// covers another process taking the file between this and Open).
// waiting, when not nil, is called once if the file is held at first.
func WaitUnlocked(ctx context.Context, path string, timeout time.Duration, waiting func()) error {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fd := int(f.Fd())
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			_ = syscall.Flock(fd, syscall.LOCK_UN)
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil
		}
		if waiting != nil {
			waiting()
			waiting = nil
		}
		if !time.Now().Before(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// lockFile opens the store file at path and takes the flock bbolt takes
// (exclusive, or shared), polling as bbolt does for up to timeout (zero:
// no bound), then failing with bbolt's ErrTimeout. bbolt, handed the file,
// finds its lock already held by it.
func lockFile(path string, exclusive bool, timeout time.Duration) (*os.File, error) {
	flag, how := os.O_RDONLY, syscall.LOCK_SH
	if exclusive {
		flag, how = os.O_RDWR, syscall.LOCK_EX
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	const retry = 50 * time.Millisecond // bbolt's flockRetryTimeout
	start := time.Now()
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		switch {
		case err == nil:
			return f, nil
		case !errors.Is(err, syscall.EWOULDBLOCK):
			_ = f.Close()
			return nil, err
		case timeout != 0 && time.Since(start) > timeout-retry:
			_ = f.Close()
			return nil, berrors.ErrTimeout
		}
		time.Sleep(retry)
	}
}
