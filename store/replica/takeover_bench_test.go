package replica_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic"
)

// BenchmarkTakeover measures what a pair node pays to go on alone when its
// peer dies (Reform: raft recovered with this node as the only voter,
// fenced, elected), then to activate its dispatcher over the store
// (titanic.Service.Activate: since the queues are lazy, the counts and one
// window per queue), against the number of pending tickets. TITANIC_BENCH_BACKLOG (comma-separated) overrides
// the sizes; the figure is 1000000.
func BenchmarkTakeover(b *testing.B) {
	sizes := []int{10_000, 100_000}
	if v := os.Getenv("TITANIC_BENCH_BACKLOG"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				b.Fatalf("TITANIC_BENCH_BACKLOG: %v", err)
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("pending=%d", n), func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				survivor, stop := backlogPair(b, n)
				b.StartTimer()
				start := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				if err := survivor.n.Reform(ctx); err != nil {
					b.Fatal(err)
				}
				reform := time.Since(start)
				// What the node's dispatcher does on taking over
				// (titanic.Service.Activate): the counts and one window
				// per queue, not the backlog (lazy queues).
				svc := titanic.New(survivor.n, nopBroker{}, titanic.Config{Logger: quiet()})
				runCtx, stopRun := context.WithCancel(ctx)
				done := make(chan struct{})
				go func() { defer close(done); _ = svc.Run(runCtx) }()
				if err := svc.Activate(ctx); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(reform.Milliseconds()), "reform-ms")
				b.ReportMetric(float64(time.Since(start).Milliseconds()), "takeover-ms")
				count := svc.Stats().Queued["s"]
				stopRun()
				<-done
				cancel()
				if count != n {
					b.Fatalf("%d pending after the takeover, want %d", count, n)
				}
				b.StopTimer()
				stop()
			}
		})
	}
}

// backlogPair makes a two-node pair over raft's in-memory transport with
// n pending tickets (100-byte bodies, committed on both), then closes
// one: the other is left to take over.
func backlogPair(b testing.TB, n int) (*memberB, func()) {
	return backlogPairTimeout(b, n, 200*time.Millisecond)
}

// backlogPairTimeout is backlogPair with raft's heartbeat and election
// timeouts (the lease timeout half of them): tests under the race
// detector on a loaded host need them longer than the benchmark does.
func backlogPairTimeout(b testing.TB, n int, timeout time.Duration) (*memberB, func()) {
	return backlogPairBatches(b, n, 2000, timeout)
}

// backlogPairBatches is backlogPairTimeout writing the backlog in raft
// entries of batch tickets each.
func backlogPairBatches(b testing.TB, n, batchSize int, timeout time.Duration) (*memberB, func()) {
	var ms []*memberB
	var peers []replica.Peer
	for i, id := range []string{"primary", "backup"} {
		addr, tr := raft.NewInmemTransport("")
		ms = append(ms, &memberB{id: id, dir: b.TempDir(), tr: tr, slot: uint64(1 - i)})
		peers = append(peers, replica.Peer{ID: id, Addr: string(addr)})
	}
	ms[0].tr.Connect(ms[1].tr.LocalAddr(), ms[1].tr)
	ms[1].tr.Connect(ms[0].tr.LocalAddr(), ms[0].tr)
	for _, m := range ms {
		st, err := store.Open(filepath.Join(m.dir, "titanic.db"), store.Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		n, err := replica.Open(st, replica.Config{ID: m.id, Dir: filepath.Join(m.dir, "raft"), Transport: m.tr, Peers: peers, Bootstrap: true,
			HeartbeatTimeout: timeout, ElectionTimeout: timeout, LeaderLeaseTimeout: timeout / 2,
			FenceStride: 2, FenceSlot: m.slot, Logger: quiet()})
		if err != nil {
			b.Fatal(err)
		}
		m.st, m.n = st, n
	}
	leader := func() *memberB {
		for deadline := time.Now().Add(wait); ; time.Sleep(5 * time.Millisecond) {
			for _, m := range ms {
				if m.n.IsLeader() {
					return m
				}
			}
			if time.Now().After(deadline) {
				b.Fatal("no leader")
			}
		}
	}
	l := leader()
	body := [][]byte{make([]byte, 100)}
	for done := 0; done < n; {
		batch := make([]store.Op, 0, batchSize)
		for ; len(batch) < cap(batch) && done < n; done++ {
			batch = append(batch, store.Op{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(), Service: "s", Body: body})
		}
		// Short timeouts on a loaded host: leadership may move while
		// the backlog is written. A batch resent to the new leader is
		// taken once (a submit of a known ID is a resend).
		for try := 0; ; try++ {
			_, err := l.n.Apply(context.Background(), batch)
			if err == nil {
				break
			}
			if try == 10 {
				b.Fatal(err)
			}
			l = leader()
		}
	}
	var dead, survivor *memberB = ms[0], ms[1]
	if survivor == l {
		dead, survivor = survivor, dead
	}
	dead.close()
	return survivor, func() { survivor.close() }
}

type memberB struct {
	id, dir string
	tr      *raft.InmemTransport
	slot    uint64
	st      *store.BoltStore
	n       *replica.Node
}

func (m *memberB) close() {
	_ = m.n.Close()
	_ = m.st.Close()
}
