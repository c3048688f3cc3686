// Package worker is an MDP worker (7/MDP, MDPW01) for titanic's broker and
// for any Majordomo broker: it registers one service, receives requests,
// hands each to a Handler and sends back its reply.
//
// # What it owns
//
// A Worker owns, for the duration of Run, a ZeroMQ context of its own
// (unless Config.Context gives one) and, per slot (Config.Concurrency, 1
// by default), one DEALER socket connected to one broker at a time. The
// slot waits for it in Go's network poller on its ZMQ_FD
// (broker/zsock.Readable) and sends or receives each message in one cgo
// call (broker/zsock.Frames); only if Go's poller cannot watch that
// descriptor does the slot fall back to zmq_poll, with an inproc doorbell
// (a PULL socket polled with the DEALER, fed by a PUSH socket that one
// goroutine of the worker creates, uses and closes). Frames are encoded
// and decoded by package broker/mdp only. Nothing is global: Run
// terminates its context before it returns.
//
// # Threading model
//
// 7/MDP gives a worker one request at a time, so a Worker that handles N
// at once (Config.Concurrency) is N workers on the wire: N slots, each a
// session of its own with its own DEALER, READY, heartbeats, liveness,
// reconnects and backoff, run by one goroutine of Run that owns the
// slot's sockets and protocol state (with a single slot, Run's own
// goroutine). Slots share nothing but the Handler, the counters and the
// ZeroMQ context; their logs carry a "slot" attribute, and SlotOf tells a
// handler call's slot. Each request runs the Handler on a goroutine of its
// own, so that the slot's goroutine keeps sending HEARTBEATs while a long
// job runs (titanic's broker keeps a busy worker's lease only while it
// heartbeats). The handler's result comes back on a channel, and the
// handler goroutine wakes the slot's wait (Readable.Wake, or the doorbell
// in the fallback; a flag the slot checks before it waits covers a wake
// that races a reconnect's new socket). Each slot
// is sequential, as 7/MDP expects: it holds at most one request at a
// time, so at most Concurrency handler calls run at once.
//
// # Protocol
//
// Everything below is per slot.
//
//   - On connect the worker sends READY with its service. Any message from
//     the broker refreshes its liveness; it sends HEARTBEAT whenever it has
//     sent nothing for HeartbeatInterval, busy or idle.
//   - A REQUEST runs the Handler with the client-address frame kept aside;
//     the handler's frames go back in a REPLY with that frame (one empty
//     frame if it returned none). A handler error, or a panic, is sent as
//     FAIL (a titanic extension, see mdp.Fail) with the error text, cut to
//     MaxReason bytes.
//   - On DISCONNECT, or when the broker has been silent for
//     HeartbeatInterval × Liveness, the socket is closed (linger 0) and the
//     worker connects to the next endpoint of Brokers, in a ring, with a new
//     socket and a new READY. The first reconnect is immediate; further
//     ones, while no broker answers, back off from ReconnectDelay, doubling
//     up to MaxReconnectDelay (or ReconnectDelay if larger).
//   - A request whose connection is lost is not abandoned: the Handler runs
//     to its end, and the worker reconnects only then (it announces READY
//     only when it can take work). The result is discarded and logged: the
//     broker has already given the request up (titanic's broker redelivers
//     durable jobs), and a REPLY on a new registration would make a Guide
//     broker list the worker as idle twice.
//   - A message that is not a valid broker-to-worker command, or a REQUEST
//     while one is held, is dropped, counted (Stats.Dropped) and logged at
//     debug or warn level.
//   - When Run's context is done, an idle slot sends DISCONNECT (best
//     effort: the socket lingers at most a short moment) and closes its
//     sockets. A busy slot with a Config.DrainTimeout first drains: it
//     keeps its connection and heartbeats (it takes no new request: the
//     broker sends none to a busy worker) until the handler returns, sends
//     the REPLY or FAIL, then DISCONNECT. Without one, or once it has
//     passed, or when the connection is lost meanwhile, the running
//     handler's context is cancelled and Run does not wait for the
//     handler; its result is discarded, unless it was already there and
//     successful, in which case the REPLY goes out before DISCONNECT. Run
//     returns nil once every slot has stopped.
package worker
