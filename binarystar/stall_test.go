package binarystar

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// stallProxy forwards TCP connections to target. stall freezes the
// connections open at that moment in the target-to-client direction: the
// connection stays up and the client's bytes still go through, but
// nothing comes back, as after a silent partition while the peer's TCP
// stream waits in retransmission backoff. Later connections flow.
type stallProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  []*proxied
	closed bool
}

type proxied struct {
	client, server net.Conn
	frozen         chan struct{}
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, target: target}
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *stallProxy) endpoint() string { return "tcp://" + p.ln.Addr().String() }

func (p *stallProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		pc := &proxied{client: c, server: s, frozen: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.conns = append(p.conns, pc)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(s, c) }()
		go pc.back()
	}
}

// back copies server to client until the connection is frozen.
func (pc *proxied) back() {
	buf := make([]byte, 4096)
	for {
		n, err := pc.server.Read(buf)
		select {
		case <-pc.frozen:
			return // holds the connection open, forwards nothing more
		default:
		}
		if n > 0 {
			if _, werr := pc.client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *stallProxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pc := range p.conns {
		close(pc.frozen)
	}
	p.conns = nil
}

func (p *stallProxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.mu.Unlock()
	p.ln.Close()
	for _, pc := range conns {
		pc.client.Close()
		pc.server.Close()
	}
}

// TestStalledPeerStreamReconnects: once the peer's stream to this node
// stalls (it hears this node, this node hears nothing), the state SUB
// drops the connection after its heartbeat timeout and connects again,
// and the node hears its peer. Without ZMTP heartbeats it waited for the
// stalled stream: 12 s of a split brain going on after a heal in the
// fault suite.
func TestStalledPeerStreamReconnects(t *testing.T) {
	aEP, bEP := freeEndpoint(t), freeEndpoint(t)
	proxy := newStallProxy(t, strings.TrimPrefix(aEP, "tcp://"))
	start(t, "primary", testConfig(Primary, aEP, bEP))
	b := start(t, "backup", testConfig(Backup, bEP, proxy.endpoint()))
	waitFor(t, "the backup to hear the primary", b.PeerAlive)

	proxy.stall()
	stalled := time.Now()
	quiet := 3 * b.PeerTimeout()
	waitFor(t, "the backup to hear the primary again after its stream stalled", func() bool {
		return time.Since(stalled) > quiet && b.PeerAlive()
	})
}
