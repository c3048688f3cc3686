package replica

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// slowPeer accepts one connection on a listener and serves it with
// serve; the connection's receive buffer is kept small so that a sender
// feels the pace at which the peer reads.
func slowPeer(t *testing.T, serve func(net.Conn)) (addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.(*net.TCPConn).SetReadBuffer(32 << 10)
		serve(c)
	}()
	return ln.Addr().String()
}

// readPaced reads n bytes at about rate bytes per second, then answers.
func readPaced(n, rate int) func(net.Conn) {
	return func(c net.Conn) {
		buf := make([]byte, 16<<10)
		start := time.Now()
		for got := 0; got < n; {
			k, err := c.Read(buf[:min(len(buf), n-got)])
			if err != nil {
				return
			}
			got += k
			if ahead := time.Duration(got)*time.Second/time.Duration(rate) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
		_, _ = c.Write([]byte("ok"))
		_, _ = io.Copy(io.Discard, c)
	}
}

func dialLayer(t *testing.T, addr string) (*progressLayer, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &progressLayer{advertise: ln.Addr(), ln: ln.(*net.TCPListener), conns: map[*progressConn]struct{}{}}
	t.Cleanup(func() { _ = l.Close() })
	c, err := l.Dial(raft.ServerAddress(addr), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.(*progressConn).tc.SetWriteBuffer(32 << 10)
	return l, c
}

// rpc writes size bytes and reads a two-byte answer under one deadline,
// as raft's transport does for an AppendEntries.
func rpc(c net.Conn, size int, deadline time.Duration) error {
	if err := c.SetDeadline(time.Now().Add(deadline)); err != nil {
		return err
	}
	if _, err := c.Write(make([]byte, size)); err != nil {
		return err
	}
	_, err := io.ReadFull(c, make([]byte, 2))
	return err
}

// An RPC that takes several times its deadline to cross a slow link goes
// through while the peer keeps acknowledging bytes; the same RPC on a
// plain connection fails at its deadline, which is what kept a follower
// catching up with large entries from ever catching up.
func TestSlowTransferOutlivesDeadline(t *testing.T) {
	const size, rate, deadline = 1 << 20, 1 << 20, 200 * time.Millisecond

	plain, err := net.Dial("tcp", slowPeer(t, readPaced(size, rate)))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	_ = plain.(*net.TCPConn).SetWriteBuffer(32 << 10)
	if err := rpc(plain, size, deadline); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("on a plain connection a 1 MiB RPC at 1 MiB/s under a %s deadline: %v, want the deadline exceeded (the test's link is not slow enough)", deadline, err)
	}

	_, c := dialLayer(t, slowPeer(t, readPaced(size, rate)))
	start := time.Now()
	if err := rpc(c, size, deadline); err != nil {
		t.Fatalf("a 1 MiB RPC at 1 MiB/s with the peer acknowledging all along failed after %s: %v", time.Since(start).Round(time.Millisecond), err)
	}
	if took := time.Since(start); took < 2*deadline {
		t.Fatalf("the RPC took %s, not longer than its deadline: the test proves nothing", took)
	}
}

// A peer that acknowledges nothing (cut off silently, or not reading)
// fails a write at about the deadline, and a peer that takes everything
// but never answers fails the read likewise: progress, not time, is what
// extends a deadline.
func TestNoProgressFailsAtDeadline(t *testing.T) {
	const deadline = 200 * time.Millisecond
	stall := make(chan struct{})
	t.Cleanup(func() { close(stall) })

	_, c := dialLayer(t, slowPeer(t, func(net.Conn) { <-stall }))
	start := time.Now()
	err := rpc(c, 8<<20, deadline)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("writing 8 MiB to a peer that reads nothing: %v, want the deadline exceeded", err)
	}
	if took := time.Since(start); took > 5*deadline {
		t.Fatalf("a peer that reads nothing failed the write only after %s (deadline %s)", took, deadline)
	}

	_, c = dialLayer(t, slowPeer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) }))
	start = time.Now()
	err = rpc(c, 64<<10, deadline)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a peer that never answers: %v, want the deadline exceeded", err)
	}
	if took := time.Since(start); took > 5*deadline {
		t.Fatalf("a peer that never answers failed the read only after %s (deadline %s)", took, deadline)
	}
}

// Stopping a node cuts its RPCs in flight: raft's Shutdown waits for
// them, and on this layer a slow transfer may last long.
func TestAbortCutsTransferInFlight(t *testing.T) {
	reading := make(chan struct{})
	paced := readPaced(64<<20, 1<<20)
	l, c := dialLayer(t, slowPeer(t, func(c net.Conn) {
		if _, err := io.ReadFull(c, make([]byte, 1<<20)); err != nil {
			return
		}
		close(reading)
		paced(c)
	}))
	done := make(chan error, 1)
	// The deadline bounds time without progress; what ends this transfer
	// must be the abort, not a stall of a loaded machine (at 200 ms the
	// RPC failed before the peer had read its first MiB, in a fresh-clone
	// make test beside other jobs).
	go func() { done <- rpc(c, 64<<20, 2*time.Second) }()
	select {
	case <-reading:
	case err := <-done:
		t.Fatalf("the transfer ended before the peer read 1 MiB: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("the peer got no 1 MiB within 5 s")
	}
	l.abort()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the transfer finished after its connection was cut")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the transfer went on 5 s after the layer was aborted")
	}
	if _, err := l.Dial(raft.ServerAddress(l.ln.Addr().String()), time.Second); !errors.Is(err, errLayerClosed) {
		t.Fatalf("dial after abort: %v, want errLayerClosed", err)
	}
}

// A node's TCP transport does not pipeline AppendEntries: raft v1.7's
// pipeline can deadlock once a follower answers false (see
// Node.transport), leaving that follower without entries for good and
// the node's Close hung. Raft replicates without a pipeline only when the
// transport refuses one.
func TestTransportDoesNotPipeline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	n := &Node{cfg: Config{Bind: addr, Advertise: addr, ElectionTimeout: 500 * time.Millisecond}, log: slog.New(slog.DiscardHandler)}
	tr, abort, err := n.transport()
	if err != nil {
		t.Fatal(err)
	}
	defer abort()
	defer tr.(raft.WithClose).Close()
	peer := slowPeer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	p, err := tr.AppendEntriesPipeline("peer", raft.ServerAddress(peer))
	if !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
		if p != nil {
			_ = p.Close()
		}
		t.Fatalf("AppendEntriesPipeline: %v, want raft.ErrPipelineReplicationNotSupported", err)
	}
}
