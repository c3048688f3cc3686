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

// member is a raft follower of the benchmark's group: a bare replica
// with its own store, no broker.
type member struct {
	id, addr string
	st       *store.BoltStore
	n        *replica.Node
}

func (m *member) close() {
	_ = m.n.Close()
	_ = m.st.Close()
}

func closeMembers(ms []*member) {
	for _, m := range ms {
		m.close()
	}
}

// raftGroup plans a raft group of voters on 127.0.0.1: it returns the
// replica configuration of the node under benchmark (n0) and opens the
// other voters as followers. Every voter bootstraps the same peers.
func raftGroup(b *testing.B, voters int) (replica.Config, []*member) {
	b.Helper()
	var peers []replica.Peer
	for i := range voters {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		peers = append(peers, replica.Peer{ID: fmt.Sprintf("n%d", i), Addr: l.Addr().String()})
		l.Close()
	}
	config := func(p replica.Peer) replica.Config {
		cfg := replica.DefaultConfig()
		cfg.ID, cfg.Bind, cfg.Peers, cfg.Bootstrap = p.ID, p.Addr, peers, true
		cfg.Logger = quiet
		return cfg
	}
	var ms []*member
	for _, p := range peers[1:] {
		dir := b.TempDir()
		st, err := store.Open(filepath.Join(dir, "titanic.db"), store.Options{Logger: quiet})
		if err != nil {
			closeMembers(ms)
			b.Fatal(err)
		}
		cfg := config(p)
		cfg.Dir = filepath.Join(dir, "raft")
		n, err := replica.Open(st, cfg)
		if err != nil {
			_ = st.Close()
			closeMembers(ms)
			b.Fatal(err)
		}
		ms = append(ms, &member{id: p.ID, addr: p.Addr, st: st, n: n})
	}
	return config(peers[0]), ms
}

// lead waits for the group's first leader and, when it is a follower,
// hands leadership over to own, the node under benchmark, whose broker
// then serves (titanic/ha.Group).
func lead(b *testing.B, own *replica.Node, followers []*member) {
	b.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !own.IsLeader() {
		if time.Now().After(deadline) {
			b.Fatal("the benchmarked node is not the raft leader within 20s")
		}
		for _, m := range followers {
			if m.n.IsLeader() {
				id, addr := own.Self()
				if err := m.n.TransferLeadership(id, addr); err != nil {
					b.Logf("leadership transfer to %s: %v", id, err)
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := own.Barrier(context.Background()); err != nil {
		b.Fatal(err)
	}
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
