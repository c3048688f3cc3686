//go:build !(linux || darwin || freebsd)

package titanic

import (
	"errors"
	"fmt"
)

// Statfs is not implemented on this platform: the disk reserve is not
// checked (the service logs it once).
func Statfs(path string) (DiskSpace, error) {
	return DiskSpace{}, fmt.Errorf("statfs %s: %w", path, errors.ErrUnsupported)
}
