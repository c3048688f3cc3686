package jepsen

import (
	"context"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/internal/rawmdp"
)

// errTimeout: the broker did not answer within the client's timeout.
var errTimeout = rawmdp.ErrTimeout

// rawClient is a spec client (rawmdp.Client) that knows the node of each
// endpoint, for the history. A 500 sends it to the next endpoint (Next),
// since a spec client may not read the status text.
type rawClient struct {
	*rawmdp.Client
	nodes []string // node name of each endpoint
}

func newRawClient(zctx *zmq.Context, endpoints, nodes []string, timeout time.Duration) *rawClient {
	return &rawClient{Client: rawmdp.New(zctx, endpoints, timeout), nodes: nodes}
}

// node is the name of the node the client asks now.
func (c *rawClient) node() string { return c.nodes[c.Cur()] }

// call is rawmdp.Client.Call that also returns the node asked (the one
// that answered, or that did not).
func (c *rawClient) call(ctx context.Context, service string, body ...[]byte) ([][]byte, string, error) {
	node := c.node()
	rep, err := c.Call(ctx, service, body...)
	return rep, node, err
}
