package replica

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// These failed on the first version of the progress transport (found by a
// review of the day's diff).

// The grace after a large request was sent*time.Second/storeRate, computed
// in time.Duration: sent*1e9 overflows int64 once sent passes ~8.6 GiB
// (a snapshot of a store that size, which the store's mmap room of 8 GiB
// and more allows), and the grace turns negative: the reply is not
// awaited at all. 10 GiB at 32 MiB/s is a grace of 320 s.
func TestGraceAfterHugeRequestDoesNotOverflow(t *testing.T) {
	const deadline = 300 * time.Millisecond
	_, c := dialLayer(t, slowPeer(t, func(c net.Conn) {
		buf := make([]byte, 1024)
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		time.Sleep(5 * deadline) // storing what it was sent
		_, _ = c.Write([]byte("ok"))
		_, _ = io.Copy(io.Discard, c)
	}))
	pc := c.(*progressConn)
	if err := c.SetDeadline(time.Now().Add(deadline)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	// As after writing a 10 GiB snapshot (not sent for real: the
	// arithmetic is what is tested), all of it acknowledged.
	pc.mu.Lock()
	pc.sent = 10 << 30
	pc.mu.Unlock()
	start := time.Now()
	if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
		t.Fatalf("the reply after a 10 GiB request (grace 320 s) was not awaited: %v after %s", err, time.Since(start).Round(time.Millisecond))
	}
}

// raft's pipeline writes the next AppendEntries before its decoder has
// read the answer to the previous one; the read of that answer reset
// sent, so the large request whose answer is awaited next gets no grace,
// though the peer may still be storing it: the pipeline fails at the
// deadline, the very case the grace exists for (16 MiB: 0.5 s more).
func TestPipelinedLargeRequestGetsItsGrace(t *testing.T) {
	const deadline = 400 * time.Millisecond
	const small, large = 1024, 16 << 20
	_, c := dialLayer(t, slowPeer(t, func(c net.Conn) {
		if _, err := io.ReadFull(c, make([]byte, small+large)); err != nil {
			return
		}
		_, _ = c.Write([]byte("r1"))
		time.Sleep(deadline + 250*time.Millisecond) // storing the large one
		_, _ = c.Write([]byte("r2"))
		_, _ = io.Copy(io.Discard, c)
	}))
	// The pipeline's sender: two requests back to back.
	if err := c.SetWriteDeadline(time.Now().Add(deadline)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(make([]byte, small)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetWriteDeadline(time.Now().Add(deadline)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(make([]byte, large)); err != nil {
		t.Fatal(err)
	}
	// The pipeline's decoder: a deadline per answer.
	for _, want := range []string{"r1", "r2"} {
		if err := c.SetReadDeadline(time.Now().Add(deadline)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2)
		start := time.Now()
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("answer %s: %v after %s: the 16 MiB request it answers got no grace", want, err, time.Since(start).Round(time.Millisecond))
		}
	}
}

// A peer whose process is stopped or hung (SIGSTOP, a stuck raft) keeps
// a live kernel that acknowledges what fits in its receive buffer: a
// heartbeat's bytes are acknowledged after the deadline was armed, which
// counted as progress, and the RPC failed only at about twice the deadline,
// though nothing moved after the request went out. README: "A peer that
// is gone, stopped or cut off silently acknowledges nothing and fails the
// RPC at the deadline, as before."
func TestStoppedPeerFailsAtTheDeadline(t *testing.T) {
	const deadline = 400 * time.Millisecond
	stall := make(chan struct{})
	t.Cleanup(func() { close(stall) })
	_, c := dialLayer(t, slowPeer(t, func(net.Conn) { <-stall })) // reads nothing, answers nothing
	start := time.Now()
	err := rpc(c, 128, deadline)
	took := time.Since(start)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a stopped peer: %v, want the deadline exceeded", err)
	}
	if took > deadline*3/2 {
		t.Fatalf("a heartbeat-sized RPC to a stopped peer failed after %s, deadline %s", took.Round(time.Millisecond), deadline)
	}
}

// raft's InstallSnapshot streams the snapshot with io.Copy(conn.w, data):
// conn.w is a bufio.Writer on the layer's connection and data raft's
// bufferedFile (Read and Close only), so bufio.Writer.ReadFrom hands the
// copy to the connection's ReadFrom, which progressConn got from an
// embedded *net.TCPConn: the snapshot's bytes went out through
// net.TCPConn.Write, not progressConn.Write. Its write deadline is then
// raft's plain one (the transport's timeout per 256 KiB), and sent does
// not count them (no grace while the peer stores it). A snapshot larger
// than the socket buffers over a link slower than 256 KiB per timeout
// fails at its deadline, as on raft's own transport.
func TestSnapshotStreamOutlivesDeadline(t *testing.T) {
	const size, rate, deadline = 1 << 20, 1 << 20, 200 * time.Millisecond
	_, c := dialLayer(t, slowPeer(t, readPaced(size, rate)))
	pc := c.(*progressConn)
	if err := c.SetDeadline(time.Now().Add(deadline)); err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(c, 256<<10)                             // as raft's netConn.w
	data := struct{ io.Reader }{bytes.NewReader(make([]byte, size))} // as raft's bufferedFile
	start := time.Now()
	if _, err := io.Copy(w, data); err != nil {
		t.Fatalf("streaming a 1 MiB snapshot at 1 MiB/s, the peer acknowledging all along: %v after %s (sent counted %d bytes)",
			err, time.Since(start).Round(time.Millisecond), pc.unanswered())
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := pc.unanswered(); n < size {
		t.Fatalf("sent counts %d bytes of the %d streamed: no grace for the peer storing them", n, size)
	}
	if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
}
