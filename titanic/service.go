package titanic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/internal/lograte"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// Unlimited, in a limit of Config (PerClientInflight, SubmitRate,
// MaxBody, Quota, DoneTTL), means no limit; zero means the default, as in
// every other field. broker.Config and the titanic config file spell "no
// limit" the same way.
const Unlimited = -1

// Config configures a Service. Zero fields take DefaultConfig's values.
type Config struct {
	// MaxAttempts is how many dispatches a ticket gets; when the last one
	// fails (worker lost, lease expired, worker reported failure) the
	// ticket fails for good with the last reason. A ticket's own
	// (store.RetryPolicy) or its service's (ServiceRetry) overrides it.
	MaxAttempts int
	// BackoffBase and BackoffMax shape the pause before each attempt
	// after a failed one: BackoffBase * 2^(failed attempts - 1), capped at
	// BackoffMax, with equal jitter (uniform between half of it and all
	// of it). The ticket waits it out delayed, durably (its Due). A
	// negative BackoffBase: no pause (a failed attempt is dispatched again
	// at once, as releases before backoff did). Overridden per service by
	// ServiceRetry and per ticket by store.RetryPolicy.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// ServiceRetry overrides, per service, the broker's MaxAttempts,
	// BackoffBase and BackoffMax; zero fields keep the broker's.
	ServiceRetry map[string]store.RetryPolicy
	// NoWorkerTimeout is how long a ticket waits while its service has no
	// worker registered before it fails with "no worker for service".
	// Unlimited (any negative), the default: it waits for a worker as
	// long as it takes, as in the reference Titanic; a service whose
	// workers are down for a weekend does not turn its queue into failed
	// tickets that someone must retry.
	NoWorkerTimeout time.Duration
	// MaxQueuedOps bounds client-originated mutations (submits, closes)
	// waiting for the next commit; beyond it clients get 500 busy.
	MaxQueuedOps int
	// MaxQueuedReads bounds lookups waiting for a reader; beyond it clients
	// get 500 busy.
	MaxQueuedReads int
	// Readers is the number of goroutines serving lookups.
	Readers int
	// BodyCache bounds the bytes of request bodies kept in memory for
	// dispatch; bodies beyond it are read back from the store.
	BodyCache int
	// MaxWaiters bounds titanic.wait requests parked at once.
	MaxWaiters int
	// PerClientInflight bounds the requests one client (connection) may
	// have waiting for an answer; beyond it: 500 busy. Unlimited: no
	// bound.
	PerClientInflight int
	// SubmitRate bounds one client's submits per second (bursts of as
	// many, or SubmitBurst); beyond it: 500 busy. Default (and
	// Unlimited): no limit.
	SubmitRate float64
	// SubmitBurst is how many submits a client may send at once; 0: as
	// many as SubmitRate.
	SubmitBurst int
	// MaxBody bounds the bytes of a request's body frames; beyond it: 400.
	// Unlimited: no bound.
	MaxBody int
	// Quota refuses submits (500) while the data file holds this many
	// bytes or more; lookups, replies and closes go on. Default (and
	// Unlimited): no quota.
	Quota int64
	// DiskReserve is the free space kept on the file systems of
	// DiskPaths, at most 5% of each one's size: while one has less free,
	// submits are refused (500) and replies, failures, closes and lookups
	// go on (diskfree.go). Unlimited: not checked.
	DiskReserve int64
	// DiskPaths are the directories whose file systems DiskReserve
	// watches (the data directory; the raft directory too when
	// replicated); none: not checked.
	DiskPaths []string
	// Statfs reads a file system's free space (Statfs; tests replace it).
	Statfs func(path string) (DiskSpace, error)
	// DoneTTL deletes finished tickets nobody closed this long after they
	// finished; Unlimited (any negative duration): keep them until
	// closed.
	DoneTTL time.Duration
	// SweepInterval is how often retention runs.
	SweepInterval time.Duration
	// BackupDir is where titanic.backup writes snapshots; "" disables it.
	BackupDir string
	// AllowBackup, when set, decides which addresses may ask for a
	// backup (broker.Request.From: register the service for
	// tsp.SvcBackup with broker.HandleFrom too); an error refuses it.
	AllowBackup func(from string) error
	// PresenceTimeout is how long an identified client may stay silent
	// (no titanic.hello) before it counts as disconnected.
	PresenceTimeout time.Duration
	// ObserveCommit, when set, is told once per commit how long it took,
	// from the hand-over to the store of the commit's last op until it was
	// durable (the store's batches are bounded there: store.Options).
	ObserveCommit func(time.Duration)
	// Notifier, when set, is told of every ticket state change (package
	// notify publishes them). It must not block.
	Notifier Notifier
	// Unconfirmed answers a lookup whose answer could be stale when this
	// node's leadership was not confirmed (replicated modes; see
	// confirm.go); nil, or a nil answer: Refusal (500 not active). A
	// broker passes its Gate's Refusal: a Binary Star active node that
	// lost its peer then answers "not ready", and its clients ask it
	// again instead of voting at the passive node.
	Unconfirmed func(service string) [][]byte
	// Workers, when set, reports the broker's workers per service, idle
	// and busy, for titanic.stats. It is called from a reader goroutine,
	// never from the broker loop, so it may wait for the loop
	// (broker.Broker.Stats). Without it titanic.stats reports the
	// registered workers only.
	Workers func(ctx context.Context) (map[string]WorkerCount, error)
	// Window bounds the tickets the dispatcher holds in memory per
	// service and priority level, and the delayed tickets per service;
	// the others wait in the store's dispatch indexes and are read a
	// window at a time (window.go). Zero: DefaultWindow.
	Window int
	// Logger receives the service's logs.
	Logger *slog.Logger
	// Now is the clock (tests replace it).
	Now func() time.Time
	// MintTag, when not zero, marks the tickets this node mints: the low
	// 4 bits of the ID's last byte (1-15) name the node. A pair uses it
	// to tell the tickets its peer may have minted alone.
	MintTag byte
	// MaybeElsewhere, when set, is asked about a ticket this node does
	// not hold: true means another node may hold it (the peer of a pair
	// whose split brain is not merged yet), and the lookup answers 500
	// "not ready" (try later) instead of 400 (unknown), which clients
	// take as final.
	MaybeElsewhere func(store.ID) bool
}

