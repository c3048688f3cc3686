//go:build linux || darwin || freebsd

package titanic

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Statfs reads the free space of the file system holding path: the blocks
// available to an unprivileged user, so that a broker run as root does
// not count the blocks the file system keeps for root as its own.
func Statfs(path string) (DiskSpace, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return DiskSpace{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := uint64(st.Bsize)
	return DiskSpace{Free: uint64(st.Bavail) * bs, Total: uint64(st.Blocks) * bs}, nil
}
