package replica

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"golang.org/x/sys/unix"
)

// A raft transport puts one deadline on each RPC: twice the election
// timeout here, a few times the size for a snapshot. Over a slow link an
// AppendEntries of many large entries takes longer than that to cross,
// fails at its deadline and is sent again, for good: a follower catching
// up with entries near max_batch_bytes over a 100 Mbit/s link never
// caught up, and a snapshot did not cross a link under ~1 Mbit/s. A
// count of entries per RPC small enough for large entries made the
// catch-up of small ones over a WAN a hundred times slower.
//
// So on the connections this layer dials, a deadline bounds the time
// without progress instead: an operation goes on while the peer
// acknowledges bytes (the kernel's bytes_acked rises), and a reply is
// awaited longer after a large request, which the peer stores first. A
// peer that is gone, stopped or cut off silently acknowledges nothing
// and fails the RPC at the deadline raft set, as before.
type progressLayer struct {
	advertise net.Addr
	ln        *net.TCPListener

	mu     sync.Mutex
	conns  map[*progressConn]struct{}
	closed bool
}

// storeRate is the rate at which a peer is assumed to store what it was
// sent before it answers: a reply is awaited this much longer per byte
// sent since the last one (1 GiB of entries: 32 s more).
const storeRate = 32 << 20 // bytes per second

var errLayerClosed = errors.New("raft transport closed")

// newProgressTransport is raft.NewTCPTransportWithLogger on a
// progressLayer.
func newProgressTransport(bind string, advertise *net.TCPAddr, timeout time.Duration, cfg *raft.NetworkTransportConfig) (*raft.NetworkTransport, *progressLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, nil, err
	}
	if advertise.IP == nil || advertise.IP.IsUnspecified() {
		_ = ln.Close()
		return nil, nil, errors.New("the advertised address is not one a peer can dial")
	}
	l := &progressLayer{advertise: advertise, ln: ln.(*net.TCPListener), conns: make(map[*progressConn]struct{})}
	cfg.Stream, cfg.Timeout = l, timeout
	return raft.NewNetworkTransportWithConfig(cfg), l, nil
}

func (l *progressLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return nil, errLayerClosed
	}
	c, err := net.DialTimeout("tcp", string(address), timeout)
	if err != nil {
		return nil, err
	}
	pc := &progressConn{tc: c.(*net.TCPConn), layer: l}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = c.Close()
		return nil, errLayerClosed
	}
	l.conns[pc] = struct{}{}
	return pc, nil
}

// Accept hands out plain connections: raft sets no deadline on the
// connections it serves.
func (l *progressLayer) Accept() (net.Conn, error) { return l.ln.Accept() }

func (l *progressLayer) Close() error {
	l.abort()
	return l.ln.Close()
}

func (l *progressLayer) Addr() net.Addr { return l.advertise }

// abort closes every connection dialed and refuses new dials. Raft's
// Shutdown waits for the RPCs in flight, which may now last as long as
// they make progress: a node stopping (a reform, a resync, its close)
// cuts them instead.
func (l *progressLayer) abort() {
	l.mu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = make(map[*progressConn]struct{})
	l.mu.Unlock()
	for c := range conns {
		_ = c.tc.Close()
	}
}

// progressConn is a dialed connection whose deadlines bound the time
// without progress. Raft reads and writes it from two goroutines at once
// (a pipeline's sender and its decoder): each side keeps its own state.
// It wraps the TCP connection rather than embedding it: an embedded one
// lends its ReadFrom to io.Copy (raft streams a snapshot so), whose bytes
// then bypassed Write, its deadline and its count.
type progressConn struct {
	tc    *net.TCPConn
	layer *progressLayer
	rd    side
	wr    side

	// sent counts the bytes written since the second-to-last read that
	// returned data, recent those since the last: what the peer may
	// still be storing when an answer is awaited. The second-to-last,
	// because raft's pipeline writes the next request before it reads
	// the answer to the one before.
	mu           sync.Mutex
	sent, recent int64
}

