package client

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrShardUnavailable: the shard a call had to go to did not answer (none
// of its brokers did, within its Config's tries). Errors wrapping it also
// wrap ErrUnavailable. A lookup of a ticket whose shard is down fails with
// it, never with ErrUnknown: the ticket is not known to be gone, only out
// of reach.
var ErrShardUnavailable = errors.New("shard unavailable")

// DefaultProbeInterval is how often a Sharded client checks whether a
// shard it saw down answers again.
const DefaultProbeInterval = time.Second

// probeTicket is what a probe looks up: not a ticket at all, so a live
// broker answers 400 at once without reading its store, and a broker that
// is not active answers "not active" (which the Client does not count as
// an answer).
const probeTicket = "shard-probe"

// Sharded is a client of several independent titanic clusters, the
// shards, each reached through its own Client (and so its own failover
// list of brokers: a shard may be a single broker, a pair or a group).
// Shards share nothing: a ticket lives on the shard that stored it, and
// an idempotency key is only known to the shard that saw it.
//
// # Shard tickets
//
// The tickets of a Sharded client name their shard: "SHARD:TICKET", the
// shard's index in the list given to NewSharded, a colon and the shard's
// own 32-hexadecimal ticket, e.g. "2:0190f6c5e0a87b3c9d2e4f5a6b7c8d9e".
// A shell takes it as one word without quotes. ParseShardTicket splits it.
// The index is the shard's name: every client of the same shards must list
// them in the same order, and a shard may be added at the end but not
// removed or moved.
//
// # Where submits go
//
// A submit with an idempotency key goes to the key's home shard, chosen by
// rendezvous hashing (the highest of a 64-bit FNV-1a hash of the key mixed
// with each shard's index): the same key always goes to the same shard, on
// every client, keys spread evenly, and adding a shard moves only the keys
// that the new shard wins. When the home shard does not answer, or is seen
// down (see Health; then the submit fails at once, without a round of
// tries that would only time out), the submit fails with
// ErrShardUnavailable and the caller retries it later with the same key.
// It does not go to another shard, because a submit that timed
// out may have been stored anyway (the answer was lost, not the request):
// a second shard would then make a second ticket for the key, run the job
// twice, and leave the key with two answers; and even when the home shard
// never saw it, the key's next submit, once the home shard is back, would
// make a ticket there too, since the shards do not share their keys.
// Pinning a key to its shard keeps "one key, one ticket" across crashes,
// the guarantee keys exist for. WithKeyedFallback trades it for
// availability: see there.
//
// A submit without a key goes round robin over the shards, skipping the
// ones seen down; when the shard it tried does not answer (or answers busy,
// ErrServer), it moves on to the next, so new work keeps flowing to the
// healthy shards while one is down. Not when the shard said the submit
// may be stored ("outcome unknown": a raft leader lost its leadership
// with it in flight) and its resend then failed: Submit returns that
// error, naming the shard and the random key, with which the caller can
// resend it there without a second ticket: a keyed Submit of this Sharded
// with that key goes to that shard, since the key is drawn to have it as
// its home shard (a keyed submit with WithKeyedFallback stops there too). The price: an unkeyed submit that
// timed out on a shard that had stored it before dying leaves a ticket
// there that no caller knows, and its job runs on both shards. Work that
// must run once carries a key.
//
// # Health
//
// A shard is down from the moment a call to it fails with ErrUnavailable
// until it answers again: a lookup of one of its tickets, or the probe the
// client sends every probe interval (DefaultProbeInterval) to each down
// shard. Unkeyed submits skip down shards (and try them anyway, last, when
// every shard is down); keyed submits homed on a down shard fail at once.
// Lookups always go to their ticket's shard, down or
// not: the caller asked for that ticket, and an answer is the quickest way
// to learn the shard is back.
//
// # Lookups and List
//
// Status, Reply, Wait, CloseTicket take a shard ticket and ask its shard
// only; when it does not answer they fail with an error wrapping
// ErrShardUnavailable and ErrUnavailable, never ErrUnknown. List merges
// the shards' lists (see there).
//
// A Sharded client is safe for concurrent use; calls to different shards
// run in parallel, calls to one shard one at a time (as on a Client).
type Sharded struct {
	shards   []*shard
	log      *slog.Logger
	opts     shardOptions
	rr       atomic.Uint64
	ctx      context.Context // cancelled by Close: ends the probes
	cancel   context.CancelFunc
	done     chan struct{}
	closing  sync.Once
	closeErr error
}

// shard is one cluster of a Sharded client.
type shard struct {
	index   int
	c       *Client
	cfg     Config
	down    atomic.Bool
	probing atomic.Bool
	// probe is the Client of the probes, made at the first one: a Client
	// serves one call at a time, and a probe of a dead shard lasts its
	// whole round of tries, which the caller's lookups would wait behind.
	// Only the probe goroutine of the moment uses it; Close closes it.
	probe *Client
}

// ShardOption tunes NewSharded.
type ShardOption func(*shardOptions)

type shardOptions struct {
	keyedFallback bool
	probeInterval time.Duration
}

// WithKeyedFallback lets a keyed submit whose home shard does not answer
// go to the next shard of the key's rendezvous order that answers (shards
// seen down are tried last). Submits then go on while a shard is down, but
// a key may get a ticket on two shards, and its job run twice: when the
// home shard had stored the submit that timed out, or when the key is
// submitted again after the home shard is back (the fallback shard's
// ticket is unknown there). While the home shard stays down, the same key
// keeps going to the same fallback shard, whose key index returns its first
// ticket. Use it when availability matters more than exactly-once, or when
// keys are never resubmitted and a rare duplicate is harmless.
func WithKeyedFallback() ShardOption {
	return func(o *shardOptions) { o.keyedFallback = true }
}

// WithProbeInterval sets how often down shards are probed (default
// DefaultProbeInterval).
func WithProbeInterval(d time.Duration) ShardOption {
	return func(o *shardOptions) {
		if d > 0 {
			o.probeInterval = d
		}
	}
}

// NewSharded returns a client of the shards, one Config per shard (its
// failover list of brokers, timeouts, logger...). Each shard needs its own
// brokers: an endpoint in two shards is a configuration error. Like New,
// it does not connect until the first call.
func NewSharded(shards []Config, opts ...ShardOption) (*Sharded, error) {
	if len(shards) == 0 {
		return nil, fmt.Errorf("%w: no shards", ErrConfig)
	}
	o := shardOptions{probeInterval: DefaultProbeInterval}
	for _, opt := range opts {
		opt(&o)
	}
	seen := map[string]int{}
	for i, cfg := range shards {
		if len(cfg.Brokers) == 0 {
			return nil, fmt.Errorf("%w: shard %d has no brokers", ErrConfig, i)
		}
		for _, b := range cfg.Brokers {
			if j, dup := seen[b]; dup && j != i {
				return nil, fmt.Errorf("%w: broker %s is in shards %d and %d", ErrConfig, b, j, i)
			}
			seen[b] = i
		}
	}
	s := &Sharded{opts: o, done: make(chan struct{})}
	s.log = slog.Default()
	if shards[0].Logger != nil {
		s.log = shards[0].Logger
	}
	s.log = s.log.With("component", "sharded-client")
	for i, cfg := range shards {
		c, err := New(cfg)
		if err != nil {
			for _, sh := range s.shards {
				_ = sh.c.Close()
			}
			return nil, fmt.Errorf("shard %d: %w", i, err)
		}
		s.shards = append(s.shards, &shard{index: i, c: c, cfg: cfg})
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go s.probeLoop()
	return s, nil
}

// Close stops the probes and closes every shard's Client; calls in
// progress fail with ErrClosed.
func (s *Sharded) Close() error {
	s.closing.Do(func() {
		s.cancel()
		<-s.done
		var errs []error
		for _, sh := range s.shards {
			errs = append(errs, sh.c.Close())
			if sh.probe != nil {
				errs = append(errs, sh.probe.Close())
			}
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// Len returns the number of shards.
func (s *Sharded) Len() int { return len(s.shards) }

// Shard returns shard i's Client, for calls a Sharded client does not
// make (Request, Stats, or a List of the healthy shards while one is
// down). Its tickets are the shard's own, without the "SHARD:" prefix.
func (s *Sharded) Shard(i int) *Client { return s.shards[i].c }

// Healthy reports whether shard i is not seen down.
func (s *Sharded) Healthy(i int) bool { return !s.shards[i].down.Load() }

// ShardTicket formats a shard ticket: "SHARD:TICKET".
func ShardTicket(shard int, ticket string) string {
	return strconv.Itoa(shard) + ":" + ticket
}

// ParseShardTicket splits a shard ticket into its shard index and the
// shard's own ticket (32 lowercase hexadecimal characters; a dashed UUID
// form or upper case is accepted and normalised). A malformed shard ticket
// is an error wrapping ErrUnknown, as a malformed ticket is to a broker.
func ParseShardTicket(s string) (shard int, ticket string, err error) {
	idx, tk, ok := strings.Cut(s, ":")
	if !ok {
		return 0, "", fmt.Errorf("%w %q: want SHARD:TICKET", ErrUnknown, s)
	}
	if idx == "" || len(idx) > 6 || (len(idx) > 1 && idx[0] == '0') || strings.Trim(idx, "0123456789") != "" {
		return 0, "", fmt.Errorf("%w %q: shard %q is not an index", ErrUnknown, s, idx)
	}
	shard, _ = strconv.Atoi(idx) // six digits at most: cannot fail
	tk, ok = normalTicket(tk)
	if !ok {
		return 0, "", fmt.Errorf("%w %q: want a 32-hex ticket after the colon", ErrUnknown, s)
	}
	return shard, tk, nil
}

// normalTicket returns a ticket in its 32 lowercase hexadecimal form, the
// one brokers answer with and publish notifications under, from that form,
// upper case or the dashed UUID form (all of which a broker takes); ok is
// false when tk is none of them.
func normalTicket(tk string) (string, bool) {
	if len(tk) == 36 && tk[8] == '-' && tk[13] == '-' && tk[18] == '-' && tk[23] == '-' {
		tk = strings.ReplaceAll(tk, "-", "")
	}
	if len(tk) != 32 {
		return "", false
	}
	if _, err := hex.DecodeString(tk); err != nil {
		return "", false
	}
	return strings.ToLower(tk), true
}

// ShardFor returns the home shard of an idempotency key.
func (s *Sharded) ShardFor(key string) int { return rendezvous(key, len(s.shards))[0] }

// rendezvous returns the shard indexes in the key's rendezvous order:
// highest score first, ties to the lower index.
func rendezvous(key string, n int) []int {
	h := fnv1a64(key)
	scores := make([]uint64, n)
	order := make([]int, n)
	for i := range n {
		scores[i] = mix64(h ^ mix64(uint64(i)+0x9e3779b97f4a7c15))
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case scores[a] > scores[b]:
			return -1
		case scores[a] < scores[b]:
			return 1
		}
		return 0
	})
	return order
}

// fnv1a64 is 64-bit FNV-1a: stable across processes and versions, unlike
// hash/maphash.
func fnv1a64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix64 is SplitMix64's finaliser: every input bit moves every output bit,
// which FNV alone does poorly for keys that differ in their last bytes.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Submit stores a durable request on one shard and returns its shard
// ticket. With opt.IdemKey it goes to the key's home shard only (unless
// WithKeyedFallback); without, round robin over the healthy shards, each
// try under a random key homed on the shard it goes to. See Sharded for
// why.
func (s *Sharded) Submit(ctx context.Context, service string, body [][]byte, opt SubmitOptions) (string, error) {
	if opt.IdemKey != "" {
		return s.submitKeyed(ctx, service, body, opt)
	}
	// Round robin over the healthy shards; then the ones seen down, which
	// may be back before their probe says so.
	var up, down []*shard
	for _, sh := range s.shards {
		if sh.down.Load() {
			down = append(down, sh)
		} else {
			up = append(up, sh)
		}
	}
	turn := s.rr.Add(1) - 1
	if len(up) > 0 {
		k := int(turn % uint64(len(up)))
		up = slices.Concat(up[k:], up[:k])
	}
	var errs []error
	for _, sh := range append(up, down...) {
		// The key is drawn here, homed on sh, rather than left to sh's
		// Client: when sh says the submit may be stored, the error gives
		// this key, and the caller's keyed resend through this Sharded
		// goes to the key's home shard, which must be sh. A key homed
		// elsewhere would take the resend to a shard that does not know
		// it, and make a second ticket.
		key, err := s.keyFor(sh)
		if err != nil {
			return "", err
		}
		opt.IdemKey = key
		tk, err := s.submitTo(ctx, sh, service, body, opt)
		if err == nil {
			return tk, nil
		}
		if err := heldBy(sh, err); err != nil {
			return "", err
		}
		if !errors.Is(err, ErrShardUnavailable) && !errors.Is(err, ErrServer) {
			return "", err
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("submit to %s: no shard of %d took it: %w", clipName(service), len(s.shards), errors.Join(errs...))
}

func (s *Sharded) submitKeyed(ctx context.Context, service string, body [][]byte, opt SubmitOptions) (string, error) {
	order := rendezvous(opt.IdemKey, len(s.shards))
	home := s.shards[order[0]]
	if !s.opts.keyedFallback {
		if home.down.Load() {
			// Nothing is sent: no ticket can come of it.
			return "", fmt.Errorf("%w: shard %d, the home of key %q, is down (%w); retry later with the same key", ErrShardUnavailable, home.index, opt.IdemKey, ErrUnavailable)
		}
		return s.submitTo(ctx, home, service, body, opt)
	}
	// The fallback order: the key's rendezvous order, the shards seen
	// down last (so the home shard is skipped while it is seen down).
	var up, down []*shard
	for _, i := range order {
		if sh := s.shards[i]; sh.down.Load() {
			down = append(down, sh)
		} else {
			up = append(up, sh)
		}
	}
	var errs []error
	for _, sh := range append(up, down...) {
		tk, err := s.submitTo(ctx, sh, service, body, opt)
		if err == nil {
			if sh != home {
				s.log.Debug("keyed submit went to a fallback shard", "home", home.index, "shard", sh.index)
			}
			return tk, nil
		}
		if err := heldBy(sh, err); err != nil {
			return "", err
		}
		if !errors.Is(err, ErrShardUnavailable) {
			return "", err
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("submit to %s: no shard of %d answered: %w", clipName(service), len(s.shards), errors.Join(errs...))
}

// keyFor draws random idempotency keys until one's home shard is sh: n
// draws on average for n shards, each a UUID and n hashes.
func (s *Sharded) keyFor(sh *shard) (string, error) {
	for {
		key, err := newKey()
		if err != nil {
			return "", err
		}
		if s.ShardFor(key) == sh.index {
			return key, nil
		}
	}
}

// heldBy returns err naming sh when sh said the submit may be stored
// ("outcome unknown"; err gives its key), and nil for any other err. Such
// a submit goes to no other shard: under a new random key (or the same key
// on a shard that does not know it) it would make a second ticket, while
// sh may hold the first and run it once it serves again, and the caller
// would learn only of the second. The caller resends it with the key.
func heldBy(sh *shard, err error) error {
	if !mayBeStored(err) {
		return nil
	}
	return fmt.Errorf("shard %d may hold the submit, so no other shard was given it: %w", sh.index, err)
}

// submitTo submits to one shard and names the ticket after it.
func (s *Sharded) submitTo(ctx context.Context, sh *shard, service string, body [][]byte, opt SubmitOptions) (string, error) {
	tk, err := sh.c.Submit(ctx, service, body, opt)
	if err = s.observe(sh, err); err != nil {
		var kc *KeyConflictError
		if errors.As(err, &kc) && kc.Ticket != "" {
			kc.Ticket = ShardTicket(sh.index, kc.Ticket) // as a Sharded caller names tickets
		}
		return "", err
	}
	return ShardTicket(sh.index, tk), nil
}

// observe updates sh's health from the outcome of a call to it and
// returns err, wrapped in ErrShardUnavailable when the shard did not
// answer.
func (s *Sharded) observe(sh *shard, err error) error {
	switch {
	case errors.Is(err, ErrUnavailable):
		if !sh.down.Swap(true) {
			s.log.Warn("shard unavailable", "shard", sh.index, "brokers", sh.c.cfg.Brokers)
		}
		return fmt.Errorf("%w: shard %d: %w", ErrShardUnavailable, sh.index, err)
	case err != nil && (errors.Is(err, ErrClosed) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		// Says nothing about the shard.
		return err
	}
	// An answer, whatever it says.
	if sh.down.Swap(false) {
		s.log.Info("shard answers again", "shard", sh.index)
	}
	return err
}

// lookup resolves a shard ticket.
func (s *Sharded) lookup(ticket string) (*shard, string, error) {
	i, tk, err := ParseShardTicket(ticket)
	if err != nil {
		return nil, "", err
	}
	if i >= len(s.shards) {
		return nil, "", fmt.Errorf("%w %s: names shard %d, this client has %d", ErrUnknown, ticket, i, len(s.shards))
	}
	return s.shards[i], tk, nil
}

// renamed puts the shard ticket in a *FailedError coming from a shard.
func renamed(err error, ticket string) error {
	var fe *FailedError
	if errors.As(err, &fe) {
		fe.Ticket = ticket
	}
	return err
}

// Status looks a shard ticket up on its shard. Status.Ticket is the shard
// ticket.
func (s *Sharded) Status(ctx context.Context, ticket string) (Status, error) {
	sh, tk, err := s.lookup(ticket)
	if err != nil {
		return Status{}, err
	}
	st, err := sh.c.Status(ctx, tk)
	if err = s.observe(sh, err); err != nil {
		return Status{}, err
	}
	st.Ticket = ticket
	return st, nil
}

// Reply returns a shard ticket's reply, as Client.Reply. With opt.Wait it
// waits while the ticket is pending, not while its shard is down: that
// fails with ErrShardUnavailable once the shard's tries are spent.
func (s *Sharded) Reply(ctx context.Context, ticket string, opt ReplyOptions) ([][]byte, error) {
	sh, tk, err := s.lookup(ticket)
	if err != nil {
		return nil, err
	}
	rep, err := sh.c.Reply(ctx, tk, opt)
	return rep, renamed(s.observe(sh, err), ticket)
}

// Wait waits for a shard ticket's reply, as Client.Wait, with the
// notification endpoints of the ticket's shard's Config.
func (s *Sharded) Wait(ctx context.Context, ticket string, opt WaitOptions) ([][]byte, error) {
	sh, tk, err := s.lookup(ticket)
	if err != nil {
		return nil, err
	}
	rep, err := sh.c.Wait(ctx, tk, opt)
	return rep, renamed(s.observe(sh, err), ticket)
}

// CloseTicket closes a shard ticket on its shard.
func (s *Sharded) CloseTicket(ctx context.Context, ticket string) error {
	sh, tk, err := s.lookup(ticket)
	if err != nil {
		return err
	}
	return s.observe(sh, sh.c.CloseTicket(ctx, tk))
}

// Do submits a durable request and waits for its reply.
func (s *Sharded) Do(ctx context.Context, service string, body [][]byte, opt SubmitOptions) ([][]byte, error) {
	ticket, err := s.Submit(ctx, service, body, opt)
	if err != nil {
		return nil, err
	}
	return s.Reply(ctx, ticket, ReplyOptions{Wait: true})
}

// maxListLimit is the brokers' largest titanic.list page.
const maxListLimit = 1000

// List lists the tickets of every shard, merged in the order of their
// shard's ticket (for titanic's time-ordered tickets: creation order, to
// the precision of the brokers' clocks), ties in shard order; TicketInfo.Ticket
// is a shard ticket. Paging is as on a Client: opt.After is the last shard
// ticket of the previous page, and a page shorter than opt.Limit (default
// 100, at most 1000) is the last. Each shard is asked for a page after
// that point (in parallel), and the merged page keeps the first
// opt.Limit: nothing is skipped or listed twice while the tickets do not
// change.
//
// A list needs every shard: when one does not answer, List fails with
// ErrShardUnavailable rather than return pages with holes (a caller paging
// on would skip the missing shard's tickets for good). Shard(i).List lists
// the healthy ones alone.
func (s *Sharded) List(ctx context.Context, opt ListOptions) ([]TicketInfo, error) {
	limit := opt.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, maxListLimit)
	afterShard, afterTk := -1, ""
	if opt.After != "" {
		i, tk, err := ParseShardTicket(opt.After)
		if err != nil {
			return nil, fmt.Errorf("list after: %w", err)
		}
		afterShard, afterTk = i, tk
	}
	type page struct {
		rows []TicketInfo
		err  error
	}
	pages := make([]page, len(s.shards))
	var wg sync.WaitGroup
	for j, sh := range s.shards {
		o := ListOptions{Service: opt.Service, State: opt.State, Limit: limit}
		switch {
		case afterShard < 0:
		case j <= afterShard:
			o.After = afterTk // strictly after
		default:
			o.After = predecessor(afterTk) // the same ticket on a later shard comes after
		}
		wg.Go(func() {
			rows, err := sh.c.List(ctx, o)
			pages[j] = page{rows, s.observe(sh, err)}
		})
	}
	wg.Wait()
	type row struct {
		TicketInfo
		shard int
	}
	var all []row
	var errs []error
	for j, p := range pages {
		if p.err != nil {
			errs = append(errs, p.err)
			continue
		}
		for _, r := range p.rows {
			r.Ticket = strings.ToLower(r.Ticket)
			all = append(all, row{r, j})
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	slices.SortFunc(all, func(a, b row) int {
		if c := strings.Compare(a.Ticket, b.Ticket); c != 0 {
			return c
		}
		return a.shard - b.shard
	})
	out := make([]TicketInfo, 0, min(limit, len(all)))
	for _, r := range all[:min(limit, len(all))] {
		r.Ticket = ShardTicket(r.shard, r.Ticket)
		out = append(out, r.TicketInfo)
	}
	return out, nil
}

// predecessor returns the ticket just before hex ticket tk (same length),
// or "" (the start of the list) for the zero ticket.
func predecessor(tk string) string {
	b, err := hex.DecodeString(tk)
	if err != nil {
		return tk
	}
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] > 0 {
			b[i]--
			return hex.EncodeToString(b)
		}
		b[i] = 0xff
	}
	return ""
}

// probeLoop probes the down shards every probe interval until Close.
func (s *Sharded) probeLoop() {
	defer close(s.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(s.opts.probeInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		for _, sh := range s.shards {
			if !sh.down.Load() || !sh.probing.CompareAndSwap(false, true) {
				continue
			}
			wg.Go(func() {
				defer sh.probing.Store(false)
				if sh.probe == nil {
					cfg := sh.cfg
					cfg.ID = ""                                // not a client of its own to presence
					cfg.Logger = slog.New(slog.DiscardHandler) // its retries are expected
					c, err := New(cfg)
					if err != nil {
						return // cannot happen: New took cfg before
					}
					sh.probe = c
				}
				_, err := sh.probe.Status(s.ctx, probeTicket)
				_ = s.observe(sh, err)
			})
		}
	}
}
