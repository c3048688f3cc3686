package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// SubmitOptions tune Submit.
type SubmitOptions struct {
	// IdemKey is the idempotency key: a submit with a key the broker has
	// seen returns the ticket it gave then. Empty: a random key, which
	// still makes this call's own retries safe. At most 128 bytes.
	IdemKey string

	// The job lifecycle. Zero fields ask nothing: a submit with all of
	// them zero is a plain titanic.submit, which every broker takes; one
	// with any of them set goes as titanic.submit2, which a broker older
	// than it, or a cluster whose version is below 3, refuses
	// (ErrUnsupported) rather than store without them.

	// Delay or At (not both): the ticket is not dispatched before then
	// (it is "delayed" until). At is taken as an absolute time.
	Delay time.Duration
	At    time.Time
	// Priority: PriorityHigh tickets of a service are dispatched before
	// normal ones, normal before low; FIFO within a level.
	Priority Priority
	// TTL or Deadline (not both): a ticket not dispatched by then fails
	// with reason "expired".
	TTL      time.Duration
	Deadline time.Time
	// MaxAttempts overrides the broker's (or service's) dispatches
	// before the ticket fails for good; BackoffBase and BackoffMax its
	// exponential backoff between attempts (BackoffMax needs
	// BackoffBase).
	MaxAttempts             int
	BackoffBase, BackoffMax time.Duration
}

// Submit stores a durable request for service and returns its ticket (32
// hexadecimal characters) once the broker has made it durable.
func (c *Client) Submit(ctx context.Context, service string, body [][]byte, opt SubmitOptions) (string, error) {
	key := opt.IdemKey
	if key == "" {
		var err error
		if key, err = newKey(); err != nil {
			return "", err
		}
	}
	svc, frames, err := submitRequest(service, body, key, opt)
	if err != nil {
		return "", err
	}
	// A submit whose outcome the broker could not know is sent again with
	// its key, within the time the tries would take: the broker's answer
	// to the key tells. The caller could not: it never saw the key.
	budget := time.Now().Add(time.Duration(c.cfg.Retries*len(c.cfg.Brokers)) * c.cfg.Timeout)
	// uncertain: a broker said the submit may be stored. Whatever ends
	// the call from then on, the error gives the key: the caller may
	// resend it with the key and not make a second ticket.
	uncertain := false
	failed := func(err error) error {
		if uncertain {
			return &uncertainError{service: clipName(service), key: key, err: err}
		}
		return err
	}
	var rep [][]byte
	for {
		if rep, err = c.do(ctx, svc, frames); err != nil {
			return "", failed(err)
		}
		if !tsp.Is(rep, tsp.CodeError, tsp.Uncertain) {
			break
		}
		uncertain = true
		if time.Now().After(budget) {
			break
		}
		c.log.Debug("submit outcome unknown, sending it again with its key", "service", service)
		if err := c.pause(&call{ctx: ctx}, maxRefusalBackoff); err != nil {
			return "", failed(err)
		}
	}
	if err := submitStatus(rep, key); err != nil {
		if uncertain {
			return "", failed(err)
		}
		return "", fmt.Errorf("submit to %s: %w", clipName(service), err)
	}
	if len(rep) < 2 || len(rep[1]) == 0 {
		return "", fmt.Errorf("%w: submit answered 200 without a ticket", ErrProtocol)
	}
	return string(rep[1]), nil
}

// submitStatus is status for a titanic.submit (or submit2) answer: a 400
// of kind key conflict ("key conflict: <ticket>: <detail>") is a
// *KeyConflictError for key; one saying the broker lacks submit2, or its
// cluster cannot store the options yet, is ErrUnsupported.
func submitStatus(rep [][]byte, key string) error {
	if unsupported(rep) {
		return fmt.Errorf("%w: %s", ErrUnsupported, rep[1])
	}
	if a := tsp.ParseAnswer(rep); len(rep) >= 2 && a.Code == tsp.CodeUnknown && a.Kind == tsp.KeyConflict {
		ticket, detail, _ := strings.Cut(a.Detail, ": ")
		return &KeyConflictError{Key: key, Ticket: ticket, Detail: detail}
	}
	return status(rep, "", true)
}

// Status is what the broker knows of a ticket.
type Status struct {
	Ticket   string
	State    string // pending, dispatched, done, failed or cancelled
	Attempts int
	Service  string
	Created  time.Time
	Updated  time.Time
	Reason   string // why the last attempt failed, or why the ticket did
}

// Status looks a ticket up.
func (c *Client) Status(ctx context.Context, ticket string) (Status, error) {
	rep, err := c.do(ctx, tsp.SvcStatus, [][]byte{[]byte(ticket)})
	if err != nil {
		return Status{}, err
	}
	return parseStatus(ticket, rep)
}

