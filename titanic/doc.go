// Package titanic owns the Titanic service of 9/TSP and its dispatcher.
//
// The service is an in-process part of the Majordomo broker: the broker
// hands it every client request for a titanic.* service (it implements
// broker.Handler) and asks it for work whenever a worker is idle (it
// implements broker.Source). It never holds a socket and never blocks the
// broker loop: mutations are handed to the store (store.Store.ApplyAsync,
// which never blocks) and completed on the store's completer goroutine,
// lookups go to reader goroutines, and both answer through the broker's
// goroutine-safe methods.
//
// # Parts
//
// Service is the composition; each part owns its state and guards it:
//
//   - the dispatcher (dispatcher.go, with queue.go, window.go and
//     schedule.go): entries, per-service queues and their windows over
//     the store's dispatch indexes, the delay and deadline heaps, leases,
//     the body cache, pauses and worker counts, under its own mutex. It
//     opens no socket, runs no goroutine, calls neither the store nor the
//     broker and reads no clock: its methods take the time and return
//     decisions (a lease and its dispatch mark, failures to commit,
//     services to load or wake), which the Service's loops carry out and
//     feed back (dispatcher_test.go drives it alone);
//   - the committer (commit.go): the hand-over to the store's one commit
//     pipeline (ApplyAsync), the counts of ops in flight (MaxQueuedOps,
//     Idle, the drain on shutdown) and the services to wake once the
//     commit being completed has ended. It runs each op's completion in
//     hand-over order and decides nothing about tickets; the completions
//     (submit.go, dispatch.go, lifecycle.go) tell the dispatcher what
//     became durable (commit_test.go drives it over a fake pipeline);
//   - lookups (read.go, wait.go, confirm.go): the reader goroutines and
//     their queue, the parked titanic.wait requests, the lookups waiting
//     for a leadership confirmation and the confirmer. It reads the store
//     (Get, Reply, ListPage), asks the dispatcher which tickets are leased
//     and writes nothing (lookups_test.go drives it over an in-memory
//     store);
//   - admission (admission.go, limits.go, presence.go, diskfree.go):
//     per-client in-flight counts and submit rates, the body limit, the
//     quota's reading of the store's size, the disk reserve, the refusal
//     of clients that do not read their answers, and client presence. It
//     returns refusals and sends nothing (admission_test.go drives it
//     with a fake clock).
//
// Each part takes what it needs when it is made (the filled Config, the
// stats counters, the slice of the store it uses, and functions for what
// it asks of the others: the answer path, Broker.Wake, the dispatcher's
// leases), not the Service. The Service holds the parts and the wiring:
// it parses requests and chooses which part hears of them (admission,
// then the committer or lookups), its loops carry the dispatcher's
// decisions out, and its answer path counts a deferred answer out of
// admission's in-flight count before the broker sends it. What is left on
// it is its own: whether it serves (active), whether Run is stopping, the
// counters every part adds to (stats.go, atomics) and the per-service
// tallies of titanic.stats (own mutex).
//
// # Durability
//
// The service keeps no queue of its own: the store's is the one commit
// pipeline (see package store). A submit is answered 200 only after the
// store's batch holding it is durable (fsync'd, or committed by a raft
// quorum). The store takes every mutation queued while the previous batch
// was being written (group commit), so concurrent submits share one fsync;
// completions run in hand-over order. The service only counts what it
// handed over: client mutations not yet durable are bounded by
// MaxQueuedOps (beyond it: busy), and Run waits for the rest on shutdown.
//
// # Dispatch
//
// Per service, pending tickets wait in one FIFO per priority level (high,
// normal, low), each ordered by store sequence; they are rebuilt from the
// store on start-up (Recover), so order survives restarts. Memory holds a
// window of each (Config.Window tickets per service and level, and of
// delayed ones): the rest waits in the store's dispatch indexes and is
// read a window at a time as the queues drain (window.go), so memory and
// start-up do not grow with the backlog. Levels take
// turns by weighted round robin, 4:2:1 while all have work, so that no
// level starves (queue.go). A ticket due later (a delay, a schedule, a
// retry's backoff) waits in a delay heap instead, and a ticket with a
// deadline also in a deadline heap (one waiting on disk: in a window of
// the earliest deadlines of the store's deadline index); one goroutine
// sleeps until the earliest of them and then moves due tickets to their
// FIFO or fails expired ones (schedule.go). No submit, dispatch or expiry scans a
// queue. A dispatched ticket is leased to one worker; when the worker
// dies, its lease expires or it reports failure, the ticket is requeued
// after an exponential backoff with jitter (durably: the requeue carries
// its due time), until its MaxAttempts dispatches have failed and it
// fails for good. A worker is given more work as soon as its reply
// arrives, so it never waits for the disk: the reply is made durable by
// the next group commit, and lookups see it only then (until then the
// ticket is "dispatched"). A broker that dies in between loses the reply
// and redelivers the job on recovery (at-least-once). The first reply
// wins and later ones are counted. A ticket waits for its service to have
// a worker for as long as it takes, unless NoWorkerTimeout is set: then
// it fails, "no worker for service", after waiting that long.
//
// # Reads in replicated modes
//
// Over a store that can confirm this node's leadership (store.Leadership:
// store/replica), an answer a deposed leader could get wrong (unknown,
// pending, the status of an unfinished ticket, a list) is sent only after
// a confirmation that began after the lookup; otherwise the lookup gets
// the not-active 500. A confirmer goroutine batches the confirmations
// (confirm.go). Recorded replies and failures are final and sent at once.
//
// # Codes
//
// The status frame is always the bare code; a second frame carries text:
//
//	200                          success; titanic.reply: the reply frames follow
//	300 pending|dispatched       titanic.reply: not answered yet, ask again
//	400 <text>                   unknown ticket, or a malformed request: do not retry
//	500 failed: <reason>         titanic.reply: the ticket failed for good
//	500 <text>                   busy or storage error: retry later
//
// Extensions beyond 9/TSP: titanic.submit [key | service | body...] (a
// titanic.request with an idempotency key; a resend returns the same
// ticket; every answer to it ends with the key, which lets a client with
// many submits in flight on one connection match answers to requests),
// titanic.status [ticket], titanic.list [service | state | after |
// limit], titanic.stats [service] (per-service queue counts and rates as
// one JSON frame, from memory: stats.go).
//
// The codes, the service names, the refusal kinds (a text starts with a
// fixed token, such as "not active", that clients act on) and the
// notification events are package tsp's, shared with the client so that
// neither copies them and the client imports no server package.
package titanic
