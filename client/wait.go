package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// WaitOptions tune Wait.
type WaitOptions struct {
	// PollInterval caps the time between lookups when no notice comes
	// (notices can be lost: PUB drops for slow subscribers). Default 5s.
	PollInterval time.Duration
}

// Wait waits until ticket is answered and returns its reply, like Reply
// with Wait, but woken by the brokers' notifications (Config.Notify):
// a notice about the ticket makes it look the ticket up at once. It looks
// the ticket up on its own too, a short while after subscribing (a new
// subscription takes a moment to reach the publisher) and then every
// PollInterval, so a lost notice costs time, never the answer. Without
// Config.Notify it is Reply with Wait.
func (c *Client) Wait(ctx context.Context, ticket string, opt WaitOptions) ([][]byte, error) {
	if len(c.cfg.Notify) == 0 {
		return c.Reply(ctx, ticket, ReplyOptions{Wait: true})
	}
	poll := opt.PollInterval
	if poll <= 0 {
		poll = 5 * time.Second
	}
	select {
	case <-c.quit:
		return nil, ErrClosed
	default:
	}
	// Notifications name the ticket in its lowercase 32-hex form: a
	// ticket given otherwise would match none of them.
	if tk, ok := normalTicket(ticket); ok {
		ticket = tk
	}
	// This goroutine alone uses sub, until Wait returns.
	sub, err := c.zc.ZMQ().NewSocket(zmq.SUB)
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	defer sub.Close()
	_ = sub.SetLinger(0)
	if err := sub.SetSubscribe(tsp.TicketTopic + ticket); err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	for _, ep := range c.cfg.Notify {
		if err := sub.Connect(ep); err != nil {
			return nil, fmt.Errorf("connect %s: %w", ep, err)
		}
	}
	poller := zmq.NewPoller()
	poller.Add(sub, zmq.POLLIN)
	next := 50 * time.Millisecond // first look soon: the subscription may be late
	for {
		rep, err := c.Reply(ctx, ticket, ReplyOptions{})
		if !errors.Is(err, ErrPending) && !errors.Is(err, ErrServer) {
			return rep, err
		}
		deadline := time.Now().Add(next)
		next = min(2*next, poll)
		woken := false
		for !woken {
			left := time.Until(deadline)
			if left <= 0 {
				break
			}
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("waiting for %s: %w", ticket, err)
			}
			select {
			case <-c.quit:
				// Close terminates the context this socket belongs to:
				// return, so that it can.
				return nil, ErrClosed
			default:
			}
			polled, err := poller.Poll(min(left, 100*time.Millisecond))
			if err != nil {
				if zmq.AsErrno(err) == zmq.ETERM {
					return nil, ErrClosed
				}
				continue
			}
			if len(polled) == 0 {
				continue
			}
			msg, err := sub.RecvMessage(0)
			if err != nil {
				continue
			}
			if ev, err := tsp.ParseEvent(msg); err == nil && ev.Ticket == ticket {
				c.notices.Add(1)
				woken = ev.Final()
			}
		}
	}
}