// StatusBody looks a ticket up as Status does and returns its request
// body too (titanic.status [ticket | "body"]). A broker older than this
// extension refuses the request: ErrRejected.
func (c *Client) StatusBody(ctx context.Context, ticket string) (Status, [][]byte, error) {
	rep, err := c.do(ctx, tsp.SvcStatus, [][]byte{[]byte(ticket), []byte(tsp.StatusBody)})
	if err != nil {
		return Status{}, nil, err
	}
	if len(rep) < 7 {
		st, err := parseStatus(ticket, rep)
		return st, nil, err
	}
	st, err := parseStatus(ticket, rep[:7])
	if err != nil {
		return Status{}, nil, err
	}
	return st, rep[7:], nil
}

// parseStatus decodes a titanic.status answer:
// [200 | state | attempts | service | created | updated | reason].
func parseStatus(ticket string, rep [][]byte) (Status, error) {
	if err := status(rep, ticket, false); err != nil {
		return Status{}, err
	}
	if len(rep) != 7 {
		return Status{}, fmt.Errorf("%w: status has %d frames, want 7", ErrProtocol, len(rep))
	}
	var err error
	st := Status{Ticket: ticket, State: string(rep[1]), Service: string(rep[3]), Reason: string(rep[6])}
	if st.Attempts, err = strconv.Atoi(string(rep[2])); err != nil || st.Attempts < 0 {
		return Status{}, fmt.Errorf("%w: attempts %q", ErrProtocol, rep[2])
	}
	if st.Created, err = time.Parse(time.RFC3339Nano, string(rep[4])); err != nil {
		return Status{}, fmt.Errorf("%w: created %q", ErrProtocol, rep[4])
	}
	if st.Updated, err = time.Parse(time.RFC3339Nano, string(rep[5])); err != nil {
		return Status{}, fmt.Errorf("%w: updated %q", ErrProtocol, rep[5])
	}
	return st, nil
}

// ReplyOptions tune Reply.
type ReplyOptions struct {
	// Wait makes Reply wait until the ticket is answered (or fails, or ctx
	// ends) instead of returning ErrPending.
	Wait bool
	// PollInterval caps the interval between lookups while waiting; they
	// start at a millisecond and double up to it. Default 250ms.
	PollInterval time.Duration
}