// Tagged reports whether id was minted by the node with tag (see
// Config.MintTag).
func Tagged(id store.ID, tag byte) bool { return tag != 0 && id[15]&0x0f == tag&0x0f }

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		MaxAttempts:       5,
		BackoffBase:       time.Second,
		BackoffMax:        5 * time.Minute,
		NoWorkerTimeout:   Unlimited,
		MaxQueuedOps:      100_000,
		MaxQueuedReads:    10_000,
		Readers:           4,
		BodyCache:         64 << 20,
		MaxWaiters:        10_000,
		PerClientInflight: 1000,
		MaxBody:           16 << 20,
		SubmitRate:        Unlimited,
		Quota:             Unlimited,
		DiskReserve:       DefaultDiskReserve,
		Statfs:            Statfs,
		DoneTTL:           7 * 24 * time.Hour,
		SweepInterval:     time.Minute,
		PresenceTimeout:   15 * time.Second,
		Logger:            slog.Default(),
		Now:               time.Now,
	}
}

func (c *Config) fill() {
	d := DefaultConfig()
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = d.MaxAttempts
	}
	if c.BackoffBase == 0 {
		c.BackoffBase = d.BackoffBase
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = d.BackoffMax
	}
	if c.NoWorkerTimeout == 0 {
		c.NoWorkerTimeout = d.NoWorkerTimeout
	}
	if c.MaxQueuedOps <= 0 {
		c.MaxQueuedOps = d.MaxQueuedOps
	}
	if c.MaxQueuedReads <= 0 {
		c.MaxQueuedReads = d.MaxQueuedReads
	}
	if c.Readers <= 0 {
		c.Readers = d.Readers
	}
	if c.BodyCache <= 0 {
		c.BodyCache = d.BodyCache
	}
	if c.MaxWaiters <= 0 {
		c.MaxWaiters = d.MaxWaiters
	}
	if c.PerClientInflight == 0 {
		c.PerClientInflight = d.PerClientInflight
	}
	if c.SubmitRate == 0 {
		c.SubmitRate = d.SubmitRate
	}
	if c.MaxBody == 0 {
		c.MaxBody = d.MaxBody
	}
	if c.Quota == 0 {
		c.Quota = d.Quota
	}
	if c.DiskReserve == 0 {
		c.DiskReserve = d.DiskReserve
	}
	if c.Statfs == nil {
		c.Statfs = d.Statfs
	}
	if c.DoneTTL == 0 {
		c.DoneTTL = d.DoneTTL
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = d.SweepInterval
	}
	if c.PresenceTimeout <= 0 {
		c.PresenceTimeout = d.PresenceTimeout
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.Now == nil {
		c.Now = d.Now
	}
}

