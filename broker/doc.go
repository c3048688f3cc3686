// Package broker is titanic's Majordomo broker: 7/MDP (MDPC01 clients,
// MDPW01 workers) and 8/MMI on one ROUTER socket, with hooks through which
// the titanic service serves its own services (Handler) and feeds durable
// work to the workers (Source).
//
// # What it owns
//
// The broker owns its ROUTER socket (clients and workers, as the Guide's
// broker does), the service table (per service: the registered workers,
// the idle ones in LRU order, and an in-memory queue of plain requests),
// worker liveness, and the leases of durable jobs held by workers. Frames
// are encoded and decoded by package mdp only.
//
// # Threading model
//
// Run's goroutine (the loop) owns the protocol state and the ROUTER: no
// other goroutine touches them. Handler and Source methods are called on
// the loop and must not block. Reply, Release, Wake and Stats may be called
// from any goroutine: each queues a command on a bounded channel (spilling
// to an overflow list when it is full, so that no caller ever blocks, not
// even a Source callback on the loop) and wakes the loop. Without peering
// the loop waits for the ROUTER in Go's network poller (zsock.Readable, on
// the socket's ZMQ_FD) and a ring ends that wait directly; with peering
// it blocks in zmq_poll on all its sockets and a ring goes through a
// doorbell (zsock.Doorbell, shared with the client and the worker), whose
// rings coalesce into empty frames on an inproc socket polled with the
// others. Either way rings coalesce, and a woken loop drains the
// commands. Messages are received and sent whole, one cgo call each
// (zsock.Frames). Timers (heartbeats, expiry) run a few times per heartbeat
// interval. Every send uses DONTWAIT, so a slow peer never stalls the loop.
//
// The protocol logic lives in a socket-free state (state.go, dispatch.go)
// driven with explicit times, so it is table-tested without sockets;
// loop.go is the only file that imports zmq.
//
// # Protocol
//
//   - Client requests for mmi.service get "200" when a worker is registered
//     for the named service (idle or busy) or a Handler serves it, else
//     "404"; other mmi.* services get "501".
//   - Requests for a service under a Handler prefix go to the Handler.
//   - Other requests are queued per service (at most MaxQueue) and given to
//     the worker idle longest. The worker's REPLY goes back to the client.
//   - A worker registers with exactly one READY. A second READY, a READY
//     for mmi.* or a Handler prefix, and any command but DISCONNECT from an
//     unregistered worker are answered with DISCONNECT, and the worker is
//     forgotten (7/MDP: "valid but unexpected command").
//   - Any command but DISCONNECT refreshes a worker's liveness. The broker
//     sends HEARTBEAT to every registered worker, idle or busy, when it has
//     sent it nothing for HeartbeatInterval. An idle worker silent for
//     Interval × Liveness is removed and sent DISCONNECT. A busy worker is
//     judged the same way once it has sent a HEARTBEAT while busy; one that
//     never does (the Guide's synchronous workers) keeps its work until it
//     has been silent for LeaseTimeout.
//
// # Durable work
//
// When a worker of service S is idle (after READY, a relayed reply, a FAIL
// or Release) or Wake(S) is called, the broker alternates between the plain
// queue of S and Source.Next(S), so that neither starves the other. A job
// is sent as a REQUEST whose client-address frame is the job's token, and
// the worker holds a Lease. Its REPLY (with the same token) goes to
// Source.Completed; the worker then stays reserved until Release(lease.ID),
// which the Source calls once the reply is durable, or at once (titanic
// does: its workers never wait for the disk). A FAIL command (a
// titanic extension, see mdp.Fail), the worker's DISCONNECT, expiry, or a
// failed send reports the lease to Source.Failed, with a reason. Plain
// requests are never redelivered: a plain request held by a worker that goes
// away is lost (and counted).
//
// # What is dropped and counted
//
// 7/MDP has no error reply, so the broker drops and counts (see Counters,
// read through Broker.Stats): invalid messages (Malformed); plain requests
// beyond MaxQueue (RequestsDropped, logged at most once per service every
// 10 s) or that waited RequestExpiry for a worker (RequestsExpired); plain
// requests lost with their worker (RequestsLost) or answered with FAIL
// (RequestsFailed); replies whose client address or token does not match
// the work the worker holds (StaleReplies); sends to peers that are gone
// (Unroutable: a worker that cannot be reached is removed) or whose pipe is
// full (SendDropped: a worker that cannot take a request is removed too).
// In every case the client learns of it only by its own timeout, as with
// the reference brokers; plain requests are not retried by the broker.
//
// A client whose answer was dropped for a full pipe is not reading: the
// broker flags its next requests (Request.Unread) until an answer to it
// goes through, so that a Handler can refuse work whose answer would be
// lost (titanic refuses its submits). The set is bounded and forgets a
// client one to two minutes after its last dropped answer (unread.go).
//
// Leases held when Run returns are not reported to the Source: a durable
// Source recovers them from its store.
package broker
