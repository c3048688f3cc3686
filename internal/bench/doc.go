// Package bench holds titanic's end-to-end benchmarks. It has no code of
// its own: everything is in its _test.go files (the table printer is the
// command internal/bench/table).
//
// The table of issue 10 (`make bench` prints it, with
// `go run ./internal/bench/table bench.txt`) comes from two benchmarks
// with spec-only load: a client is a DEALER sending 7/MDP client requests
// to titanic.request and titanic.reply (no idempotency key, no
// titanic.wait, one request in flight), a worker a DEALER speaking MDPW01
// that echoes. Every deployment runs the built binary (TITANIC_BIN, else
// built once), one process per node on 127.0.0.1 with every timing the
// default: a single node, a Binary Star pair (raft between primary and
// backup), a 3-node raft group; the load talks to the node that serves
// and runs in the test process. A client or worker waits in Go's poller
// (zsock.Readable) and moves a message in one cgo call (zsock.Frames),
// as the Go client does: the wire is plain 7/MDP, and the load costs the
// shared cores about half what one OS thread per client in zmq_poll did.
//
//   - BenchmarkTableJobs/mode=M/workers=W/clients=64: durable jobs/s end
//     to end, from the first titanic.request to the last reply fetched
//     (each client submits its share, then polls titanic.reply for each of
//     its tickets, 1ms doubling to 16ms while pending), with W echo
//     workers: jobs/s, p50 and p99 submit latency, commits/op (titanic
//     commits: at most one bbolt transaction, two fdatasyncs, on a single
//     node; one raft entry in a pair or group), x-fsync, and CPU per op:
//     broker-cpu-us/op (every node's process, from /proc) and
//     load-cpu-us/op (the test process).
//   - BenchmarkTableSubmit/mode=M/clients=N: durable submits/s
//     (titanic.request, no worker), the same metrics.
//
// The other benchmarks (`make bench-all` runs every one) run a whole
// node in the test process, the assembly `titanic broker` runs (package
// titanic/node; in a pair or group, the raft leader, whose ha.Group role
// serves), bound to tcp://127.0.0.1:* with its store in a
// temporary directory and real fsyncs (store.Options.NoSync is off). Clients
// are client.Client values, one per concurrent caller (a Client has one
// request in flight), and workers are worker.Worker values that echo their
// request.
//
//   - BenchmarkFsyncBaseline: the raw write+fdatasync rate of a file in the
//     temporary directory, the machine's baseline (fsyncs/s).
//   - BenchmarkSubmit/clients=N: durable submits (titanic.submit, answered
//     once the ticket is on disk) from N concurrent clients, with no worker
//     for the service: submits/s, p50 and p99 submit latency, commits and
//     fsyncs per submit (store commit counter; bbolt fdatasyncs twice per
//     commit), x-fsync (submits/s divided by the raw fsync rate measured in
//     the same run) and commit-busy (the share of the run during which the
//     store held at least one of the service's ops: near 1, commits
//     bound the throughput).
//   - BenchmarkSubmitPipelined/window=W: durable submits from one client
//     with W in flight (SubmitAsync; -bench.window, default 256), the
//     same metrics as BenchmarkSubmit; latency runs from the SubmitAsync
//     call (including its wait for a free slot) to the acknowledgement.
//   - BenchmarkRoundTrip/clients=N: full round trips (Submit, echo worker,
//     Reply with Wait, which parks on titanic.wait) from N concurrent
//     clients and one echo worker per client (at least 8):
//     roundtrips/s, p50 and p99 round-trip latency, commits and fsyncs per
//     round trip, x-fsync, commit-busy, lookups (store reads of the ticket;
//     a titanic.wait reads once when it parks and once when woken) per
//     round trip, and the mean round trip split into submit-ms,
//     dispatch-ms (until a worker runs the job) and reply-ms (until Reply
//     has the answer).
//   - BenchmarkJobs1Worker/workers=1/clients=64: durable jobs/s through one
//     spec-only 7/MDP echo worker while 64 clients submit, from the first
//     submit until the last reply is durable: jobs/s, submits/s, commits
//     per job, x-fsync.
//
// BenchmarkHostile (issue 13; `make bench` runs it after the table) times
// a spec-only 9/TSP client against the binary alone and then beside the
// hostile clients of harness.Hostile, which run in a process of their own
// (this test binary re-executed by TestMain) at niceness 19, so that their
// own CPU is not the broker's: p50, p99, the p99 ratio, submits/s, the
// broker's peak RssAnon and the attack rounds sent per second.
//
// BenchmarkSubmit, BenchmarkSubmitPipelined and BenchmarkRoundTrip also
// report cpu-us/op: the CPU time of the whole test process (getrusage:
// broker, load, bbolt and libzmq's I/O threads) per operation.
//
// The clients, workers and broker share the machine, as they would on a
// single-node deployment with local load: a 2-core machine measures all of
// them together.
//
// Numbers are meant to be read as ratios against the raw fsync rate of the
// same run, which is what bounds a durable queue on a given disk. Run them
// with
//
//	make bench-all
//
// or directly:
//
//	go test -run '^$' -bench . -benchtime 2s -count 1 ./internal/bench/
//
// Add -cpuprofile cpu.out and read it with `go tool pprof -top cpu.out` to
// see what bounds a run (libzmq's I/O threads are C threads the Go profiler
// does not sample; perf record -g sees them). Knobs for experiments go
// after -args: -bench.workers N (echo workers, default 16), -bench.poll D
// (the Reply poll interval cap, default 2ms) and -bench.random-keys
// (time-ordered idempotency keys instead of the client's random ones).
//
// The table's brokers run in processes of their own, which -cpuprofile
// does not see. A binary built with `go build -tags cpuprofile -o
// /tmp/titanic-prof ./cmd/titanic` (cmd/titanic/cpuprofile.go) writes a
// CPU profile of each process to DIR/cpu.PID.pprof when
// TITANIC_CPUPROFILE=DIR is set, which the brokers inherit from the test:
// it starts TITANIC_CPUPROFILE_AFTER (default 5s) after the process and
// lasts TITANIC_CPUPROFILE_FOR (default 5s), so choose a -benchtime (as a
// count, e.g. 200000x) that outlasts both. For example
//
//	TITANIC_CPUPROFILE=/tmp/prof TITANIC_CPUPROFILE_AFTER=4s TITANIC_CPUPROFILE_FOR=25s \
//	TITANIC_BIN=/tmp/titanic-prof go test -run '^$' \
//	  -bench 'BenchmarkTableSubmit/mode=pair/clients=64' -benchtime 200000x ./internal/bench/
//
// Only the processes that live long enough write one: the serving node
// is the one whose profile holds broker.(*Broker).loopReadable.
package bench
