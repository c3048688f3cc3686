//go:build !linux

package bench

import "errors"

// attackerNice is the niceness the hostile clients' process asks for.
const attackerNice = 19

// lowerPriority is Linux only: per-thread niceness and affinity are read
// and set through /proc/self/task and sched_setaffinity.
func lowerPriority([]int) error {
	return errors.New("lowering the attackers' priority needs Linux")
}
