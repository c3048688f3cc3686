package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// QueueStats is the broker's answer to titanic.stats: every service's
// queue. The JSON is the broker's, field for field (and the HTTP API's
// /api/v1/queues).
type QueueStats struct {
	Time time.Time `json:"time"`
	// WindowSeconds is the window of the rates.
	WindowSeconds float64        `json:"window_seconds"`
	Services      []ServiceQueue `json:"services"`
}

// ServiceQueue is one service's queue.
type ServiceQueue struct {
	Service string `json:"service"`
	// Pending tickets wait for a worker, Delayed ones for their time
	// (always 0 so far), InFlight ones are with a worker (dispatched).
	Pending  int `json:"pending"`
	Delayed  int `json:"delayed"`
	InFlight int `json:"in_flight"`
	// Done and Failed are the finished tickets the broker holds.
	Done   int `json:"done"`
	Failed int `json:"failed"`
	// Workers registered; Idle and Busy are nil when the broker does not
	// know them.
	Workers int  `json:"workers"`
	Idle    *int `json:"idle,omitempty"`
	Busy    *int `json:"busy,omitempty"`
	// SubmitRate (new tickets) and ReplyRate (recorded replies) per
	// second over the last WindowSeconds.
	SubmitRate float64 `json:"submits_per_sec"`
	ReplyRate  float64 `json:"replies_per_sec"`
}

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
