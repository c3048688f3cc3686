package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/titanicmq/titanic/broker/zsock"
)

// commandQueue is the capacity of the command channel; calls beyond it
// spill to the overflow list (see push).
const commandQueue = 4096

// Broker is a Majordomo (7/MDP + 8/MMI) broker with hooks for durable work.
// Configure it with Handle and SetSource, then call Run. Reply, Release,
// Wake and Stats are safe for concurrent use, including from Handler and
// Source callbacks (except Stats, which would deadlock there).
type Broker struct {
	cfg Config
	log *slog.Logger

	// Set before Run; read by Run.
	handlers []prefixHandler
	source   Source
	gate     Gate
	setupErr error

	// Commands from other goroutines to the loop: a bounded channel, an
	// overflow list for when it is full, and the doorbell.
	cmds      chan command
	ovMu      sync.Mutex
	overflow  []command
	overflows atomic.Uint64
	bell      *zsock.Doorbell
	// wake, while Run waits in Go's poller (no peering), is woken in
	// place of the doorbell.
	wake atomic.Pointer[zsock.Readable]

	started atomic.Bool
	ready   chan struct{} // closed once bound
	done    chan struct{} // closed when Run returns

	epMu      sync.Mutex
	endpoints []string
}

type commandKind int

const (
	cmdReply commandKind = iota + 1
	cmdRelease
	cmdWake
	cmdStats
)

// command is a request from another goroutine to the loop.
type command struct {
	kind    commandKind
	client  Client
	service string
	body    [][]byte
	lease   uint64
	stats   chan<- Stats
}

// New returns a Broker for cfg. Zero fields of cfg take the values of
// DefaultConfig; an invalid setting is an error.
func New(cfg Config) (*Broker, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("broker config: %w", err)
	}
	cfg.Endpoints = append([]string(nil), cfg.Endpoints...)
	return &Broker{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "broker"),
		cmds:  make(chan command, commandQueue),
		bell:  zsock.NewDoorbell(),
		ready: make(chan struct{}),
		done:  make(chan struct{}),
	}, nil
}

// Handle routes client requests for every service whose name starts with
// prefix (e.g. "titanic.") to h, on the loop goroutine. Workers may not
// register such services, and mmi.service reports them present. The longest
// matching prefix wins. Call it before Run; an invalid prefix (empty, or
// overlapping "mmi.") or a nil h makes Run fail.
func (b *Broker) Handle(prefix string, h Handler) { b.handle(prefix, h, false) }

// HandleFrom is Handle, and the handler's requests carry the address
// they came from (Request.From): reading it costs every message the
// broker receives a lookup, so only handlers that need it ask.
func (b *Broker) HandleFrom(prefix string, h Handler) { b.handle(prefix, h, true) }

func (b *Broker) handle(prefix string, h Handler, from bool) {
	if b.started.Load() {
		b.log.Error("Handle called after Run: ignored", "prefix", prefix)
		return
	}
	err := checkPrefix(prefix)
	if err == nil && h == nil {
		err = errors.New("nil handler")
	}
	for _, ph := range b.handlers {
		if err == nil && ph.prefix == prefix {
			err = errors.New("registered twice")
		}
	}
	if err != nil {
		b.setupErr = errors.Join(b.setupErr, fmt.Errorf("handle %q: %w", prefix, err))
		return
	}
	b.handlers = append(b.handlers, prefixHandler{prefix: prefix, h: h, from: from})
	sort.SliceStable(b.handlers, func(i, j int) bool { return len(b.handlers[i].prefix) > len(b.handlers[j].prefix) })
}

// SetSource sets the supplier of durable work. Call it before Run. Without
// a Source the broker runs plain Majordomo only.
func (b *Broker) SetSource(s Source) {
	if b.started.Load() {
		b.log.Error("SetSource called after Run: ignored")
		return
	}
	b.source = s
}

// SetGate makes the broker serve only while g says so (replicated
// deployments). Call it before Run. Without a Gate the broker always
// serves.
func (b *Broker) SetGate(g Gate) {
	if b.started.Load() {
		b.log.Error("SetGate called after Run: ignored")
		return
	}
	b.gate = g
}