// Notifier is told of ticket state changes; it must not block.
type Notifier interface {
	Publish(tsp.Event)
}

func notifyEvent(client, state string, t time.Time) tsp.Event {
	return tsp.Event{Client: client, State: state, Time: t}
}

// note tells the notifier of a state change.
func (s *Service) note(id store.ID, state, service string) {
	if s.cfg.Notifier != nil {
		s.cfg.Notifier.Publish(tsp.Event{Ticket: id.String(), State: state, Service: service, Time: s.cfg.Now()})
	}
}

// Broker is what the service needs of the Majordomo broker: a way to answer
// clients, free workers and announce work. Its methods must be safe to call
// from any goroutine (broker.Broker's are).
type Broker interface {
	Reply(c broker.Client, service string, body [][]byte)
	Release(lease uint64)
	Wake(service string)
}

// Service is the Titanic service: it serves 9/TSP for the broker
// (broker.Handler), feeds stored tickets to its workers (broker.Source) and
// records what they answer.
type Service struct {
	cfg Config
	// backingUp: a titanic.backup is being written (one at a time).
	backingUp atomic.Bool
	// refusals bounds the "backup refused" warnings: an outsider asking
	// in a loop must not write a line per request.
	refusals *lograte.Limiter
	// backupChecks: backup requests whose access is being checked.
	backupChecks chan struct{}
	// backupStarted, when set (by tests), is called as a backup starts
	// to be written, holding the one-at-a-time flag.
	backupStarted func()
	// sweepGate: retries hold it shared until durable, a retention
	// sweep exclusively from its listing to the hand-over of its closes
	// (see retry).
	sweepGate sync.RWMutex
	st        store.Store
	b         Broker
	log       *slog.Logger

	// commits hands mutations to the store and runs their completions
	// (commit.go); Run waits for it to drain before it returns.
	commits *committer
	stopped atomic.Bool // Run saw its ctx end

	// look answers from the store: readers, parked waits, leadership
	// confirmations (read.go, wait.go, confirm.go).
	look *lookups
	// adm decides whether a request is taken (admission.go).
	adm *admission

	// leader is the store's leadership, nil when the store is the only
	// copy of its data. When set, Activate waits for its Barrier, and
	// lookups whose answer could be stale wait for its ConfirmLeader
	// (see confirm.go).
	leader store.Leadership
	// active: this node serves (single node after Recover; replicated:
	// between Activate and Deactivate).
	active atomic.Bool

	// d is the dispatch state (dispatcher.go), which the broker loop
	// (Source methods), the store completer, the loader, the reaper, the
	// schedule and the readers share; it guards itself. The channels
	// below are how its decisions reach the goroutines that act on them.
	d *dispatcher
	// loadReq names services whose windows or bodies the loader should
	// read; reapKick asks reapLoop to look again (a window was read for a
	// service without workers); schedKick tells schedLoop an earlier time
	// is at the top of a heap.
	loadReq   chan string
	reapKick  chan struct{}
	schedKick chan struct{}

	stats counters
	tally tallies // titanic.stats: finished tickets and rates per service

	// settling counts the commits of cut-short attempts (settleCut) whose
	// completion has not run: Recover waits for them.
	settling settling
}

// settling counts work in flight and lets one wait until there is none.
type settling struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n drops to 0
}

func (c *settling) add() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == 0 {
		c.zero = make(chan struct{})
	}
	c.n++
}

func (c *settling) done() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n--; c.n == 0 {
		close(c.zero)
	}
}

