// Package jepsen is a Jepsen-style fault suite for the replicated brokers:
// it runs the real titanic binary on network namespaces (internal/netns),
// lets a nemesis hurt the cluster at random while clients submit and look
// up tickets and workers answer them, records everything in a history, and
// checks the history at the end.
//
// # The run
//
// A scenario is a Binary Star pair (hosts pa, pb) or a 3-node raft group
// (g1, g2, g3), plus two client hosts (ca/cb, c1/c2): each has its own
// ZeroMQ context, made inside the host (netns.Host.Do), so that a
// partition can split the clients between the nodes. On each client host
// run a keyed submitter through the client library, a keyed submitter in
// raw titanic.submit frames, an unkeyed submitter in raw 9/TSP
// titanic.request frames, and a raw titanic.reply lookup client; the raw
// ones fail over as a spec client can (the other node on a 500 or a
// timeout). Three in-process workers answer "<body>|<worker>|<count>", so
// that a job run twice leaves two different replies.
//
// The nemesis chooses among SIGKILL, SIGSTOP/SIGCONT, link down, and
// silent nftables partitions: the nodes' link only (the pair link), the
// clients split between the two sides, or a node cut off from everything;
// after a network fault it may also SIGKILL the active node, and restart
// it (on its own data) while the fault holds. Every fault is healed (a
// killed node restarted with its own data) and the cluster must be whole
// and serve a probe (at high priority, ahead of the backlog the fault
// left) before the next. At the end everything heals, every
// node that is down restarts, and every acknowledged ticket is looked up
// until answered, then every other stored ticket (a key's second ticket
// shows there).
//
// # The check
//
// Check is a pure function of the history. Every acknowledged ticket must
// be answered at the end with a reply a worker made for its own body; no
// acknowledged ticket may be answered 400 during the run; outside a split
// brain no ticket may have two different replies and no key two tickets;
// inside one, both are counted and reported. A split brain is two nodes
// serving at once (by their own logs), or a fork: two nodes each its
// raft's only voter without having met the other's branch since, which
// happens without any overlap in serving when a deposed active goes on
// alone from its own log, its uncommitted tail included, after its peer
// has served alone. Jobs run twice are counted (at-least-once allows
// them). The report (Report) goes to the test log and to
// $TITANIC_ARTIFACTS/jepsen-<scenario>.txt, with the history
// (jepsen-<scenario>-history.txt) and the nodes' logs
// (jepsen-<scenario>-<node>-<life>.log, one per start of a node),
// whatever the verdict; on a violation the test fails.
//
// # Running it
//
// TestJepsenPair (scenarios mixed and split) and TestJepsenGroup (mixed)
// run a short version by default (a few faults); TITANIC_JEPSEN=long
// (make jepsen) runs at least 20 faults and minutes per scenario. The
// seed comes from TITANIC_JEPSEN_SEED, or is random and printed; with
// the same seed a scenario makes the same choices (the timing of the
// cluster still varies). One scenario: go test -run 'TestJepsenPair/split'.
package jepsen
