//go:build !linux

package main

import "os"

// isTTY: without the terminal ioctl at hand, a character device is taken
// for a terminal.
func isTTY(*os.File) bool { return true }
