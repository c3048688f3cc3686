# titanic: a durable request queue on ZeroMQ (cgo: needs libzmq via pkg-config).
SHELL    := /bin/bash
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN      := bin/titanic
FUZZTIME ?= 100000x
STATICCHECK ?= v0.8.2
export CGO_ENABLED := 1

.PHONY: all deps test-deps build run test vet unit fuzz bench bench-all sim lint clean jepsen soak mixed backlog backlog-pair

all: build

# deps installs what a fresh Debian machine lacks to build: libzmq (with
# pkg-config) through apt-get, then the Go modules.
deps:
	@if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists libzmq; then \
		echo "make: installing libzmq3-dev and pkg-config with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libzmq3-dev pkg-config >/dev/null; \
	fi
	@$(GO) mod download

# test-deps adds what only the tests need: nftables and iproute2 for the
# network-namespace failover tests (as root; without them those tests skip),
# and Debian's chromium for the dashboard's browser tests (titanic/ops),
# which fail rather than skip without it when CI is set.
test-deps: deps
	@if [ "$$(id -u)" = 0 ] && { ! command -v nft >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; }; then \
		echo "make: installing nftables and iproute2 (network-namespace failover tests) with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables iproute2 >/dev/null || echo "make: could not install nftables; partition tests will skip"; \
	fi
	@if [ "$$(id -u)" = 0 ] && ! command -v strace >/dev/null 2>&1; then \
		echo "make: installing strace (crash tests that kill a command at an exact system call) with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null || echo "make: could not install strace; those crash tests skip"; \
	fi
	@if [ "$$(id -u)" = 0 ] && ! command -v chromium >/dev/null 2>&1; then \
		echo "make: installing chromium (dashboard browser tests) with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || echo "make: could not install chromium; the browser tests fail under CI, skip elsewhere"; \
	fi

build: deps
	$(GO) build -ldflags "-X main.Version=$(VERSION)" -o $(BIN) ./cmd/titanic

# run starts a single-node broker on the embedded defaults
# (data in ./titanic-data, clients and workers on tcp://127.0.0.1:5555).
run: build
	./$(BIN) broker

vet: deps
	@out=$$(gofmt -l .); test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK) ./...

# unit runs every test: unit, conformance, end-to-end and crash tests (the
# last two drive the binary built by `build`).
unit: build test-deps
	mkdir -p artifacts
	TITANIC_BIN=$(abspath $(BIN)) TITANIC_ARTIFACTS=$(abspath artifacts) $(GO) test -race -count=1 -timeout 15m ./...

# jepsen runs the long version of the fault suite (internal/jepsen, about
# 10 minutes: a pair and a 3-node group, at least 20 faults per scenario);
# `make unit` runs its short version. The seed is printed; replay one with
# TITANIC_JEPSEN_SEED=N make jepsen (or go test -run 'TestJepsenPair/split').
# Reports land in artifacts/jepsen-<scenario>.txt.
# FAILOVER_LONG are the failover tests with variants or rounds that only
# run with TITANIC_JEPSEN=long (their shorter forms run in `make test`).
FAILOVER_LONG = ^(TestPairPassiveLosesPartOfItsDirectory|TestPairRollingRestart|TestGroupStoppedLeaderAcksNothingLost|TestSplitHandoverFaults)$$
jepsen: build test-deps
	mkdir -p artifacts
	TITANIC_JEPSEN=long TITANIC_BIN=$(abspath $(BIN)) TITANIC_ARTIFACTS=$(abspath artifacts) $(GO) test -count=1 -timeout 40m -v -run 'TestJepsen' ./internal/jepsen/
	TITANIC_JEPSEN=long TITANIC_BIN=$(abspath $(BIN)) TITANIC_ARTIFACTS=$(abspath artifacts) $(GO) test -count=1 -timeout 20m -v -run '$(FAILOVER_LONG)' ./internal/failover/

# soak runs a Binary Star pair (the real binary, default settings, network
# namespaces: as root) under steady load for SOAKTIME with no fault, and
# fails on any failover or lost ticket (internal/soak). Report:
# artifacts/soak-pair.txt. Without TITANIC_SOAK the test skips, so `make
# unit` does not run it.
SOAKTIME ?= 10m
soak: build test-deps
	mkdir -p artifacts
	TITANIC_SOAK=$(SOAKTIME) TITANIC_BIN=$(abspath $(BIN)) TITANIC_ARTIFACTS=$(abspath artifacts) $(GO) test -count=1 -timeout 45m -v -run 'TestSoakPair$$' ./internal/soak/

# mixed runs every mixed-version test (internal/upgrade), also those of
# known incompatibilities that `make unit` skips (TITANIC_MIXED=1): the
# previous release of RELEASES is built from git history (cached under
# ~/.cache/titanic/releases) and run beside bin/titanic, as a single node,
# a pair and a 3-node group upgraded node by node, and rolled back. Needs
# root (network namespaces) and the git history (a shallow clone skips).
# Failing nodes' logs land in artifacts/.
mixed: build test-deps
	mkdir -p artifacts
	TITANIC_MIXED=1 TITANIC_BIN=$(abspath $(BIN)) TITANIC_ARTIFACTS=$(abspath artifacts) $(GO) test -count=1 -timeout 15m -v ./internal/upgrade/

