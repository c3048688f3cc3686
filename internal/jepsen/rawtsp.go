package jepsen

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// errTimeout: the broker did not answer within the client's timeout.
var errTimeout = errors.New("no answer")

// rawClient is a 7/MDP client written from the specs (7/MDP, 9/TSP), not
// with this project's client library: a DEALER socket, frames built by
// hand, one request at a time, and the Lazy Pirate's failover: when no
// answer comes within the timeout, the socket is dropped and the next
// endpoint is tried. A 500 also sends it to the next endpoint (next),
// since a spec client may not read the status text.
//
// A rawClient is owned by one goroutine, as its socket is.
type rawClient struct {
	zctx      *zmq.Context
	endpoints []string
	nodes     []string // node name of each endpoint
	cur       int
	sock      *zmq.Socket
	timeout   time.Duration
}

func newRawClient(zctx *zmq.Context, endpoints, nodes []string, timeout time.Duration) *rawClient {
	return &rawClient{zctx: zctx, endpoints: endpoints, nodes: nodes, timeout: timeout}
}

// node is the name of the node the client asks now.
func (c *rawClient) node() string { return c.nodes[c.cur] }

// next drops the socket and moves to the next endpoint.
func (c *rawClient) next() {
	c.drop()
	c.cur = (c.cur + 1) % len(c.endpoints)
}

func (c *rawClient) drop() {
	if c.sock != nil {
		_ = c.sock.SetLinger(0)
		_ = c.sock.Close()
		c.sock = nil
	}
}

// close releases the socket.
func (c *rawClient) close() { c.drop() }

// call sends [service | body...] to the current endpoint and returns the
// reply body and the node that answered. On no answer within the timeout
// it moves to the next endpoint and returns errTimeout (with the node
// that did not answer).
func (c *rawClient) call(ctx context.Context, service string, body ...[]byte) ([][]byte, string, error) {
	node := c.node()
	if c.sock == nil {
		s, err := c.zctx.NewSocket(zmq.DEALER)
		if err != nil {
			return nil, node, fmt.Errorf("new socket: %w", err)
		}
		_ = s.SetLinger(0)
		if err := s.Connect(c.endpoints[c.cur]); err != nil {
			_ = s.Close()
			return nil, node, fmt.Errorf("connect %s: %w", c.endpoints[c.cur], err)
		}
		c.sock = s
	}
	// A DEALER adds the empty delimiter frame a REQ socket would.
	msg := append([][]byte{{}, []byte("MDPC01"), []byte(service)}, body...)
	if _, err := c.sock.SendMessageDontwait(msg); err != nil {
		c.next()
		return nil, node, fmt.Errorf("%w: send: %w", errTimeout, err)
	}
	poller := zmq.NewPoller()
	poller.Add(c.sock, zmq.POLLIN)
	deadline := time.Now().Add(c.timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			c.next()
			return nil, node, errTimeout
		}
		if err := ctx.Err(); err != nil {
			c.drop() // a late answer must not be taken for the next request's
			return nil, node, err
		}
		polled, err := poller.Poll(min(left, 50*time.Millisecond))
		if err != nil {
			if zmq.AsErrno(err) == zmq.Errno(syscall.EINTR) {
				continue
			}
			c.next()
			return nil, node, fmt.Errorf("poll: %w", err)
		}
		if len(polled) == 0 {
			continue
		}
		frames, err := c.sock.RecvMessageBytes(0)
		if err != nil {
			c.next()
			return nil, node, fmt.Errorf("receive: %w", err)
		}
		// [""| MDPC01 | service | body...]; anything else is not ours.
		if len(frames) < 4 || len(frames[0]) != 0 || string(frames[1]) != "MDPC01" || string(frames[2]) != service {
			continue
		}
		return frames[3:], node, nil
	}
}
