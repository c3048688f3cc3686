// Package failover holds the failover tests of the replicated brokers: each
// broker runs as a real titanic process on its own "host" (a network
// namespace made by internal/netns), while keyed submitters and echo
// workers run in the test process and reach every host through
// netns.Net.Attach.
//
//   - TestPairKillActive: a Binary Star pair; the active broker is
//     SIGKILLed and restarted ten times under load. Every acknowledged
//     ticket is answered with its own body, none is lost, and no
//     idempotency key made two tickets. The failover time (last ack
//     before a kill to the first ack after it) is logged as p50/p99.
//   - TestPairCLIDefaults: a pair with the default timings and a loop of
//     `titanic submit --broker A,B` (one process per submit, as a user's
//     shell loop), while the active is SIGKILLed and restarted five
//     times. It logs the loop's gap around each kill (p50, max) and the
//     latency of a CLI submit with one node down; it asserts only what
//     TestPairKillActive does (every ack answered, none twice).
//   - TestPairLinkCut: only the link between the two brokers is cut
//     (silently, with nftables) while clients and workers reach both;
//     what happens must be what package binarystar documents.
//   - TestGroupFaults: a 3-node raft group; the leader is SIGKILLed,
//     SIGSTOPped and cut off (link down, silent partition), repeatedly,
//     under load. Nothing acknowledged is lost, and no two nodes served
//     in the same raft term.
//   - TestPairBacklog (`make backlog-pair`, skipped without
//     TITANIC_BACKLOG_PAIR_N): the active of a pair with default timings
//     is SIGKILLed with an empty queue and with N pending tickets; it
//     reports the time to the survivor's first acknowledged submit and
//     first dispatch of an old ticket, and their ratio deep/empty.
//   - TestGroupCompactFollower: one follower of a 3-node group is stopped,
//     its data file compacted (titanic compact) and started again; it
//     resumes from its own store and the raft log, without a snapshot
//     install or restore, catches up, and nothing acknowledged is lost.
//   - TestPairCompactPassive: the same on a pair's passive node, which
//     rejoins from a snapshot of the active (the active reformed raft
//     alone); then both nodes stopped, compacted and started.
//
// The tests skip when network namespaces cannot be made (not root, no ip).
// They drive the binary of $TITANIC_BIN, or build one.
package failover
