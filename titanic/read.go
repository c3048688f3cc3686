package titanic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// lookups is the part of the Service that answers from the store: the
// reader goroutines and their queue (titanic.reply, .status, .list,
// .stats), the parked titanic.wait requests (wait.go) and, in replicated
// modes, the lookups waiting for a leadership confirmation (confirm.go).
// It owns that state, each piece guarded by itself, and writes nothing:
// it reads the store, asks the dispatcher which tickets are leased (a
// dispatch is in the store only after the next commit), and answers
// through the answer path, which counts the answer out of the client's
// in-flight requests.
type lookups struct {
	cfg    Config
	st     lookupStore
	leader store.Leadership // nil: the store is the only copy of its data
	stats  *counters
	log    *slog.Logger
	// answer sends a deferred answer (Service.answer).
	answer func(c broker.Client, service string, body [][]byte)
	// leased reports a ticket's attempts while a worker holds it
	// (dispatcher.leasedAttempts).
	leased func(id store.ID) (attempts int, ok bool)
	// unfinished, when set, tells the state of a ticket the dispatcher
	// can vouch for without the store (dispatcher.unfinishedState): a
	// titanic.reply of it is answered from memory (pending.go).
	unfinished func(id store.ID) (store.State, bool)
	// readStats answers titanic.stats (Service.readStats): counts from
	// memory, which only the Service composes.
	readStats func(ctx context.Context, body [][]byte) ([][]byte, error)

	reads chan readReq
	// reading counts lookups a reader is serving, for idle.
	reading  atomic.Int32
	waits    waiters
	confirms confirmQueue
}

// lookupStore is what lookups need of the store.
type lookupStore interface {
	Get(ctx context.Context, id store.ID) (store.Ticket, error)
	Reply(ctx context.Context, id store.ID) (store.Ticket, [][]byte, error)
	ListPage(ctx context.Context, f store.Filter) (store.Page, error)
}

// newLookups returns the lookups of a Service configured by cfg (filled)
// over st; answer, leased and readStats are as the fields of the same
// names.
func newLookups(cfg Config, st lookupStore, leader store.Leadership, stats *counters, log *slog.Logger,
	answer func(broker.Client, string, [][]byte), leased func(store.ID) (int, bool),
	readStats func(context.Context, [][]byte) ([][]byte, error)) *lookups {
	return &lookups{
		cfg:       cfg,
		st:        st,
		leader:    leader,
		stats:     stats,
		log:       log,
		answer:    answer,
		leased:    leased,
		readStats: readStats,
		reads:     make(chan readReq, cfg.MaxQueuedReads),
		confirms:  confirmQueue{kick: make(chan struct{}, 1)},
	}
}

// idle reports whether no lookup is queued, being read or waiting for a
// confirmation (parked titanic.wait requests do not count: they are
// answered when the service stops).
func (l *lookups) idle() bool {
	return len(l.reads) == 0 && l.reading.Load() == 0 && l.confirms.n.Load() == 0
}

// readReq is a lookup (titanic.reply, .status, .list) waiting for a reader.
type readReq struct {
	req broker.Request
	w   *waiter // a parked titanic.wait, answered only when final
	// confirmed: leadership was confirmed after this lookup began (see
	// confirm.go), so whatever the store answers now may be sent.
	confirmed bool
}

// lookup hands a read to the reader goroutines: reads never wait behind a
// commit, and the broker loop never touches the store.
func (l *lookups) lookup(req broker.Request) [][]byte {
	select {
	case l.reads <- readReq{req: req}:
		return nil
	default:
		l.stats.busy.Add(1)
		return busyReply()
	}
}

func (l *lookups) readLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-l.reads:
			l.reading.Add(1)
			out, settled := l.read(ctx, r.req)
			l.settle(r, out, settled)
			l.reading.Add(-1)
		}
	}
}

// settle sends the answer of lookup r, or, when the answer is one a
// deposed leader could give wrongly, first has leadership confirmed.
func (l *lookups) settle(r readReq, out [][]byte, settled bool) {
	parked := r.w != nil && len(out) > 0 && string(out[0]) == tsp.CodePending // nothing is sent
	if !settled && !parked && !r.confirmed && l.leader != nil {
		l.confirmLater(r)
		return
	}
	if r.w != nil {
		l.answerWait(r.w, out)
		return
	}
	l.answer(r.req.Client, r.req.Service, out)
}

// read looks req up in the store. settled reports an answer that holds
// whichever node gives it and however far behind its store is: a
// recorded reply or failure is final (a ticket is answered once, and the
// answer is never taken back), and a malformed request or a storage error
// does not depend on the store's content. Unknown (400), pending (300), a
// status of an unfinished ticket and a list may be stale on a deposed
// leader (a newer leader may have acknowledged the ticket, its reply, or
// others), so they are not settled.
func (l *lookups) read(ctx context.Context, req broker.Request) (out [][]byte, settled bool) {
	var err error
	switch req.Service {
	case tsp.SvcStats:
		// Counts from memory, not the store's content: no leadership
		// round, and not counted as a lookup (titanic top asks every
		// second).
		if out, err = l.readStats(ctx, req.Body); err == nil {
			return out, true
		}
	case tsp.SvcReply, tsp.SvcWait:
		out, settled, err = l.readReply(ctx, req.Body)
	case tsp.SvcStatus:
		out, settled, err = l.readStatus(ctx, req.Body)
	case tsp.SvcList:
		out, err = l.readList(ctx, req.Body)
	}
	switch {
	case err == nil:
		l.stats.lookups.Add(1)
		return out, settled
	case errors.Is(err, errBadRequest):
		l.stats.badRequests.Add(1)
		return replyText(tsp.CodeUnknown, err.Error()), true
	case errors.Is(err, ErrNotMerged):
		return replyText(tsp.CodeError, NotMerged), true
	case errors.Is(err, store.ErrNotFound):
		return replyText(tsp.CodeUnknown, string(tsp.UnknownTicket)), false
	}
	l.log.Warn("lookup failed", "service", req.Service, "err", err)
	return replyText(tsp.CodeError, "lookup failed: "+err.Error()), true
}

