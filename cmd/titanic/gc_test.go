package main

import (
	"runtime"
	"testing"
)

// The soft memory limit is a share of what availableMemory reads, so it
// must read a plausible amount where the broker runs (Linux).
func TestAvailableMemory(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/meminfo or the cgroup's memory.max")
	}
	n, from, err := availableMemory()
	if err != nil {
		t.Fatal(err)
	}
	if n < 64<<20 || from == "" {
		t.Fatalf("availableMemory = %d bytes from %q", n, from)
	}
}
