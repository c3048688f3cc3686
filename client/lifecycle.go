package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// Priority is a submit's priority level: a higher level of a service is
// dispatched first, FIFO within a level. Empty is normal.
type Priority string

// Priority levels.
const (
	PriorityHigh   Priority = "high"
	PriorityNormal Priority = "normal"
	PriorityLow    Priority = "low"
)

// options is the titanic.submit2 options frame of o ("" when o asks for
// nothing beyond a plain submit: then titanic.submit is used, which every
// broker knows). It refuses, as ErrRejected, what no broker would take.
func (o SubmitOptions) options() (string, error) {
	var f []string
	bad := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf("%w: %s", ErrRejected, fmt.Sprintf(format, args...))
	}
	switch {
	case o.Delay != 0 && !o.At.IsZero():
		return bad("give Delay or At, not both")
	case o.TTL != 0 && !o.Deadline.IsZero():
		return bad("give TTL or Deadline, not both")
	case o.Delay < 0, o.TTL < 0, o.BackoffBase < 0, o.BackoffMax < 0, o.MaxAttempts < 0:
		return bad("negative Delay, TTL, MaxAttempts or backoff")
	case o.BackoffMax != 0 && o.BackoffBase == 0:
		return bad("BackoffMax without BackoffBase")
	}
	if o.Delay > 0 {
		f = append(f, tsp.OptDelay+"="+o.Delay.String())
	}
	if !o.At.IsZero() {
		f = append(f, tsp.OptAt+"="+o.At.UTC().Format(time.RFC3339Nano))
	}
	switch o.Priority {
	case "", PriorityNormal:
	case PriorityHigh, PriorityLow:
		f = append(f, tsp.OptPriority+"="+string(o.Priority))
	default:
		return bad("priority %q (want high, normal or low)", o.Priority)
	}
	if o.TTL > 0 {
		f = append(f, tsp.OptTTL+"="+o.TTL.String())
	}
	if !o.Deadline.IsZero() {
		f = append(f, tsp.OptDeadline+"="+o.Deadline.UTC().Format(time.RFC3339Nano))
	}
	if o.MaxAttempts > 0 {
		f = append(f, tsp.OptAttempts+"="+strconv.Itoa(o.MaxAttempts))
	}
	if o.BackoffBase > 0 {
		b := tsp.OptBackoff + "=" + o.BackoffBase.String()
		if o.BackoffMax > 0 {
			b += "," + o.BackoffMax.String()
		}
		f = append(f, b)
	}
	return strings.Join(f, " "), nil
}

// submitRequest is the service and frames of a submit with key: plain
// titanic.submit, or titanic.submit2 when opt asks for lifecycle options.
func submitRequest(service string, body [][]byte, key string, opt SubmitOptions) (string, [][]byte, error) {
	opts, err := opt.options()
	if err != nil {
		return "", nil, err
	}
	if opts == "" {
		return tsp.SvcSubmit, append([][]byte{[]byte(key), []byte(service)}, body...), nil
	}
	return tsp.SvcSubmit2, append([][]byte{[]byte(key), []byte(opts), []byte(service)}, body...), nil
}

// ErrCancelled: the ticket was cancelled (Cancel) before it was answered.
// A lookup's error is then a *FailedError that also matches ErrFailed: a
// cancelled ticket is final, as a failed one.
var ErrCancelled = errors.New("ticket cancelled")

// ErrFinished: the ticket asked to be cancelled is already done, failed
// or cancelled.
var ErrFinished = errors.New("ticket already finished")

// lifecycleStatus maps the answer of a lifecycle service
// (titanic.retry, cancel, pause, resume) to an error.
func lifecycleStatus(rep [][]byte, what, ticket string) error {
	if a := tsp.ParseAnswer(rep); a.Code == tsp.CodeUnknown && len(rep) > 1 {
		switch {
		case unsupported(rep):
			return fmt.Errorf("%w: %s: %s", ErrUnsupported, what, a.Text)
		case a.Kind == tsp.NotFailed:
			return fmt.Errorf("%w: %s: %s", ErrNotFailed, ticket, a.Detail)
		case a.Kind == tsp.Finished:
			return fmt.Errorf("%w: %s: %s", ErrFinished, ticket, a.Detail)
		case ticket == "":
			return fmt.Errorf("%w: %s: %s", ErrRejected, what, a.Text)
		}
	}
	return status(rep, ticket, false)
}