// Ready is closed once Run has bound its endpoints.
func (b *Broker) Ready() <-chan struct{} { return b.ready }

// Endpoints returns the endpoints Run bound, as ZeroMQ reports them (a
// "tcp://127.0.0.1:*" wildcard comes back with its port), or nil before
// Ready.
func (b *Broker) Endpoints() []string {
	b.epMu.Lock()
	defer b.epMu.Unlock()
	return append([]string(nil), b.endpoints...)
}

// Reply sends body to client c as the reply of service: the deferred answer
// of a Handler that returned nil. It never blocks; after Run has returned
// it does nothing.
func (b *Broker) Reply(c Client, service string, body [][]byte) {
	b.push(command{kind: cmdReply, client: c, service: service, body: body})
}

// Release frees the worker holding lease id, whose reply Source.Completed
// received: it may be given new work. Releasing an unknown, expired or
// already released lease does nothing. It never blocks.
func (b *Broker) Release(id uint64) {
	b.push(command{kind: cmdRelease, lease: id})
}

// Wake tells the broker that durable work may be available for service: it
// asks the Source for jobs for each idle worker of service. It never blocks.
func (b *Broker) Wake(service string) {
	b.push(command{kind: cmdWake, service: service})
}

// Stats returns a snapshot taken on the loop goroutine. It waits for Run
// to take it; it returns ctx's error when ctx ends first and ErrClosed when
// Run has returned. Do not call it from a Handler or Source callback.
func (b *Broker) Stats(ctx context.Context) (Stats, error) {
	reply := make(chan Stats, 1)
	if !b.push(command{kind: cmdStats, stats: reply}) {
		return Stats{}, ErrClosed
	}
	select {
	case st := <-reply:
		return st, nil
	case <-ctx.Done():
		return Stats{}, ctx.Err()
	case <-b.done:
		select {
		case st := <-reply:
			return st, nil
		default:
			return Stats{}, ErrClosed
		}
	}
}

// push queues cmd for the loop and rings the doorbell. It never blocks:
// when the channel is full (a burst, or a callback on the loop itself
// calling Release or Wake), cmd goes to the overflow list, and so does
// every later command until the loop empties it, so each caller's commands
// keep their order. It reports false when Run has returned.
func (b *Broker) push(cmd command) bool {
	select {
	case <-b.done:
		return false
	default:
	}
	b.ovMu.Lock()
	queued := false
	if len(b.overflow) == 0 {
		select {
		case b.cmds <- cmd:
			queued = true
		default:
		}
	}
	if !queued {
		b.overflow = append(b.overflow, cmd)
		b.overflows.Add(1)
	}
	b.ovMu.Unlock()
	b.ring()
	return true
}

// ring wakes the loop: directly when it waits in Go's poller, else
// through the doorbell, whose goroutine turns it into a frame on the
// inproc socket the loop polls. Rings coalesce.
func (b *Broker) ring() {
	if r := b.wake.Load(); r != nil {
		r.Wake()
		return
	}
	b.bell.Ring()
}

// drainCommands runs the queued commands on the loop goroutine, without
// blocking. Under the overflow lock no command can be queued, so the n
// commands in the channel then the overflow list are, in order, everything
// queued so far; later ones rang the doorbell again and wait for the next
// pass.
func (b *Broker) drainCommands(s *state) {
	b.ovMu.Lock()
	n := len(b.cmds)
	ov := b.overflow
	b.overflow = nil
	b.ovMu.Unlock()
	for ; n > 0; n-- {
		b.runCommand(s, <-b.cmds)
	}
	for _, cmd := range ov {
		b.runCommand(s, cmd)
	}
}

func (b *Broker) runCommand(s *state, cmd command) {
	now := time.Now()
	switch cmd.kind {
	case cmdReply:
		s.reply(cmd.client, cmd.service, cmd.body)
	case cmdRelease:
		s.release(now, cmd.lease)
	case cmdWake:
		s.wake(now, cmd.service)
	case cmdStats:
		st := s.snapshot()
		st.CommandOverflows = b.overflows.Load()
		cmd.stats <- st // buffered, one reply
	}
}
