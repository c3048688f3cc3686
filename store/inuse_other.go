//go:build !unix

package store

import (
	"context"
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
