// Package tcpstall is a test TCP proxy whose connections can be frozen in
// one direction: what a silent partition leaves behind once it heals, a
// stream waiting in TCP retransmission backoff while the other direction
// flows. Tests of sockets that must notice such a stream and connect
// again use it. It can also drop new connections' SYNs without a word
// (Blackhole), as a silent partition does to a reconnect, whose SYN the
// kernel then retries at growing intervals.
package tcpstall

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
)

// Proxy forwards the TCP connections it accepts to a target address.
type Proxy struct {
	addr   string // the proxy's own HOST:PORT, kept across Blackhole
	target string

	mu     sync.Mutex
	ln     net.Listener
	conns  []*conn
	closed bool
	// While blackholed: a listening socket whose accept queue is full
	// (filler fills it), so that the kernel drops every SYN to the port.
	hole   int
	filler net.Conn
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
	p := &Proxy{addr: ln.Addr().String(), ln: ln, target: target, hole: -1}
	go p.accept(ln)
	t.Cleanup(p.close)
	return p
}

// Endpoint is the proxy's address as a ZeroMQ endpoint.
func (p *Proxy) Endpoint() string { return "tcp://" + p.addr }

func (p *Proxy) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
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

// Blackhole stops accepting: every SYN to the proxy's port is dropped by
// the kernel, with no answer, until Heal. Connections open now are left
// as they are (Stall freezes them). It listens on the port with a full
// accept queue (a backlog of 0 holding one connection of its own): Linux
// drops a SYN to a listener whose queue is full, whatever its syncookies.
func (p *Proxy) Blackhole(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hole >= 0 {
		return
	}
	p.ln.Close()
	fd, err := holeListen(p.addr)
	if errors.Is(err, errUnsupported) {
		p.ln = mustListen(t, p.addr)
		go p.accept(p.ln)
		t.Skipf("tcpstall: blackhole: %v", err)
	}
	if err != nil {
		t.Fatalf("tcpstall: blackhole %s: %v", p.addr, err)
	}
	filler, err := net.Dial("tcp", p.addr)
	if err != nil {
		syscall.Close(fd)
		t.Fatalf("tcpstall: fill the accept queue of %s: %v", p.addr, err)
	}
	p.hole, p.filler = fd, filler
}

// Heal accepts and forwards new connections again.
func (p *Proxy) Heal(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hole < 0 {
		return
	}
	p.filler.Close()
	syscall.Close(p.hole)
	p.hole, p.filler = -1, nil
	p.ln = mustListen(t, p.addr)
	go p.accept(p.ln)
}

func mustListen(t testing.TB, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("tcpstall: listen on %s again: %v", addr, err)
	}
	return ln
}

// errUnsupported: Blackhole needs Linux's accept queue behaviour.
var errUnsupported = errors.New("not supported on this system")

func (p *Proxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	ln, hole, filler := p.ln, p.hole, p.filler
	p.hole, p.filler = -1, nil
	p.mu.Unlock()
	ln.Close()
	if hole >= 0 {
		filler.Close()
		syscall.Close(hole)
	}
	for _, pc := range conns {
		pc.client.Close()
		pc.server.Close()
	}
}