// wait returns once nothing is counted, or ctx's error.
func (c *settling) wait(ctx context.Context) error {
	c.mu.Lock()
	if c.n == 0 {
		c.mu.Unlock()
		return nil
	}
	zero := c.zero
	c.mu.Unlock()
	select {
	case <-zero:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var (
	_ broker.Handler = (*Service)(nil)
	_ broker.Source  = (*Service)(nil)
)

// New returns a Service over st that answers through b. Call Recover, then
// Run. The service uses the whole store.Store contract; when
// st.Leadership() is not nil, it also waits for the store's Barrier in
// Activate and confirms leadership before lookups that could be stale.
func New(st store.Store, b Broker, cfg Config) *Service {
	cfg.fill()
	s := &Service{
		cfg:          cfg,
		st:           st,
		b:            b,
		log:          cfg.Logger.With("component", "titanic"),
		d:            newDispatcher(cfg.dispatchConfig()),
		reapKick:     make(chan struct{}, 1),
		loadReq:      make(chan string, 1024),
		backupChecks: make(chan struct{}, backupChecksInFlight),
		refusals:     lograte.New(lograte.Every),
		schedKick:    make(chan struct{}, 1),
	}
	s.adm = newAdmission(cfg, &s.stats, st, s.log)
	s.commits = newCommitter(st, cfg.MaxQueuedOps, &s.stats, s.log, cfg.ObserveCommit, func() {
		s.adm.refreshUsage()
		s.adm.refreshDisk(false)
	}, b.Wake)
	s.commits.finishing = s.d
	s.leader = st.Leadership()
	s.look = newLookups(cfg, st, s.leader, &s.stats, s.log, s.answer, s.d.leasedAttempts, s.readStats)
	s.look.unfinished = s.d.unfinishedState
	return s
}

// Recover rebuilds the dispatch queues from the store: every pending
// ticket is queued again in its service's FIFO order, at its priority
// level, or delayed until its due time; one never dispatched keeps its
// deadline. A ticket the store has dispatched was running when the node
// that dispatched it stopped or lost its role: that attempt was cut short
// and counts (dispatcher.cutShortLocked), so the ticket is requeued after
// its backoff, or fails for good when it was its last. Recover waits for
// those commits, so the broker finds the tickets where they belong. Call
// it before the broker runs.
//
// It reads the store's counts and one window of each service's queues
// (window.go), not every ticket: its time and memory do not grow with the
// backlog.
func (s *Service) Recover(ctx context.Context) error {
	counts, err := s.loadCounts(ctx)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if err := s.loadPaused(ctx); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	services, n := s.d.recover(counts, s.cfg.Now())
	for _, svc := range services {
		for s.fill(ctx, svc) {
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("recover queues: %w", err)
		}
	}
	if err := s.settling.wait(ctx); err != nil {
		return fmt.Errorf("recover: attempts cut short: %w", err)
	}
	s.log.Info("recovered dispatch queues", "tickets", n, "services", len(services))
	s.adm.refreshUsage()
	s.adm.refreshDisk(true)
	s.active.Store(true)
	return nil
}

// Run runs the readers, the body loader, the no-worker reaper and the
// schedule (delays and deadlines) until ctx is done. Mutations handed to
// the store by then are waited for (the store commits them) before Run
// returns, so no answered work is dropped on shutdown.
func (s *Service) Run(ctx context.Context) error {
	s.removeBackupLeftovers()
	var wg sync.WaitGroup
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	for range s.cfg.Readers {
		run(s.look.readLoop)
	}
	run(s.loadLoop)
	run(s.reapLoop)
	run(s.schedLoop)
	run(s.look.waitLoop)
	if s.cfg.DoneTTL > 0 {
		run(every(s.cfg.SweepInterval, func(ctx context.Context) { s.sweep(ctx) }))
	}
	if s.adm.diskEnabled() {
		// The free space is read in the background too, so the full-disk
		// mode is left (and logged) when space returns while no submit
		// comes.
		run(every(diskPollEvery, func(context.Context) { s.adm.refreshDisk(true) }))
	}
	if s.leader != nil {
		run(s.look.confirmLoop)
	}
	<-ctx.Done()
	s.stopped.Store(true)
	wg.Wait()
	s.commits.drain()
	return nil
}

// every is a loop that calls f every d until its ctx is done.
func every(d time.Duration, f func(context.Context)) func(context.Context) {
	return func(ctx context.Context) {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				f(ctx)
			}
		}
	}
}

// stopping reports whether Run's ctx ended: the service is shutting down
// and takes no new work of its own (verdicts are not tried again).
func (s *Service) stopping() bool { return s.stopped.Load() }

// ServeMDP implements broker.Handler. It runs on the broker loop: it only
// parses and enqueues; the store completer and the readers answer.
func (s *Service) ServeMDP(req broker.Request) [][]byte {
	out := s.serveMDP(req)
	if out != nil {
		// Every answer the service gives titanic.submit (and submit2),
		// at once or deferred (submit's completion), ends with the key:
		// the correlation of a client with many submits in flight.
		out = echoKey(req.Service, out, req.Body)
	}
	return out
}

