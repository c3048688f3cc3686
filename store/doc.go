// Package store owns titanic's durable state: every ticket (its service,
// state, request body, attempts and timestamps), every reply, the
// per-service FIFO of unfinished tickets, the dispatch indexes (ready
// tickets per service and priority level, delayed ones by due time,
// deadlines: index.go) and the idempotency keys. The titanic service
// holds no state the store cannot rebuild: after a restart it reads the
// counts and a window of each dispatch index (Queued) and carries on.
//
// # Contract
//
// Store is the interface: everything the titanic service needs of a
// store, written down here, in the package that owns the data, rather than
// in the service that consumes it, because two implementations and a
// conformance suite name it and none of them may import the service.
// BoltStore is the single-node implementation on one bbolt file (this is
// the only package that imports bbolt). store/replica.Node implements the
// same interface by shipping op batches through a raft log (EncodeOps,
// DecodeOps) and applying them to a BoltStore on every node. The one
// optional part, Leadership, is what only a replicated store has; it is
// reached through Store.Leadership, never by a type assertion.
//
// Package store/storetest is the contract as tests: Run checks a Store's
// semantics (op transitions, first reply wins, idempotency keys, batches,
// ApplyAsync order, recovery after a reopen, listing, retention, usage,
// snapshots), and runs against BoltStore here and replica.Node there. A
// semantic promised in this package's doc comments belongs in the suite.
//
// All mutations are Ops applied in batches by Apply. Ops are deterministic:
// the caller picks IDs and times, so two stores given the same ops end up
// with the same content. An op's own failure (ErrNotFound, ErrFinal,
// ErrInvalidOp, ErrKeyConflict) is in its Result and does not stop the other ops; a failure
// of the batch as a whole (disk full, I/O error, closed store) is Apply's
// error, and then nothing of the batch was applied.
//
// # The commit pipeline
//
// The store's queue is the only queue of pending ops between the titanic
// service and the disk: the service hands every mutation over with
// ApplyAsync, which never blocks, and keeps no queue of its own.
//
// One writer goroutine owns every write transaction. Apply and ApplyAsync
// queue their ops; the writer takes everything queued (up to
// Options.MaxBatch ops and Options.MaxBatchBytes bytes, but always at
// least one call), applies it in one transaction, fsyncs once and answers
// every caller: Apply's directly, ApplyAsync's through the completer
// goroutine, which calls their dones in hand-over order while the writer
// is already writing the next batch. The writer never waits for a batch to
// fill: while one fsync runs, the next batch queues up, so the batch size
// follows the load by itself. Nothing is answered before its fsync,
// unless Options.NoSync is set.
//
// Replicated (store/replica), the leader's queue builds raft entries
// within the same bounds instead (one batch is one raft entry, which is
// why batches are bounded in bytes: see DefaultMaxBatchBytes), and the raft
// FSM applies committed entries through the writer on every node.
//
// # Layout and records
//
// The bucket layout is described in bolt.go. Records use a small
// versioned binary encoding (codec.go) whose decoders treat their input as
// untrusted: damaged bytes give errors wrapping ErrCorrupt, never a panic.
// Open refuses an empty, truncated or foreign file with ErrCorrupt instead
// of silently starting an empty store over it.
//
// # Reads, snapshots, checks
//
// Reads run in bbolt read transactions, concurrently with the writer, and
// copy everything they return out of the mmap. Snapshot streams a
// consistent copy of the file while writes go on; Restore swaps a checked
// copy in between two commits. Check runs bbolt's structural check plus the
// store's own invariants; Stats reads counters kept in the same
// transactions as the ops.
package store