// Reply returns a ticket's reply frames. It returns ErrPending while the
// ticket is not answered (unless opt.Wait), ErrUnknown for a ticket the
// broker does not know, and a *FailedError (ErrFailed) for a ticket that
// failed for good.
func (c *Client) Reply(ctx context.Context, ticket string, opt ReplyOptions) ([][]byte, error) {
	maxWait := opt.PollInterval
	if maxWait <= 0 {
		maxWait = 250 * time.Millisecond
	}
	wait := time.Millisecond
	// Waiting uses titanic.wait: the broker holds the request until the
	// reply is recorded (or most of a try's timeout has passed). Brokers
	// without it answer 400; then the client polls titanic.reply.
	useWait := opt.Wait
	park := strconv.Itoa(int(c.cfg.Timeout * 3 / 4 / time.Millisecond))
	for {
		var rep [][]byte
		var err error
		start := time.Now()
		if useWait {
			rep, err = c.do(ctx, tsp.SvcWait, [][]byte{[]byte(ticket), []byte(park)})
			if err == nil && tsp.Is(rep, tsp.CodeUnknown, tsp.UnknownService) {
				useWait = false
				continue
			}
		} else {
			rep, err = c.do(ctx, tsp.SvcReply, [][]byte{[]byte(ticket)})
		}
		if err == nil {
			err = status(rep, ticket, false)
			if err == nil {
				return rep[1:], nil
			}
		}
		if !opt.Wait || !(isPending(err) || isTransient(err)) {
			return nil, err
		}
		if useWait && isPending(err) && time.Since(start) > c.cfg.Timeout/4 {
			continue // the broker did the waiting
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("waiting for %s: %w", ticket, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, maxWait)
	}
}

func isPending(err error) bool   { return err != nil && errors.Is(err, ErrPending) }
func isTransient(err error) bool { return err != nil && errors.Is(err, ErrServer) }

// Retry gives a failed ticket another round: it is pending again, at the
// back of its service's queue, with its attempts counted from zero. It
// returns ErrUnknown for a ticket the broker does not know, ErrNotFailed
// for one that has not failed, and ErrUnsupported when the broker, or its
// cluster, cannot take it yet. A broker that answers busy (a retention
// sweep lists the tickets it deletes, and a retry waits for that; or a
// limit was reached) is asked again after a pause that doubles up to a
// second, until ctx ends.
//
// A retry sent more than once (a try unanswered in time: the broker may
// have committed the first send) that is refused as not failed looks the
// ticket up: no longer failed, it succeeds, since the first send may be
// what gave it its round (its answer lost).
func (c *Client) Retry(ctx context.Context, ticket string) error {
	pause := minBusyPause
	for {
		rep, resent, err := c.doResent(ctx, tsp.SvcRetry, [][]byte{[]byte(ticket)})
		if err != nil {
			return err
		}
		err = lifecycleStatus(rep, "retry", ticket)
		if resent && errors.Is(err, ErrNotFailed) && c.stateAfterResend(ctx, ticket, func(state string) bool { return state != "failed" }) {
			return nil
		}
		if !tsp.Is(rep, tsp.CodeError, tsp.Busy) {
			return err
		}
		c.log.Debug("retry answered busy; asking again", "ticket", ticket, "pause", pause)
		if perr := c.pause(&call{ctx: ctx}, pause); perr != nil {
			return fmt.Errorf("%w (asked again until: %w)", err, perr)
		}
		pause = min(2*pause, maxBusyPause)
	}
}

// The pauses before a request answered busy is sent again (Retry): a
// retention sweep's listing, which a retry waits for, takes moments.
const (
	minBusyPause = 20 * time.Millisecond
	maxBusyPause = time.Second
)

// Purge closes a failed ticket, as CloseTicket does, but only if it is
// still failed when the broker applies the close: a ticket retried
// meanwhile is left alone (ErrNotFailed). It returns ErrUnknown for a
// ticket the broker does not know, and ErrUnsupported when the broker, or
// its cluster, cannot take it yet (cluster version 3).
//
// A purge sent more than once (a try unanswered in time) that finds the
// ticket unknown succeeds: the first send may be what closed it (its
// answer lost), and the ticket is gone either way.
func (c *Client) Purge(ctx context.Context, ticket string) error {
	rep, resent, err := c.doResent(ctx, tsp.SvcPurge, [][]byte{[]byte(ticket)})
	if err != nil {
		return err
	}
	err = lifecycleStatus(rep, "purge", ticket)
	if resent && errors.Is(err, ErrUnknown) {
		return nil
	}
	return err
}

// unsupported reports whether an answer says the broker lacks a service
// (an older release) or its cluster cannot take the request yet.
func unsupported(rep [][]byte) bool {
	if len(rep) < 2 {
		return false
	}
	a := tsp.ParseAnswer(rep)
	return a.Code == tsp.CodeUnknown && (a.Kind == tsp.UnknownService || a.Kind == tsp.NotSupported)
}

// CloseTicket closes a ticket: the broker deletes it and its reply. Closing
// an unknown ticket succeeds (9/TSP).
func (c *Client) CloseTicket(ctx context.Context, ticket string) error {
	rep, err := c.do(ctx, tsp.SvcClose, [][]byte{[]byte(ticket)})
	if err != nil {
		return err
	}
	return status(rep, ticket, false)
}

// ListOptions filter List. Zero fields do not filter.
type ListOptions struct {
	Service string
	State   string // pending, dispatched, done or failed
	After   string // ticket to start after (paging)
	Limit   int    // default 100, at most 1000
}

// TicketInfo is one row of List.
type TicketInfo struct {
	Ticket   string
	Service  string
	State    string
	Attempts int
}

// List lists tickets in ticket (creation) order.
// It asks in as many requests as it takes to fill the limit or reach the
// end: the node examines a bounded number of tickets per request (see
// ListPage).
func (c *Client) List(ctx context.Context, opt ListOptions) ([]TicketInfo, error) {
	want := opt.Limit
	if want <= 0 {
		want = defaultListLimit
	}
	var out []TicketInfo
	for {
		o := opt
		o.Limit = want - len(out)
		rows, next, err := c.ListPage(ctx, o)
		if err != nil {
			return nil, err
		}
		out = append(out, rows...)
		if next == "" || len(out) >= want {
			return out, nil
		}
		opt.After = next
	}
}

// ListEach calls fn for every ticket opt matches, in ticket order, asking
// the node page by page (opt.Limit rows per request; 0: 1000) so that a
// listing of any length is never held whole. It stops at the first error
// of fn, or of a request, and returns it. Each page is what the node held
// when it was asked: a ticket may have changed by the time fn sees it.
func (c *Client) ListEach(ctx context.Context, opt ListOptions, fn func(TicketInfo) error) error {
	if opt.Limit <= 0 {
		opt.Limit = maxListLimit
	}
	for {
		rows, next, err := c.ListPage(ctx, opt)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if err := fn(r); err != nil {
				return err
			}
		}
		switch {
		case next != "":
			opt.After = next
		case len(rows) == opt.Limit:
			opt.After = rows[len(rows)-1].Ticket
		default:
			return nil
		}
	}
}

