// Package tcpstall is a test TCP proxy whose connections can be frozen in
// one direction: what a silent partition leaves behind once it heals, a
// stream waiting in TCP retransmission backoff while the other direction
// flows. Tests of sockets that must notice such a stream and connect
// again use it.
package tcpstall

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards the TCP connections it accepts to a target address.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  []*conn
	closed bool
}

type conn struct {
	client, server net.Conn
	frozen         chan struct{}
}

// New starts a proxy on 127.0.0.1 to target (HOST:PORT), closed when the
// test ends.
func New(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target}
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Endpoint is the proxy's address as a ZeroMQ endpoint.
func (p *Proxy) Endpoint() string { return "tcp://" + p.ln.Addr().String() }

func (p *Proxy) accept() {
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
		pc := &conn{client: c, server: s, frozen: make(chan struct{})}
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

// back copies what the target sends to the client until the connection
// is frozen; then it holds the connection open and forwards nothing.
func (pc *conn) back() {
	buf := make([]byte, 4096)
	for {
		n, err := pc.server.Read(buf)
		select {
		case <-pc.frozen:
			return
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

// Stall freezes the connections open now in the target-to-client
// direction: they stay up and the client's bytes still reach the target,
// but nothing comes back. Connections made later flow.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pc := range p.conns {
		close(pc.frozen)
	}
	p.conns = nil
}

func (p *Proxy) close() {
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
