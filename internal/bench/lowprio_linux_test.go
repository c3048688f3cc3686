//go:build linux

package bench

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// attackerNice is the niceness of the hostile clients' process: the
// lowest CPU priority, so that the broker and the measured client (nice
// 0) take the cores whenever they want them, as they would if the
// attackers ran on other machines.
const attackerNice = 19

// lowerPriority gives every thread of this process the lowest CPU
// priority and, when cpus is not empty, pins them to those CPUs. On Linux
// both are per thread and a new thread inherits them from the thread that
// creates it, so once every existing thread is changed, threads made later
// (Go's, libzmq's I/O threads) are too. It runs until a pass finds no
// thread to change: a thread born during a pass is caught by the next.
func lowerPriority(cpus []int) error {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	done := map[int]bool{}
	for {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("list threads: %w", err)
		}
		changed := false
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || done[tid] {
				continue
			}
			if err := unix.Setpriority(unix.PRIO_PROCESS, tid, attackerNice); err != nil {
				// The thread may have exited since the listing.
				if _, serr := os.Stat("/proc/self/task/" + e.Name()); serr != nil {
					continue
				}
				return fmt.Errorf("setpriority of thread %d: %w", tid, err)
			}
			if len(cpus) > 0 {
				if err := unix.SchedSetaffinity(tid, &set); err != nil {
					return fmt.Errorf("sched_setaffinity of thread %d: %w", tid, err)
				}
			}
			done[tid], changed = true, true
		}
		if !changed {
			return nil
		}
	}
}