# fuzz runs every fuzz target for FUZZTIME (seed corpora in testdata/):
# a count of executions, not a duration. Go 1.26's fuzzing coordinator
# can report "context deadline exceeded" without any finding when a
# duration runs out under load (golang/go#75804, fixed in Go 1.27); a
# count has no deadline. 100,000 runs take 2-5 s for most targets here,
# about 30 s for the slowest (FuzzParseTSP). A run that fails prints its output. One that failed without a finding
# (no "Failing input written", e.g. the fuzzing engine lost a worker
# process) is run once more, and fails the build if it fails again; a
# finding fails it at once.
fuzz: deps
	@set -e; log=$$(mktemp); trap 'rm -f $$log' EXIT; \
	for f in $$(grep -rl --include='*_test.go' '^func Fuzz' .); do \
		dir=$$(dirname $$f); \
		for t in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$f | sed 's/^func //'); do \
			echo "fuzz $$dir $$t ($(FUZZTIME))"; \
			if ! $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$dir >$$log 2>&1; then \
				cat $$log; \
				if grep -q 'Failing input written' $$log; then echo "FAIL fuzz $$dir $$t"; exit 1; fi; \
				echo "fuzz $$dir $$t failed without a finding: once more"; \
				$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$dir || { echo "FAIL fuzz $$dir $$t"; exit 1; }; \
			fi; \
		done; \
	done

test: build vet unit fuzz

# sim runs the randomized simulation of the pair and the group long
# (SIMTIME per mode; `make test` runs a short pass). A failing seed is
# replayed with TITANIC_SIM_SEED=n; its log is written to artifacts/.
SIMTIME ?= 5m
sim: deps
	mkdir -p artifacts
	TITANIC_SIM=long TITANIC_SIM_TIME=$(SIMTIME) TITANIC_ARTIFACTS=$(abspath artifacts) $(GO) test -race -count=1 -timeout 0 -v -run 'TestSim(Pair|Group)$$' ./internal/sim/

# bench runs the benchmarks of issue 10's table (internal/bench: the raw
# fsync rate, jobs/s with 1, 8 and 64 workers, submits/s from 1, 8 and 64
# clients, single node (the binary, in its own process), pair and 3-node
# group, and one pipelined client), writes their output to bench.txt and
# prints the table (about 3 minutes on 2 cores); then BenchmarkHostile
# (issue 13: a well-behaved client's p99 alone and beside hostile ones,
# and the broker's peak anonymous RSS; 10 s), appended to bench.txt. bench-all runs every
# benchmark of store/ and internal/bench/.
BENCH_TABLE := ^Benchmark(FsyncBaseline|Table(Jobs|Submit|Pipelined))$$
bench: build
	set -o pipefail; TITANIC_BIN=$(abspath $(BIN)) $(GO) test -run '^$$' -bench '$(BENCH_TABLE)' -benchtime 2s -count 1 -timeout 20m ./internal/bench/ 2>&1 | tee bench.txt
	@echo
	$(GO) run ./internal/bench/table bench.txt
	@echo
	set -o pipefail; TITANIC_BIN=$(abspath $(BIN)) $(GO) test -run '^$$' -bench '^BenchmarkHostile$$' -benchtime 1x -count 1 -timeout 5m ./internal/bench/ 2>&1 | tee -a bench.txt

bench-all: build
	set -o pipefail; TITANIC_BIN=$(abspath $(BIN)) $(GO) test -run '^$$' -bench . -benchtime 2s -count 1 -timeout 30m ./store/ ./internal/bench/ 2>&1 | tee bench.txt

# backlog builds a data directory holding BACKLOG_N pending tickets
# (100-byte bodies, one service; bulk through the store API, fsync off for
# the build only), starts bin/titanic on it and reports its peak RssAnon,
# the time from its start to the first acknowledged submit, the submit
# and dispatch rates at that depth, and the time to the first acknowledged
# submit of a restart after a clean stop and of one after a SIGKILL
# (internal/bench TestBacklog). Not part
# of `make test`. BACKLOG_DIR keeps the data directory between runs (a
# directory holding titanic.db is reused as it is).
BACKLOG_N ?= 10000000
BACKLOG_DIR ?=
backlog: build
	TITANIC_BACKLOG_N=$(BACKLOG_N) TITANIC_BACKLOG_DIR=$(BACKLOG_DIR) TITANIC_BIN=$(abspath $(BIN)) $(GO) test -count=1 -timeout 120m -v -run '^TestBacklog$$' ./internal/bench/

# backlog-pair measures a Binary Star pair's failover against the backlog
# (internal/failover TestPairBacklog; network namespaces: as root): the
# real binary on two hosts with the default timings is failed over
# (SIGKILL of the active) BACKLOG_PAIR_KILLS times with an empty queue,
# then loaded with BACKLOG_PAIR_N pending tickets through the active and
# failed over as often again; it reports the time from the kill to the
# survivor's first acknowledged submit and to its first dispatch of an old
# ticket, and the ratio deep/empty. The brokers' logs land in artifacts/.
# Disk: about 6 GB per 1,000,000 pending (two stores, each node keeping
# two raft snapshots, each a copy of its store).
BACKLOG_PAIR_N ?= 1000000
BACKLOG_PAIR_KILLS ?= 3
backlog-pair: build test-deps
	mkdir -p artifacts
	TITANIC_READY_WITHIN=5m TITANIC_BACKLOG_PAIR_N=$(BACKLOG_PAIR_N) TITANIC_BACKLOG_PAIR_KILLS=$(BACKLOG_PAIR_KILLS) TITANIC_BIN=$(abspath $(BIN)) TITANIC_ARTIFACTS=$(abspath artifacts) $(GO) test -count=1 -timeout 240m -v -run '^TestPairBacklog$$' ./internal/failover/

lint: vet

clean:
	rm -rf bin bench.txt artifacts
