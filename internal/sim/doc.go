// Package sim is a randomized simulation of the replicated modes, in the
// spirit of FoundationDB's and TigerBeetle's simulators: the nodes of a
// Binary Star pair or a raft group run in one process, and a seeded
// schedule partitions them (both ways or one way), crashes and restarts
// them and, for a pair, cuts the raft link alone (one way or both, Binary
// Star's states and the admin requests still passing) and casts client
// votes, while clients submit (with and
// without idempotency keys), workers take jobs and answer them, and
// lookups record what they were told. At the end every fault is healed
// and a checker holds the run's history against the invariants of the
// fault suite (internal/failover): every acknowledged ticket is answered
// with its own reply, no acknowledged ticket was ever answered "unknown",
// and the replicas agree; jobs run twice are reported.
//
// # What is real and what is simulated
//
// Real: the store (bbolt, one file per node in a temporary directory),
// the raft replica (store/replica) with its log guard and fencing, and the
// controllers of titanic/ha: the pair's (ha.Pair, built with
// ha.NewPairWith) and the group's (ha.Group), with the admin services
// (ha.Admin: history, adopt, join, standdown, version), called in process,
// and the cluster version's keeper (ha.Versions): the members report
// this build's ops record version (store.OpsRecordVersion) and the leader
// raises the cluster version to it, early in a schedule, so the ops of
// the newest kinds and fields are written (a handover's adoptions carry
// their attempts); a run has settled only once it is raised.
//
// Simulated: the network (raft's in-memory transport, whose routes are
// cut per direction; a one-way cut from a to b stops a's requests to b
// while b's requests to a and their answers still pass; a raft cut stops
// only raft's), Binary Star (its
// pure state machine, binarystar.FSM, on a fake clock that the schedule
// advances one heartbeat per step; states cross the links the schedule
// leaves up), the titanic service (a submit is an OpSubmit through the
// serving node, a worker applies OpDispatch then OpReply, a lookup reads
// the serving node's store and, before it answers "unknown", confirms
// leadership and asks the pair whether the peer may hold the ticket, as
// titanic.Service does), and crashes (the role loop is stopped, then the
// replica and the store are closed; a restart reopens them from the same
// directories).
//
// # Determinism
//
// A seed fixes the schedule (faults, votes, the pace of each client and
// worker, raft's snapshot settings); Run with the same seed replays it.
// Raft's timing is its own (real timers, goroutines), so two runs of one
// seed see the same faults at the same steps but not the same
// interleavings.
package sim