// defaultListLimit is the node's page size when the request gives none.
const defaultListLimit = 100

// ListPage is one titanic.list request: the node examines a bounded
// number of tickets (10,000) per request, so with a filter that matches
// few of them it may answer fewer rows than the limit, or none, and next
// is then the ticket to continue after (as ListOptions.After). next is
// empty at the end, or when the limit was filled (continue after the last
// row).
func (c *Client) ListPage(ctx context.Context, opt ListOptions) (rows []TicketInfo, next string, err error) {
	limit := ""
	if opt.Limit > 0 {
		limit = strconv.Itoa(opt.Limit)
	}
	rep, err := c.do(ctx, tsp.SvcList, [][]byte{[]byte(opt.Service), []byte(opt.State), []byte(opt.After), []byte(limit)})
	if err != nil {
		return nil, "", err
	}
	return parseList(rep)
}

// parseList decodes a titanic.list answer: [200 | line... | more?], each
// line "ticket service state attempts" (the service may hold spaces), and
// a last frame "more <ticket>" when the listing continues after ticket.
func parseList(rep [][]byte) ([]TicketInfo, string, error) {
	if err := status(rep, "", true); err != nil {
		return nil, "", err
	}
	lines := rep[1:]
	next := ""
	if n := len(lines); n > 0 && strings.HasPrefix(string(lines[n-1]), tsp.ListMore) {
		next = strings.TrimPrefix(string(lines[n-1]), tsp.ListMore)
		lines = lines[:n-1]
		if next == "" {
			return nil, "", fmt.Errorf("%w: list cursor without a ticket", ErrProtocol)
		}
	}
	out := make([]TicketInfo, 0, len(lines))
	for _, line := range lines {
		l := string(line)
		ticket, rest, ok1 := strings.Cut(l, " ")
		i := strings.LastIndexByte(rest, ' ')
		j := -1
		if i > 0 {
			j = strings.LastIndexByte(rest[:i], ' ')
		}
		if !ok1 || ticket == "" || j <= 0 {
			return nil, "", fmt.Errorf("%w: list line %q", ErrProtocol, line)
		}
		n, err := strconv.Atoi(rest[i+1:])
		if err != nil || n < 0 {
			return nil, "", fmt.Errorf("%w: list line %q", ErrProtocol, line)
		}
		out = append(out, TicketInfo{Ticket: ticket, Service: rest[:j], State: rest[j+1 : i], Attempts: n})
	}
	return out, next, nil
}

// Do submits a durable request and waits for its reply.
func (c *Client) Do(ctx context.Context, service string, body [][]byte, opt SubmitOptions) ([][]byte, error) {
	ticket, err := c.Submit(ctx, service, body, opt)
	if err != nil {
		return nil, err
	}
	return c.Reply(ctx, ticket, ReplyOptions{Wait: true})
}

// Request sends a plain (not durable) 7/MDP request to service and returns
// the worker's reply. A retry after a lost answer may run the request
// twice; use Submit for work that must run once and survive crashes.
func (c *Client) Request(ctx context.Context, service string, body [][]byte) ([][]byte, error) {
	return c.do(ctx, service, body)
}

// status maps a 9/TSP answer's status frame to an error. rejectOn400 tells
// a submit (400: malformed request) from a lookup (400: unknown ticket).
func status(rep [][]byte, ticket string, rejectOn400 bool) error {
	if len(rep) == 0 {
		return fmt.Errorf("%w: empty answer", ErrProtocol)
	}
	// 9/TSP allows "NNN text" in the status frame; titanic sends the bare
	// code and puts its text in a second frame. The client acts on the
	// text's kind only, never on its words (package tsp).
	a := tsp.ParseAnswer(rep)
	switch a.Code {
	case tsp.CodeOK:
		return nil
	case tsp.CodePending:
		return ErrPending
	case tsp.CodeUnknown:
		if rejectOn400 {
			return fmt.Errorf("%w: %s", ErrRejected, a.Text)
		}
		if a.Text == "" || a.Text == string(tsp.UnknownTicket) {
			return fmt.Errorf("%w %s", ErrUnknown, ticket)
		}
		return fmt.Errorf("%w %s: %s", ErrUnknown, ticket, a.Text)
	case tsp.CodeError:
		if a.Kind == tsp.Failed {
			return &FailedError{Ticket: ticket, Reason: a.Detail, Cancelled: strings.HasPrefix(a.Detail, tsp.CancelledReason)}
		}
		return fmt.Errorf("%w: %s", ErrServer, a.Text)
	}
	return fmt.Errorf("%w: status %q", ErrProtocol, rep[0])
}
