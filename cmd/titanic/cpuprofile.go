//go:build cpuprofile

package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"time"
)

// A build for profiling only (`go build -tags cpuprofile`): with
// TITANIC_CPUPROFILE=DIR set, each process waits TITANIC_CPUPROFILE_AFTER
// (default 5s) for a benchmark's load to settle, then writes a CPU profile
// of the next TITANIC_CPUPROFILE_FOR (default 5s) to DIR/cpu.PID.pprof.
// The benchmarks kill their brokers, so the profile ends on a timer, not
// at exit.
func init() {
	dir := os.Getenv("TITANIC_CPUPROFILE")
	if dir == "" {
		return
	}
	dur := func(env string, def time.Duration) time.Duration {
		if d, err := time.ParseDuration(os.Getenv(env)); err == nil {
			return d
		}
		return def
	}
	after, span := dur("TITANIC_CPUPROFILE_AFTER", 5*time.Second), dur("TITANIC_CPUPROFILE_FOR", 5*time.Second)
	go func() {
		time.Sleep(after)
		f, err := os.Create(fmt.Sprintf("%s/cpu.%s.pprof", dir, strconv.Itoa(os.Getpid())))
		if err != nil {
			return
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return
		}
		time.Sleep(span)
		pprof.StopCPUProfile()
	}()
}