// Cancel ends a pending or running ticket as cancelled: a pending one is
// never dispatched, a running one's reply is dropped when it comes. Its
// lookups then fail with ErrCancelled (and ErrFailed). It returns
// ErrUnknown for a ticket the broker does not know, ErrFinished for one
// already finished, and ErrUnsupported when the broker, or its cluster,
// cannot take it yet.
//
// A cancel sent more than once (a try unanswered in time: the broker may
// have committed the first send) that finds the ticket finished looks it
// up: cancelled, it succeeds, since the first send may be what cancelled
// it (its answer lost), and the ticket is cancelled either way.
func (c *Client) Cancel(ctx context.Context, ticket string) error {
	rep, resent, err := c.doResent(ctx, tsp.SvcCancel, [][]byte{[]byte(ticket)})
	if err != nil {
		return err
	}
	err = lifecycleStatus(rep, "cancel", ticket)
	if resent && errors.Is(err, ErrFinished) && c.stateAfterResend(ctx, ticket, func(state string) bool { return state == "cancelled" }) {
		return nil
	}
	return err
}

// stateAfterResend reports whether the ticket's state, looked up now,
// satisfies ok: whether an op the client sent more than once, and whose
// last send the broker refused for the state it found, may have been
// applied by an earlier send. A failed lookup says no.
func (c *Client) stateAfterResend(ctx context.Context, ticket string, ok func(state string) bool) bool {
	st, err := c.Status(ctx, ticket)
	if err != nil {
		return false
	}
	c.log.Debug("request sent again and refused for the state an earlier send may have made", "ticket", ticket, "state", st.State)
	return ok(st.State)
}

// Pause stops the dispatch of service's tickets (durably: a restart or a
// failover keeps it) until Resume; submits are still taken. Pausing a
// paused service, or resuming a running one, succeeds. ErrUnsupported: the
// broker, or its cluster, cannot take it yet.
func (c *Client) Pause(ctx context.Context, service string) error {
	return c.pauseService(ctx, tsp.SvcPause, service)
}

// Resume starts the dispatch of a paused service's tickets again.
func (c *Client) Resume(ctx context.Context, service string) error {
	return c.pauseService(ctx, tsp.SvcResume, service)
}

func (c *Client) pauseService(ctx context.Context, svc, service string) error {
	rep, err := c.do(ctx, svc, [][]byte{[]byte(service)})
	if err != nil {
		return err
	}
	return lifecycleStatus(rep, strings.TrimPrefix(svc, tsp.Prefix), "")
}

// Attempt is one attempt of a ticket that ended without a reply.
type Attempt struct {
	Start   time.Time     `json:"start"`
	End     time.Time     `json:"end"`
	Took    time.Duration `json:"-"`
	Worker  string        `json:"worker,omitempty"`
	Outcome string        `json:"outcome"` // retried, failed or cancelled
	Error   string        `json:"error,omitempty"`
}

// Attempts returns the history of a ticket's attempts that ended without
// a reply (worker failures, lost workers, timeouts, the last failure,
// a cancel while running), oldest first; the attempt that was answered is
// not in it. ErrUnsupported: a broker older than the history.
func (c *Client) Attempts(ctx context.Context, ticket string) ([]Attempt, error) {
	rep, err := c.do(ctx, tsp.SvcAttempts, [][]byte{[]byte(ticket)})
	if err != nil {
		return nil, err
	}
	if unsupported(rep) {
		return nil, fmt.Errorf("%w: attempts: %s", ErrUnsupported, rep[1])
	}
	if err := status(rep, ticket, false); err != nil {
		return nil, err
	}
	if len(rep) != 2 {
		return nil, fmt.Errorf("%w: attempts answered %d frames, want 2", ErrProtocol, len(rep))
	}
	var out []Attempt
	if err := json.Unmarshal(rep[1], &out); err != nil {
		return nil, fmt.Errorf("%w: attempts: %w", ErrProtocol, err)
	}
	for i := range out {
		out[i].Took = out[i].End.Sub(out[i].Start)
	}
	return out, nil
}

// RetryFailed gives every failed ticket of service another round (as
// Retry) and returns how many it retried. It pages through the failed
// tickets (ListEach), so it sees the tickets failed when it reached their
// page; one retried meanwhile by someone else is skipped. On an error it
// returns the count so far with the error.
func (c *Client) RetryFailed(ctx context.Context, service string) (int, error) {
	if service == "" {
		return 0, fmt.Errorf("%w: retry of the failed tickets: no service", ErrRejected)
	}
	n := 0
	err := c.ListEach(ctx, ListOptions{Service: service, State: "failed"}, func(r TicketInfo) error {
		switch err := c.Retry(ctx, r.Ticket); {
		case err == nil:
			n++
		case errors.Is(err, ErrNotFailed), errors.Is(err, ErrUnknown):
			// Retried or closed since it was listed.
		default:
			return err
		}
		return nil
	})
	return n, err
}
