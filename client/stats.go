package client

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// QueueStats is the broker's answer to titanic.stats: every service's
// queue, and ServiceQueue one service's (the JSON of titanic/tsp, which
// the broker and the HTTP API's /api/v1/queues use too).
type (
	QueueStats   = tsp.QueueStats
	ServiceQueue = tsp.ServiceQueue
)

// QueueStats asks the broker for every service's queue counts and rates
// (service, when not empty, selects one). A broker older than the
// extension answers ErrRejected ("unknown titanic service").
func (c *Client) QueueStats(ctx context.Context, service string) (QueueStats, error) {
	rep, err := c.do(ctx, tsp.SvcStats, [][]byte{[]byte(service)})
	if err != nil {
		return QueueStats{}, err
	}
	if err := status(rep, "", true); err != nil {
		return QueueStats{}, fmt.Errorf("stats: %w", err)
	}
	if len(rep) < 2 {
		return QueueStats{}, fmt.Errorf("%w: stats answered 200 without a body", ErrProtocol)
	}
	var st QueueStats
	if err := json.Unmarshal(rep[1], &st); err != nil {
		return QueueStats{}, fmt.Errorf("%w: stats: %w", ErrProtocol, err)
	}
	return st, nil
}
