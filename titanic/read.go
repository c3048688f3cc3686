package titanic

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
)

// readReq is a lookup (titanic.reply, .status, .list) waiting for a reader.
type readReq struct {
	req broker.Request
	w   *waiter // a parked titanic.wait, answered only when final
}

// lookup hands a read to the reader goroutines: reads never wait behind a
// commit, and the broker loop never touches the store.
func (s *Service) lookup(req broker.Request) [][]byte {
	select {
	case s.reads <- readReq{req: req}:
		return nil
	default:
		s.stats.busy.Add(1)
		return busyReply()
	}
}

func (s *Service) readLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-s.reads:
			s.reading.Add(1)
			out := s.read(ctx, r.req)
			if r.w != nil {
				s.answerWait(r.w, out)
			} else {
				s.answer(r.req.Client, r.req.Service, out)
			}
			s.reading.Add(-1)
		}
	}
}

func (s *Service) read(ctx context.Context, req broker.Request) [][]byte {
	var (
		out [][]byte
		err error
	)
	switch req.Service {
	case SvcReply, SvcWait:
		out, err = s.readReply(ctx, req.Body)
	case SvcStatus:
		out, err = s.readStatus(ctx, req.Body)
	case SvcList:
		out, err = s.readList(ctx, req.Body)
	}
	switch {
	case err == nil:
		s.stats.lookups.Add(1)
		return out
	case errors.Is(err, errBadRequest):
		s.stats.badRequests.Add(1)
		return replyText(CodeUnknown, err.Error())
	case errors.Is(err, errElsewhere):
		return replyText(CodeError, NotMerged)
	case errors.Is(err, store.ErrNotFound):
		return replyText(CodeUnknown, "unknown ticket")
	}
	s.log.Warn("lookup failed", "service", req.Service, "err", err)
	return replyText(CodeError, "lookup failed: "+err.Error())
}

func (s *Service) readReply(ctx context.Context, body [][]byte) ([][]byte, error) {
	id, err := parseTicket(body)
	if err != nil {
		return nil, err
	}
	t, rep, err := s.st.Reply(ctx, id)
	if err != nil {
		return nil, s.elsewhere(id, err)
	}
	t = s.overlay(t)
	switch t.State {
	case store.StateDone:
		return reply(CodeOK, rep...), nil
	case store.StateFailed:
		return replyText(CodeError, FailedPrefix+t.Reason), nil
	}
	return replyText(CodePending, t.State.String()), nil
}

func (s *Service) readStatus(ctx context.Context, body [][]byte) ([][]byte, error) {
	id, err := parseTicket(body)
	if err != nil {
		return nil, err
	}
	t, _, err := s.st.Reply(ctx, id)
	if err != nil {
		return nil, s.elsewhere(id, err)
	}
	t = s.overlay(t)
	return reply(CodeOK,
		[]byte(t.State.String()),
		[]byte(strconv.Itoa(t.Attempts)),
		[]byte(t.Service),
		[]byte(t.Created.UTC().Format(time.RFC3339Nano)),
		[]byte(t.Updated.UTC().Format(time.RFC3339Nano)),
		[]byte(t.Reason),
	), nil
}

func (s *Service) readList(ctx context.Context, body [][]byte) ([][]byte, error) {
	f, err := parseList(body)
	if err != nil {
		return nil, err
	}
	ts, err := s.st.List(ctx, f)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(ts)+1)
	out = append(out, []byte(CodeOK))
	for _, t := range ts {
		t = s.overlay(t)
		out = append(out, fmt.Appendf(nil, "%s %s %s %d", t.ID, t.Service, t.State, t.Attempts))
	}
	return out, nil
}

// overlay brings a stored ticket up to date with the dispatcher: a dispatch
// is recorded in the store by the next commit, after the worker already has
// the job, and a lookup should not claim "pending" for a running ticket.
func (s *Service) overlay(t store.Ticket) store.Ticket {
	if t.State != store.StatePending && t.State != store.StateDispatched {
		return t
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[t.ID]; ok && e.leased && e.attempts >= t.Attempts {
		t.State = store.StateDispatched
		t.Attempts = e.attempts
	}
	return t
}

// NotMerged is the text of a 500 for a ticket this node does not hold but
// its peer may (see Config.MaybeElsewhere). It starts "not ready" so that
// clients retry it.
const NotMerged = "not ready: this ticket may be held by the peer, whose split brain is not merged yet; retry"

var errElsewhere = errors.New("ticket may be held elsewhere")

// elsewhere turns a lookup's ErrNotFound into errElsewhere when another
// node may hold the ticket.
func (s *Service) elsewhere(id store.ID, err error) error {
	if errors.Is(err, store.ErrNotFound) && s.cfg.MaybeElsewhere != nil && s.cfg.MaybeElsewhere(id) {
		return errElsewhere
	}
	return err
}
