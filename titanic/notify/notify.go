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
// Each event is sent once per topic it belongs to, as frames
//
//	[topic | ticket | state | service | unix-nanos]
//
// with topics "ticket.<ticket>", "service.<service>" and, for presence
// events, "client.<id>" (state "connected" or "disconnected", no ticket).
// Subscribers filter on the topic prefix (ZeroMQ SUB subscriptions).
package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// Topic prefixes.
const (
	TicketTopic  = "ticket."
	ServiceTopic = "service."
	ClientTopic  = "client."
)

// Event is one state change.
type Event struct {
	Ticket  string
	State   string // pending, dispatched, done, failed, closed; connected, disconnected
	Service string
	Client  string
	Time    time.Time
}

// queueLen bounds events waiting for the socket goroutine.
const queueLen = 16384

// Publisher publishes events on a PUB socket.
type Publisher struct {
	endpoint string
	log      *slog.Logger
	events   chan Event
	ready    chan struct{}
	bound    atomic.Value // string
	dropped  atomic.Uint64
	sent     atomic.Uint64
}

// New returns a Publisher that will bind endpoint when Run.
func New(endpoint string, log *slog.Logger) *Publisher {
	if log == nil {
		log = slog.Default()
	}
	return &Publisher{endpoint: endpoint, log: log.With("component", "notify"), events: make(chan Event, queueLen), ready: make(chan struct{})}
}

// Publish queues ev without blocking; it is dropped (and counted) when the
// queue is full.
func (p *Publisher) Publish(ev Event) {
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
	_ = pub.SetSndhwm(100_000)
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
			for _, topic := range topics(ev) {
				_, err := pub.SendMessageDontwait(topic, ev.Ticket, ev.State, ev.Service, strconv.FormatInt(ev.Time.UnixNano(), 10))
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

func topics(ev Event) []string {
	var out []string
	if ev.Ticket != "" {
		out = append(out, TicketTopic+ev.Ticket)
	}
	if ev.Service != "" {
		out = append(out, ServiceTopic+ev.Service)
	}
	if ev.Client != "" {
		out = append(out, ClientTopic+ev.Client)
	}
	return out
}

// Version is the notification format's version (`titanic version` prints
// it). A notification is [topic | ticket | state | service | time]; a later
// version only appends frames, which Parse ignores, so that subscribers of
// every release read every publisher's events.
const Version = 1

// Parse decodes a notification's frames; frames after the fifth (a later
// version's) are ignored.
func Parse(frames []string) (Event, error) {
	if len(frames) < 5 {
		return Event{}, fmt.Errorf("notification of %d frames, want 5", len(frames))
	}
	ns, err := strconv.ParseInt(frames[4], 10, 64)
	if err != nil {
		return Event{}, fmt.Errorf("notification time %q: %w", frames[4], err)
	}
	ev := Event{Ticket: frames[1], State: frames[2], Service: frames[3], Time: time.Unix(0, ns)}
	if c, ok := cutPrefix(frames[0], ClientTopic); ok {
		ev.Client = c
	}
	return ev, nil
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return "", false
}
