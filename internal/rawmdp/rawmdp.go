// Package rawmdp is a 7/MDP client written from the specs (7/MDP, 9/TSP),
// not with this project's client library: a DEALER socket, frames built
// by hand, one request at a time, and the Lazy Pirate's failover. It is
// what an old client, or one in another language, does: the jepsen
// workload and the upgrade tests speak to brokers through it.
package rawmdp

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// ErrTimeout: the broker did not answer within the client's timeout.
var ErrTimeout = errors.New("no answer")

// Client asks one endpoint of several at a time: when no answer comes
// within the timeout, the socket is dropped and the next endpoint is
// tried. A caller that reads a 500 moves on itself (Next), since a spec
// client may not read the status text.
//
// A Client is owned by one goroutine, as its socket is.
type Client struct {
	zctx      *zmq.Context
	endpoints []string
	cur       int
	sock      *zmq.Socket
	timeout   time.Duration
}

// New is a client of endpoints (the first asked first) on zctx, waiting
// timeout for each answer.
func New(zctx *zmq.Context, endpoints []string, timeout time.Duration) *Client {
	return &Client{zctx: zctx, endpoints: endpoints, timeout: timeout}
}

// Cur is the index in the endpoints of the one the client asks now.
func (c *Client) Cur() int { return c.cur }

// Use makes the client ask endpoint i (modulo their number) from now on.
func (c *Client) Use(i int) {
	c.Drop()
	c.cur = i % len(c.endpoints)
}

// Next drops the socket and moves to the next endpoint.
func (c *Client) Next() { c.Use(c.cur + 1) }

// Drop closes the socket; the next call connects again.
func (c *Client) Drop() {
	if c.sock != nil {
		_ = c.sock.SetLinger(0)
		_ = c.sock.Close()
		c.sock = nil
	}
}

// Close releases the socket (not the context).
func (c *Client) Close() { c.Drop() }

// Call sends [service | body...] to the current endpoint and returns the
// answer's body frames. On no answer within the timeout it moves to the
// next endpoint and returns ErrTimeout.
func (c *Client) Call(ctx context.Context, service string, body ...[]byte) ([][]byte, error) {
	if c.sock == nil {
		s, err := c.zctx.NewSocket(zmq.DEALER)
		if err != nil {
			return nil, fmt.Errorf("new socket: %w", err)
		}
		_ = s.SetLinger(0)
		if err := s.Connect(c.endpoints[c.cur]); err != nil {
			_ = s.Close()
			return nil, fmt.Errorf("connect %s: %w", c.endpoints[c.cur], err)
		}
		c.sock = s
	}
	// A DEALER adds the empty delimiter frame a REQ socket would.
	msg := append([][]byte{{}, []byte("MDPC01"), []byte(service)}, body...)
	if _, err := c.sock.SendMessageDontwait(msg); err != nil {
		c.Next()
		return nil, fmt.Errorf("%w: send: %w", ErrTimeout, err)
	}
	poller := zmq.NewPoller()
	poller.Add(c.sock, zmq.POLLIN)
	deadline := time.Now().Add(c.timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			c.Next()
			return nil, ErrTimeout
		}
		if err := ctx.Err(); err != nil {
			c.Drop() // a late answer must not be taken for the next request's
			return nil, err
		}
		polled, err := poller.Poll(min(left, 50*time.Millisecond))
		if err != nil {
			if zmq.AsErrno(err) == zmq.Errno(syscall.EINTR) {
				continue
			}
			c.Next()
			return nil, fmt.Errorf("poll: %w", err)
		}
		if len(polled) == 0 {
			continue
		}
		frames, err := c.sock.RecvMessageBytes(0)
		if err != nil {
			c.Next()
			return nil, fmt.Errorf("receive: %w", err)
		}
		// [""| MDPC01 | service | body...]; anything else (a late answer
		// to an earlier request) is not this call's.
		if len(frames) < 4 || len(frames[0]) != 0 || string(frames[1]) != "MDPC01" || string(frames[2]) != service {
			continue
		}
		return frames[3:], nil
	}
}
