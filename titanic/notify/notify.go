// Package notify publishes ticket state changes on a ZeroMQ PUB socket, so
// that clients waiting for a ticket are told at once instead of polling.
//
// # What it owns
//
// A Publisher owns one PUB socket and the goroutine that uses it; other
// goroutines hand it events through a bounded channel and never block:
// when the channel is full the event is dropped and counted. PUB may drop
// too (slow subscribers); a notice is a hint to look the ticket up, the
// store is the truth, and waiting clients also poll, slowly.
//
// # Wire format
//
// The events and their frames are package tsp's (tsp.Event), which the
// client's subscribers read with tsp.ParseEvent; this package only
// publishes them.
package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// queueLen bounds events waiting for the socket goroutine.
const queueLen = 16384

// Publisher publishes events on a PUB socket.
type Publisher struct {
	endpoint string
	log      *slog.Logger
	events   chan tsp.Event
	ready    chan struct{}
	bound    atomic.Value // string
	dropped  atomic.Uint64
	sent     atomic.Uint64
}

// notifyHWM bounds the events queued for one subscriber.
const notifyHWM = 1000

// New returns a Publisher that will bind endpoint when Run.
func New(endpoint string, log *slog.Logger) *Publisher {
	if log == nil {
		log = slog.Default()
	}
	return &Publisher{endpoint: endpoint, log: log.With("component", "notify"), events: make(chan tsp.Event, queueLen), ready: make(chan struct{})}
}

// Publish queues ev without blocking; it is dropped (and counted) when the
// queue is full.
func (p *Publisher) Publish(ev tsp.Event) {
	if p == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	select {
	case p.events <- ev:
	default:
		p.dropped.Add(1)
	}
}

// Ready is closed once Run has bound the socket.
func (p *Publisher) Ready() <-chan struct{} { return p.ready }

// Endpoint is the bound endpoint (with its port), after Ready.
func (p *Publisher) Endpoint() string {
	s, _ := p.bound.Load().(string)
	return s
}

// Stats returns how many events were sent and dropped.
func (p *Publisher) Stats() (sent, dropped uint64) { return p.sent.Load(), p.dropped.Load() }

// Run binds the PUB socket and publishes events until ctx is done.
func (p *Publisher) Run(ctx context.Context) error {
	zctx, err := zmq.NewContext()
	if err != nil {
		return fmt.Errorf("notify: zmq context: %w", err)
	}
	defer zctx.Term()
	pub, err := zctx.NewSocket(zmq.PUB)
	if err != nil {
		return fmt.Errorf("notify: socket: %w", err)
	}
	defer pub.Close()
	_ = pub.SetLinger(0)
	// A subscriber that does not read costs this many queued events,
	// then its events are dropped (README: notifications are a hint);
	// at 100,000 each stalled subscriber held ~25 MiB, and anyone may
	// connect. A subscription (a topic) is under 300 bytes: nothing
	// larger is read (found by an outside-in tester).
	_ = pub.SetSndhwm(notifyHWM)
	_ = pub.SetMaxmsgsize(4096)
	if err := pub.Bind(p.endpoint); err != nil {
		return fmt.Errorf("notify: bind %s: %w", p.endpoint, err)
	}
	ep, _ := pub.GetLastEndpoint()
	p.bound.Store(ep)
	close(p.ready)
	p.log.Info("publishing notifications", "endpoint", ep)
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-p.events:
			for _, topic := range ev.Topics() {
				_, err := pub.SendMessageDontwait(ev.Frames(topic))
				if err != nil {
					if !errors.Is(err, syscall.EAGAIN) && zmq.AsErrno(err) != zmq.Errno(syscall.EAGAIN) {
						p.log.Warn("publish", "err", err)
					}
					p.dropped.Add(1)
					continue
				}
				p.sent.Add(1)
			}
		}
	}
}
