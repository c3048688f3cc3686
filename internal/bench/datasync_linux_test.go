package bench

import (
	"os"
	"syscall"
)

// datasync is fdatasync, what bbolt calls on Linux.
func datasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
