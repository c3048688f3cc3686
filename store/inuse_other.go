//go:build !unix

package store

import (
	"context"
	"os"
	"time"
)

// InUse reports whether a process has the store file at path open. This
// platform has no flock to ask: it reports false, and Open's lock still
// refuses a file in use.
func InUse(path string) (bool, error) { return false, nil }

// WaitUnlocked returns at once where there is no flock to ask (see the
// unix version): Open's own wait for the lock still applies.
func WaitUnlocked(ctx context.Context, path string, timeout time.Duration, waiting func()) error {
	return ctx.Err()
}

// lockFile opens the store file at path; bbolt, handed it, takes its lock.
func lockFile(path string, exclusive bool, _ time.Duration) (*os.File, error) {
	if exclusive {
		return os.OpenFile(path, os.O_RDWR, 0)
	}
	return os.Open(path)
}
