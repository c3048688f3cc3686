// Package soak holds the long load test of a Binary Star pair: the real
// titanic binary, primary and backup on two network-namespace hosts
// (internal/netns) with their default timings, and a third host running the
// load (64 clients submitting durable tickets in a loop, 8 echo workers,
// lookup clients) for TITANIC_SOAK (for example 10m; `make soak`). No fault
// is injected, so every failover it sees is a false one: a Binary Star
// state change, a raft leadership or term change, or a client moving to the
// other broker. TestSoakPair counts each of them, checks that every
// acknowledged ticket is answered with its own reply at the end, and writes
// its report to the test log and $TITANIC_ARTIFACTS/soak-pair.txt. Without
// TITANIC_SOAK the test skips, so `make test` does not run it.
// TITANIC_SOAK_STALL (for example 3s) freezes the active node that long
// halfway through: a fault, which the run must count and fail on, to show
// that its counters see a failover.
package soak
