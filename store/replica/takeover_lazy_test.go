package replica_test

import (
	"context"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic"
)

// nopBroker is the broker a dispatcher needs, doing nothing.
type nopBroker struct{}

func (nopBroker) Reply(broker.Client, string, [][]byte) {}
func (nopBroker) Release(uint64)                        {}
func (nopBroker) Wake(string)                           {}

// A pair node that takes over a backlog loads its dispatch queues
// lazily: the follower's store has the dispatch indexes (the FSM applies
// them), activation reads one window, the counts say the rest, and the
// oldest ticket is dispatched first.
func TestTakeoverLoadsLazily(t *testing.T) {
	const n = 5_000
	survivor, stop := backlogPairTimeout(t, n, 2*time.Second)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := survivor.n.Reform(ctx); err != nil {
		t.Fatal(err)
	}
	svc := titanic.New(survivor.n, nopBroker{}, titanic.Config{Window: 64, Logger: quiet()})
	runCtx, stopRun := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = svc.Run(runCtx) }()
	defer func() { stopRun(); <-done }()
	if err := svc.Activate(ctx); err != nil {
		t.Fatal(err)
	}
	if r := svc.Stats().WindowReads; r > 8 {
		t.Fatalf("activation read %d windows, want a few (one per level and the delayed)", r)
	}
	if q := svc.Stats().Queued["s"]; q != n {
		t.Fatalf("%d queued after the takeover, want %d", q, n)
	}
	first, err := survivor.n.Queued(ctx, store.QueueRead{Queue: store.QueueReady, Service: "s", Limit: 1})
	if err != nil || len(first) != 1 {
		t.Fatalf("ready index of the survivor: %v %v", first, err)
	}
	deadline := time.Now().Add(wait)
	for {
		if job, ok := svc.Next("s", "w"); ok {
			if string(job.Token) != first[0].ID.String() {
				t.Fatalf("first dispatch %s, want the oldest ticket %s", job.Token, first[0].ID)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no dispatch after the takeover")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := survivor.st.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// A reform replays the log since the latest snapshot into a store that
// already applied it: that must not cost the store a write transaction
// (an fsync) per entry. Through the binary, 6,500 entries of a pipelined
// backlog took 3.4 s of a failover that way.
func TestReformReplaysWithoutCommits(t *testing.T) {
	const entries = 300
	survivor, stop := backlogPairBatches(t, entries, 1, 2*time.Second)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before, err := survivor.st.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := survivor.n.Reform(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := survivor.st.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The reform itself commits a few (the new term's entries).
	if c := after.Commits - before.Commits; c > entries/10 {
		t.Fatalf("the reform made %d store commits replaying %d applied entries, want a few", c, entries)
	}
	if q, err := survivor.n.Queued(ctx, store.QueueRead{Queue: store.QueueReady, Service: "s", Limit: entries + 1}); err != nil || len(q) != entries {
		t.Fatalf("%d ready after the reform, want %d (%v)", len(q), entries, err)
	}
	if err := survivor.st.Check(ctx); err != nil {
		t.Fatal(err)
	}
}