func (l *lookups) readReply(ctx context.Context, body [][]byte) ([][]byte, bool, error) {
	id, err := parseTicket(body)
	if err != nil {
		return nil, false, err
	}
	t, rep, err := l.st.Reply(ctx, id)
	if err != nil {
		return nil, false, l.elsewhere(id, err)
	}
	t = l.overlay(t)
	switch t.State {
	case store.StateDone:
		return reply(tsp.CodeOK, rep...), true, nil
	case store.StateFailed:
		return replyText(tsp.CodeError, tsp.Failed.Text(t.Reason)), true, nil
	case store.StateCancelled:
		// Final, as a failure is: a 9/TSP client must stop asking.
		return replyText(tsp.CodeError, tsp.Failed.Text(tsp.CancelledReason+t.Reason)), true, nil
	}
	return replyText(tsp.CodePending, t.State.String()), false, nil
}

func (l *lookups) readStatus(ctx context.Context, body [][]byte) ([][]byte, bool, error) {
	withBody := len(body) == 2 && string(body[1]) == tsp.StatusBody
	if withBody {
		body = body[:1]
	}
	id, err := parseTicket(body)
	if err != nil {
		return nil, false, err
	}
	var t store.Ticket
	if withBody {
		t, err = l.st.Get(ctx, id)
	} else {
		t, _, err = l.st.Reply(ctx, id)
	}
	if err != nil {
		return nil, false, l.elsewhere(id, err)
	}
	req := t.Body
	t = l.overlay(t)
	out := reply(tsp.CodeOK,
		[]byte(t.State.String()),
		[]byte(strconv.Itoa(t.Attempts)),
		[]byte(t.Service),
		[]byte(t.Created.UTC().Format(time.RFC3339Nano)),
		[]byte(t.Updated.UTC().Format(time.RFC3339Nano)),
		[]byte(t.Reason),
	)
	if withBody {
		out = append(out, req...)
	}
	return out, t.State.Final(), nil
}

func (l *lookups) readList(ctx context.Context, body [][]byte) ([][]byte, error) {
	f, err := parseList(body)
	if err != nil {
		return nil, err
	}
	// A whole page, as every release answered (a client of the first
	// release takes any other frame for a protocol error), but read in
	// bounded transactions (store.ListAll over ListPage): a filter that
	// matches nothing of a large store no longer holds one read
	// transaction, and with it bbolt's remap and every commit, for the
	// whole scan.
	tickets, err := store.ListAll(ctx, l.st, f)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(tickets)+1)
	out = append(out, []byte(tsp.CodeOK))
	for _, t := range tickets {
		t = l.overlay(t)
		out = append(out, fmt.Appendf(nil, "%s %s %s %d", t.ID, t.Service, t.State, t.Attempts))
	}
	return out, nil
}

// overlay brings a stored ticket up to date with the dispatcher: a dispatch
// is recorded in the store by the next commit, after the worker already has
// the job, and a lookup should not claim "pending" for a running ticket.
func (l *lookups) overlay(t store.Ticket) store.Ticket {
	if t.State != store.StatePending && t.State != store.StateDispatched {
		return t
	}
	if n, ok := l.leased(t.ID); ok && n >= t.Attempts {
		t.State = store.StateDispatched
		t.Attempts = n
	}
	return t
}

// NotMerged is the text of a 500 for a ticket this node does not hold but
// its peer may (see Config.MaybeElsewhere). It starts "not ready" so that
// clients retry it.
const NotMerged = string(tsp.NotReady) + ": this ticket may be held by the peer, whose split brain is not merged yet; retry"

// ErrNotMerged means this node does not hold the ticket but its pair peer
// may: its split brain is not merged yet (Config.MaybeElsewhere). The
// 9/TSP answer is 500 NotMerged; the HTTP API answers 503.
var ErrNotMerged = errors.New("ticket may be held elsewhere")

// elsewhere turns a lookup's ErrNotFound into ErrNotMerged when another
// node may hold the ticket.
func (l *lookups) elsewhere(id store.ID, err error) error { return elsewhere(l.cfg, id, err) }

func elsewhere(cfg Config, id store.ID, err error) error {
	if errors.Is(err, store.ErrNotFound) && cfg.MaybeElsewhere != nil && cfg.MaybeElsewhere(id) {
		return ErrNotMerged
	}
	return err
}

// elsewhereDone is done with ErrNotFound turned into ErrNotMerged when the
// peer may hold id: a cancel, retry or purge of a ticket the peer
// acknowledged during a split answered "unknown ticket" (exit 4), and the
// handover then brought back the ticket its owner had cancelled.
func (s *Service) elsewhereDone(id store.ID, done func(error)) func(error) {
	return func(err error) { done(elsewhere(s.cfg, id, err)) }
}