// echoKey appends the key of a titanic.submit or titanic.submit2 body to
// its answer; other services' answers go out as they are. submit2's key
// may be empty, and is echoed all the same: its answers always end with
// the key frame.
func echoKey(service string, out, body [][]byte) [][]byte {
	switch service {
	case tsp.SvcSubmit:
		return withKey(out, body)
	case tsp.SvcSubmit2:
		if len(body) > 0 && len(body[0]) <= MaxIdemKey {
			return append(out, body[0])
		}
	}
	return out
}

// withKey appends the idempotency key of a titanic.submit body to its
// answer. A body without a valid key (refused as malformed) has no key to
// echo: its answer goes out as it is.
func withKey(out [][]byte, body [][]byte) [][]byte {
	if len(body) == 0 || len(body[0]) == 0 || len(body[0]) > MaxIdemKey {
		return out
	}
	return append(out, body[0])
}

func (s *Service) serveMDP(req broker.Request) [][]byte {
	submit := req.Service == tsp.SvcRequest || req.Service == tsp.SvcSubmit || req.Service == tsp.SvcSubmit2
	var sr submitReq
	if submit {
		// A malformed submit is refused before it costs the client a
		// token of its rate.
		var err error
		if req.Service == tsp.SvcSubmit2 {
			sr, err = parseSubmit2(req.Body, s.cfg.Now())
		} else {
			sr, err = parseSubmit(req.Body, req.Service == tsp.SvcSubmit)
		}
		if err != nil {
			s.stats.badRequests.Add(1)
			return replyText(tsp.CodeUnknown, err.Error())
		}
		if n := bodySize(sr.body); s.adm.bodyTooLarge(n) {
			return replyText(tsp.CodeUnknown, s.adm.bodyTooLargeText(n))
		}
		if out := s.adm.refuseSubmit(req.Unread); out != nil {
			return out
		}
	}
	if out := s.adm.admit(req.Client, submit); out != nil {
		return out
	}
	var out [][]byte
	if submit {
		out = s.submit(req, sr)
	} else {
		out = s.serve(req)
	}
	if out != nil {
		s.adm.release(req.Client) // answered at once
	}
	return out
}

func (s *Service) serve(req broker.Request) [][]byte {
	switch req.Service {
	case tsp.SvcClose:
		id, err := parseTicket(req.Body)
		if err != nil {
			// 9/TSP: close is idempotent; a ticket that cannot exist is
			// as closed as one that was.
			return reply(tsp.CodeOK)
		}
		return s.closeTicket(req, id)
	case tsp.SvcReply:
		if out, ok := s.look.fromMemory(req.Body); ok {
			return out
		}
		return s.look.lookup(req)
	case tsp.SvcStatus, tsp.SvcList, tsp.SvcStats:
		return s.look.lookup(req)
	case tsp.SvcWait:
		return s.look.wait(req)
	case tsp.SvcBackup:
		return s.backup(req)
	case tsp.SvcHello, tsp.SvcBye:
		return s.adm.hello(req.Body, req.Service == tsp.SvcBye)
	case tsp.SvcClients:
		return s.adm.listClients()
	case tsp.SvcRetry, tsp.SvcCancel, tsp.SvcPause, tsp.SvcResume, tsp.SvcAttempts, tsp.SvcPurge:
		return s.serveLifecycle(req)
	}
	s.stats.badRequests.Add(1)
	return replyText(tsp.CodeUnknown, tsp.UnknownServiceText(req.Service))
}

// Serves implements broker.Handler.
func (s *Service) Serves(service string) bool { return tsp.Served(service) }

// answer sends a deferred answer to c and counts it out of c's in-flight
// requests: the answer path of every part that answers later.
func (s *Service) answer(c broker.Client, service string, body [][]byte) {
	s.adm.release(c)
	s.b.Reply(c, service, body)
}

// Clients lists the connected clients, by id.
func (s *Service) Clients() []ClientPresence { return s.adm.clients() }

// DiskStatus reports the full-disk mode (zero when it is not configured).
func (s *Service) DiskStatus() DiskStatus { return s.adm.diskStatus() }

// enqueue hands ops to the committer (see committer.enqueue).
func (s *Service) enqueue(ops ...pendingOp) error { return s.commits.enqueue(ops...) }

var errBusy = errors.New("busy")

func busyReply() [][]byte { return replyText(tsp.CodeError, string(tsp.Busy)) }
