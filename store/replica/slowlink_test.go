package replica_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
)

// slowLink listens on 127.0.0.1 and forwards every connection to target,
// carrying what goes towards target at rate bytes per second in all (the
// connections share the link, as raft's pooled, pipelined and heartbeat
// connections share a real one); answers come back at full speed.
func slowLink(t *testing.T, target string, rate int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var next time.Time // when the link is free again
	reserve := func(n int) time.Duration {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		if next.Before(now) {
			next = now
		}
		next = next.Add(time.Duration(n) * time.Second / time.Duration(rate))
		return next.Sub(now)
	}
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			// A small window: the sender feels the link's pace.
			_ = in.(*net.TCPConn).SetReadBuffer(64 << 10)
			out, err := net.Dial("tcp", target)
			if err != nil {
				_ = in.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, in, out)
			mu.Unlock()
			go func() {
				defer in.Close()
				defer out.Close()
				buf := make([]byte, 16<<10)
				for {
					n, err := in.Read(buf)
					if n > 0 {
						time.Sleep(reserve(n))
						if _, werr := out.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
			go func() {
				defer in.Close()
				_, _ = io.Copy(in, out)
			}()
		}
	}()
	return ln.Addr().String()
}

// A follower that comes back behind by entries whose total is more than
// its link carries within raft's RPC deadline catches up all the same.
// Raft sends up to 256 entries in one AppendEntries under one deadline
// (twice the election timeout: 1 s here); 8 MiB over a 2 MiB/s link take
// 4 s, and on raft's own TCP transport the RPC failed at its deadline and
// was sent again for good: the follower never caught up.
func TestFollowerCatchesUpOverSlowLink(t *testing.T) {
	catchUpOverSlowLink(t, 16, 512<<10, 2<<20, false)
}

// A snapshot gets a deadline in proportion to its size (1 s per 256 KiB
// here): a link slower than that never carried one. Over 128 KiB/s the
// snapshot here (about 1.6 MB) takes 12 s, twice its deadline.
func TestSnapshotCrossesSlowLink(t *testing.T) {
	catchUpOverSlowLink(t, 8, 128<<10, 128<<10, true)
}

func catchUpOverSlowLink(t *testing.T, entries, size, rate int, snapshot bool) {
	var ms []*member
	var peers []replica.Peer
	for i := range 3 {
		m := &member{id: fmt.Sprintf("n%d", i+1), addr: freeAddr(t), dir: t.TempDir()}
		ms = append(ms, m)
	}
	slow := ms[2]
	link := slowLink(t, slow.addr, rate)
	for _, m := range ms {
		addr := m.addr
		if m == slow {
			addr = link
		}
		peers = append(peers, replica.Peer{ID: m.id, Addr: addr})
	}
	open := func(m *member) {
		st, err := store.Open(filepath.Join(m.dir, "titanic.db"), store.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		cfg := fastConfig(m, peers)
		// Entries, or a snapshot, carry the catch-up.
		cfg.SnapshotThreshold, cfg.TrailingLogs = 1<<20, 1<<20
		if snapshot {
			cfg.SnapshotThreshold, cfg.TrailingLogs = 4, 2
		}
		// Steadier than fastConfig's under the race detector with large
		// entries; the RPC deadline stays 1 s.
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
		if m == slow {
			cfg.Advertise = link
		}
		n, err := replica.Open(st, cfg)
		if err != nil {
			t.Fatal(err)
		}
		m.st, m.n = st, n
	}
	for _, m := range ms {
		open(m)
	}
	t.Cleanup(func() {
		for _, m := range ms {
			m.close()
		}
	})
	ids := applySome(t, ms, 1)
	hasAll(t, slow, ids)

	slow.close()
	body := make([]byte, size)
	for range entries {
		op := store.Op{Kind: store.OpSubmit, ID: store.NewID(), Time: time.Now(), Service: "s", Body: [][]byte{body}}
		for resent := false; ; resent = true {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			res, err := leader(t, ms).n.Apply(ctx, []store.Op{op})
			cancel()
			if err == nil {
				if res[0].Err != nil && !(resent && errors.Is(res[0].Err, store.ErrInvalidOp)) {
					t.Fatalf("apply a %d KiB submit: %v", size>>10, res[0].Err)
				}
				break
			}
			if !errors.Is(err, replica.ErrNotLeader) && !errors.Is(err, replica.ErrUncertain) {
				t.Fatalf("apply a %d KiB submit: %v", size>>10, err)
			}
		}
		ids = append(ids, op.ID)
	}

	start := time.Now()
	open(slow)
	deadline := time.Now().Add(45 * time.Second)
	for _, id := range ids {
		for {
			if _, err := slow.st.Get(context.Background(), id); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the follower behind by %d entries of %d KiB (snapshot %v) over a %d KiB/s link had not caught up 45 s after it came back (raft's RPC deadline: 1 s)", entries, size>>10, snapshot, rate>>10)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Logf("caught up %d KiB (snapshot %v) over a %d KiB/s link in %s", entries*size>>10, snapshot, rate>>10, time.Since(start).Round(time.Millisecond))
}