// side is the deadline state of one direction: idle is the time without
// progress allowed (0: no deadline), acked the bytes the peer had
// acknowledged when progress was last looked at.
type side struct {
	idle  atomic.Int64
	acked atomic.Uint64
}

// maxGrace bounds the wait for an answer after a large request.
const maxGrace = time.Hour

func (c *progressConn) LocalAddr() net.Addr  { return c.tc.LocalAddr() }
func (c *progressConn) RemoteAddr() net.Addr { return c.tc.RemoteAddr() }

func (c *progressConn) Close() error {
	c.layer.mu.Lock()
	delete(c.layer.conns, c)
	c.layer.mu.Unlock()
	return c.tc.Close()
}

func (c *progressConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *progressConn) SetReadDeadline(t time.Time) error {
	c.arm(&c.rd, t)
	return c.tc.SetReadDeadline(t)
}

func (c *progressConn) SetWriteDeadline(t time.Time) error {
	c.arm(&c.wr, t)
	return c.tc.SetWriteDeadline(t)
}

func (c *progressConn) arm(s *side, t time.Time) {
	if t.IsZero() {
		s.idle.Store(0)
		return
	}
	s.idle.Store(int64(max(time.Until(t), time.Nanosecond)))
	if info, ok := c.info(); ok {
		s.acked.Store(info.Bytes_acked)
	}
}

func (c *progressConn) Write(p []byte) (int, error) {
	total := 0
	for {
		n, err := c.tc.Write(p[total:])
		total += n
		c.mu.Lock()
		c.sent += int64(n)
		c.recent += int64(n)
		c.mu.Unlock()
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return total, err
		}
		idle := time.Duration(c.wr.idle.Load())
		if idle == 0 || !c.progressed(&c.wr, idle) {
			return total, err
		}
		if err := c.tc.SetWriteDeadline(time.Now().Add(idle)); err != nil {
			return total, err
		}
	}
}

func (c *progressConn) Read(p []byte) (int, error) {
	graced := false
	for {
		n, err := c.tc.Read(p)
		if n > 0 {
			c.mu.Lock()
			c.sent, c.recent = c.recent, 0
			c.mu.Unlock()
		}
		if n > 0 || err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		idle := time.Duration(c.rd.idle.Load())
		if idle == 0 {
			return n, err
		}
		switch {
		case c.progressed(&c.rd, idle):
		case !graced && c.unanswered() > 0:
			// Everything sent was acknowledged and the peer is quiet: it
			// may be storing a large request.
			graced = true
			idle = grace(c.unanswered())
		default:
			return n, err
		}
		if err := c.tc.SetReadDeadline(time.Now().Add(idle)); err != nil {
			return n, err
		}
	}
}

func (c *progressConn) unanswered() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sent
}

// grace is how long a peer may take to store bytes it was sent, at
// storeRate (in floating point: bytes times a second overflows past
// 8 GiB).
func grace(bytes int64) time.Duration {
	return min(time.Duration(float64(bytes)/storeRate*float64(time.Second)), maxGrace)
}

// progressed says whether the peer acknowledged bytes since s last
// looked, the latest one not just after the deadline was set: the
// acknowledgement of the request itself (a round trip after it was
// written) by a peer whose process is stopped, whose kernel still takes
// what fits, is not progress. Half the deadline was asked at first, and
// a peer whose disk stalled for seconds while it took a snapshot was
// given up on.
func (c *progressConn) progressed(s *side, idle time.Duration) bool {
	info, ok := c.info()
	if !ok {
		return false
	}
	advanced := s.acked.Swap(info.Bytes_acked) < info.Bytes_acked
	rtt := time.Duration(info.Rtt) * time.Microsecond
	return advanced && time.Duration(info.Last_ack_recv)*time.Millisecond < idle-max(4*rtt, 50*time.Millisecond)
}

// info reads the kernel's TCP state of the connection.
func (c *progressConn) info() (*unix.TCPInfo, bool) {
	rc, err := c.tc.SyscallConn()
	if err != nil {
		return nil, false
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || ierr != nil {
		return nil, false
	}
	return info, true
}
