package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
)

// raftGroup makes voters raft replicas on 127.0.0.1 (first's store is
// first, the others get their own) and waits for a leader. It returns the
// leader's store and node, and closers for every node (and the follower
// stores). The benchmark's broker then runs on the leader, as a replicated
// broker does.
func raftGroup(b *testing.B, first *store.BoltStore, voters int) (*store.BoltStore, *replica.Node, []func()) {
	b.Helper()
	type member struct {
		st   *store.BoltStore
		n    *replica.Node
		addr string
		dir  string
	}
	ms := make([]*member, voters)
	var peers []replica.Peer
	for i := range ms {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		ms[i] = &member{addr: addr, dir: b.TempDir()}
		peers = append(peers, replica.Peer{ID: fmt.Sprintf("n%d", i), Addr: addr})
	}
	for i, m := range ms {
		if i == 0 {
			m.st = first
		} else {
			st, err := store.Open(filepath.Join(m.dir, "titanic.db"), store.Options{Logger: quiet})
			if err != nil {
				b.Fatal(err)
			}
			m.st = st
		}
		cfg := replica.DefaultConfig()
		cfg.ID, cfg.Dir, cfg.Bind, cfg.Peers, cfg.Bootstrap = peers[i].ID, filepath.Join(m.dir, "raft"), m.addr, peers, true
		cfg.Logger = quiet
		n, err := replica.Open(m.st, cfg)
		if err != nil {
			b.Fatal(err)
		}
		m.n = n
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range ms {
			if m.n.IsLeader() {
				if err := m.n.Barrier(context.Background()); err != nil {
					b.Fatal(err)
				}
				// The caller closes the store handed back (the
				// leader's) last; the closers close the others.
				var closers []func()
				for _, o := range ms {
					closers = append(closers, func() {
						_ = o.n.Close()
						if o.st != m.st {
							_ = o.st.Close()
						}
					})
				}
				return m.st, m.n, closers
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Fatal("no raft leader within 20s")
	return nil, nil, nil
}

// BenchmarkReplicatedSubmit measures durable submits through a raft-
// replicated broker beside a single node, in one run: mode=single (one
// store, fsync), mode=pair (two voters: a submit is on both disks) and
// mode=group3 (three voters: on a majority). x-single is the submits/s
// ratio to mode=single at the same client count; the target is at
// least 0.5 at 64 clients.
func BenchmarkReplicatedSubmit(b *testing.B) {
	rawFsyncRate(b)
	single := map[int]float64{}
	for _, nc := range []int{8, 64} {
		for _, mode := range []struct {
			name   string
			voters int
		}{{"single", 0}, {"pair", 2}, {"group3", 3}} {
			n := startReplicated(b, mode.voters)
			cs := n.clients(b, nc)
			submit := func(ctx context.Context, c *client.Client) error {
				_, err := c.Submit(ctx, service, body(), submitOptions())
				return err
			}
			for _, c := range cs {
				if err := submit(context.Background(), c); err != nil {
					b.Fatal(err)
				}
			}
			b.Run(fmt.Sprintf("mode=%s/clients=%d", mode.name, nc), func(b *testing.B) {
				before := n.counts(b)
				lats, elapsed := drive(b, cs, submit)
				report(b, "submit", lats, elapsed, before, n.counts(b))
				rate := float64(len(lats)) / elapsed.Seconds()
				if mode.voters == 0 {
					single[nc] = rate
				} else if single[nc] > 0 {
					b.ReportMetric(rate/single[nc], "x-single")
				}
			})
			n.stop(b)
		}
	}
}

// BenchmarkReplicatedLookup measures titanic.reply of a pending ticket, the
// answer a client that polls gets most, beside a single node: in a raft
// group it is sent only after the leader confirmed its leadership (one
// heartbeat round shared by every lookup waiting for it). confirms/lookup
// is how many rounds a lookup cost.
func BenchmarkReplicatedLookup(b *testing.B) {
	for _, nc := range []int{8, 64} {
		for _, mode := range []struct {
			name   string
			voters int
		}{{"single", 0}, {"group3", 3}} {
			n := startReplicated(b, mode.voters)
			cs := n.clients(b, nc)
			ticket, err := cs[0].Submit(context.Background(), service, body(), submitOptions())
			if err != nil {
				b.Fatal(err)
			}
			lookup := func(ctx context.Context, c *client.Client) error {
				if _, err := c.Reply(ctx, ticket, client.ReplyOptions{}); !errors.Is(err, client.ErrPending) {
					return fmt.Errorf("reply of a pending ticket: %w", err)
				}
				return nil
			}
			b.Run(fmt.Sprintf("mode=%s/clients=%d", mode.name, nc), func(b *testing.B) {
				confirms := n.svc.Stats().Confirms
				lats, elapsed := drive(b, cs, lookup)
				slices.Sort(lats)
				b.ReportMetric(float64(len(lats))/elapsed.Seconds(), "lookups/s")
				b.ReportMetric(percentile(lats, 0.50), "p50-ms")
				b.ReportMetric(percentile(lats, 0.99), "p99-ms")
				b.ReportMetric(float64(n.svc.Stats().Confirms-confirms)/float64(max(len(lats), 1)), "confirms/lookup")
			})
			n.stop(b)
		}
	}
}
