package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/titanicmq/titanic/client"
)

// The job lifecycle's commands (README "Job lifecycle"): submit's options,
// cancel, pause, resume, retry --failed, dead, purge, status --attempts.

// lifecycleFlags are submit's job lifecycle flags.
type lifecycleFlags struct {
	delay, ttl   *time.Duration
	at, deadline *string
	priority     *string
	attempts     *int
	backoff      *string
	// given reports whether a flag was on the command line: a --ttl of
	// 0 asks for no time at all, not for the default (no TTL).
	given func(name string) bool
}

func addLifecycleFlags(fs *flag.FlagSet) lifecycleFlags {
	return lifecycleFlags{
		delay:    fs.Duration("delay", 0, "not dispatched before this long from now (the ticket is delayed until then)"),
		at:       fs.String("at", "", "not dispatched before this time (RFC 3339: 2030-01-02T15:04:05Z); not with --delay"),
		priority: fs.String("priority", "", "high, normal or low: a service's high tickets are dispatched before normal, normal before low"),
		ttl:      fs.Duration("ttl", 0, "fail as expired if not dispatched within this long"),
		deadline: fs.String("deadline", "", "fail as expired if not dispatched by this time (RFC 3339); not with --ttl"),
		attempts: fs.Int("attempts", 0, "dispatches before the ticket fails for good (0: the broker's --max-attempts)"),
		backoff:  fs.String("backoff", "", "BASE[,MAX]: exponential backoff between attempts (1s,5m); default the broker's"),
		given: func(name string) bool {
			set := false
			fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
			return set
		},
	}
}

// apply sets opt's lifecycle fields from the flags.
func (l lifecycleFlags) apply(opt *client.SubmitOptions) error {
	opt.Delay, opt.TTL, opt.MaxAttempts = *l.delay, *l.ttl, *l.attempts
	opt.Priority = client.Priority(*l.priority)
	if *l.delay != 0 && *l.at != "" {
		return usagef("give --delay or --at, not both")
	}
	if *l.ttl != 0 && *l.deadline != "" {
		return usagef("give --ttl or --deadline, not both")
	}
	for _, t := range []struct {
		name, v string
		to      *time.Time
	}{{"at", *l.at, &opt.At}, {"deadline", *l.deadline, &opt.Deadline}} {
		if t.v == "" {
			continue
		}
		v, err := time.Parse(time.RFC3339Nano, t.v)
		if err != nil {
			return usagef("--%s %q: want an RFC 3339 time such as 2030-01-02T15:04:05Z", t.name, t.v)
		}
		*t.to = v
	}
	switch opt.Priority {
	case "", client.PriorityHigh, client.PriorityNormal, client.PriorityLow:
	default:
		return usagef("--priority %q: want high, normal or low", *l.priority)
	}
	if *l.delay < 0 || *l.ttl < 0 || *l.attempts < 0 {
		return usagef("--delay, --ttl and --attempts cannot be negative")
	}
	if *l.ttl == 0 && l.given("ttl") {
		// The wire and the HTTP API refuse a ttl of 0; taken here, it
		// was sent as no TTL at all, a ticket that never expires.
		return usagef("--ttl %s: want a duration above 0 (leave --ttl out for no TTL)", *l.ttl)
	}
	if *l.backoff != "" {
		base, maxB, two := strings.Cut(*l.backoff, ",")
		var err error
		if opt.BackoffBase, err = time.ParseDuration(base); err != nil || opt.BackoffBase <= 0 {
			return usagef("--backoff %q: want BASE[,MAX], durations above 0 (1s,5m)", *l.backoff)
		}
		if two {
			if opt.BackoffMax, err = time.ParseDuration(maxB); err != nil || opt.BackoffMax < opt.BackoffBase {
				return usagef("--backoff %q: MAX must be a duration not below BASE", *l.backoff)
			}
		}
	}
	return nil
}

func runCancel(e env) error {
	c, _, ticket, err := ticketCommand(e, "cancel", nil, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Cancel(e.ctx, ticket); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s cancelled\n", ticket)
	return nil
}

// serviceCommand parses the flags and the single SERVICE argument.
func serviceCommand(e env, name string) (*client.Client, string, error) {
	fs := newFlags(e, name, "[flags] SERVICE")
	cf := addClientFlags(fs)
	if err := e.parseFlags(fs, e.args); err != nil {
		return nil, "", err
	}
	if fs.NArg() != 1 || fs.Arg(0) == "" {
		return nil, "", usagef("want exactly one SERVICE")
	}
	c, err := cf.dial(e)
	return c, fs.Arg(0), err
}

func runPause(e env) error {
	return serviceCall(e, "pause", (*client.Client).Pause, "%[1]s paused: its tickets are taken, not dispatched, until titanic resume %[1]s\n")
}

func runResume(e env) error {
	return serviceCall(e, "resume", (*client.Client).Resume, "%s resumed\n")
}

// serviceCall runs the command name of one SERVICE argument: call, then
// done (a format of the service) on stdout.
func serviceCall(e env, name string, call func(*client.Client, context.Context, string) error, done string) error {
	c, service, err := serviceCommand(e, name)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := call(c, e.ctx, service); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, done, service)
	return nil
}

func runRetry(e env) error {
	fs := newFlags(e, "retry", "[flags] TICKET | --service S --failed")
	cf := addClientFlags(fs)
	service := fs.String("service", "", "with --failed: the service whose failed tickets to retry")
	failed := fs.Bool("failed", false, "retry every failed ticket of --service instead of one TICKET")
	if err := e.parseFlags(fs, e.args); err != nil {
		return err
	}
	switch {
	case *failed && (*service == "" || fs.NArg() != 0):
		return usagef("--failed wants --service S and no TICKET")
	case !*failed && (*service != "" || fs.NArg() != 1):
		return usagef("want exactly one TICKET, or --service S --failed")
	}
	c, err := cf.dial(e)
	if err != nil {
		return err
	}
	defer c.Close()
	if *failed {
		n, err := c.RetryFailed(e.ctx, *service)
		if err != nil && n == 0 {
			return err // refused, or nothing done: no count to report
		}
		fmt.Fprintf(e.stdout, "%d failed tickets of %s pending again\n", n, *service)
		return err
	}
	ticket := fs.Arg(0)
	if err := c.Retry(e.ctx, ticket); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s pending again\n", ticket)
	return nil
}

// deadTicket is one row of `titanic dead`.
type deadTicket struct {
	ID       string    `json:"id"`
	Service  string    `json:"service"`
	Attempts int       `json:"attempts"`
	Failed   time.Time `json:"failed"`
	Reason   string    `json:"reason"`
}

// deadSet lists the failed tickets (of service, or all), each looked up
// for its reason and time.
func deadSet(e env, c *client.Client, service string) ([]deadTicket, error) {
	var out []deadTicket
	err := c.ListEach(e.ctx, client.ListOptions{Service: service, State: "failed"}, func(r client.TicketInfo) error {
		st, err := c.Status(e.ctx, r.Ticket)
		switch {
		case errors.Is(err, client.ErrUnknown):
			return nil // closed since it was listed
		case err != nil:
			return err
		case st.State != "failed":
			return nil // retried since
		}
		out = append(out, deadTicket{ID: r.Ticket, Service: st.Service, Attempts: st.Attempts, Failed: st.Updated.UTC(), Reason: st.Reason})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func runDead(e env) error {
	fs := newFlags(e, "dead", "[flags]   (the dead set: tickets that failed for good)")
	cf := addClientFlags(fs)
	service := fs.String("service", "", "only this service's")
	asJSON := addJSONFlag(fs)
	c, err := dialNoArgs(e, fs, cf)
	if err != nil {
		return err
	}
	defer c.Close()
	dead, err := deadSet(e, c, *service)
	if err != nil {
		return err
	}
	if *asJSON {
		if dead == nil {
			dead = []deadTicket{}
		}
		return printJSON(e.stdout, struct {
			Tickets []deadTicket `json:"tickets"`
		}{dead})
	}
	if len(dead) == 0 {
		fmt.Fprintln(e.stderr, "titanic dead: no failed ticket")
		return nil
	}
	fmt.Fprintln(e.stdout, "TICKET\tSERVICE\tATTEMPTS\tFAILED\tREASON")
	for _, d := range dead {
		fmt.Fprintf(e.stdout, "%s\t%s\t%d\t%s\t%s\n", shown(d.ID), shown(d.Service), d.Attempts, d.Failed.Format(time.RFC3339), oneLine(d.Reason))
	}
	return nil
}

// oneLine keeps a worker's error on its row: its white space runs as
// one space, anything else not printable escaped (see shown).
func oneLine(s string) string { return shown(strings.Join(strings.Fields(s), " ")) }

// errPurgeUnconfirmed is purge's error without --yes: it closed nothing.
var errPurgeUnconfirmed = errors.New("nothing closed: add --yes to close them")

func runPurge(e env) error {
	fs := newFlags(e, "purge", "--service S --yes   (close the failed tickets of S)")
	cf := addClientFlags(fs)
	service := fs.String("service", "", "the service whose failed tickets to close (required)")
	yes := fs.Bool("yes", false, "close them; without it, only say how many it would close (and exit 1)")
	if err := e.parseFlags(fs, e.args); err != nil {
		return err
	}
	if *service == "" || fs.NArg() != 0 {
		return usagef("want --service S (and --yes), no argument")
	}
	c, err := cf.dial(e)
	if err != nil {
		return err
	}
	defer c.Close()
	dead, err := deadSet(e, c, *service)
	if err != nil {
		return err
	}
	if !*yes {
		fmt.Fprintf(e.stdout, "would close %d failed tickets of %s\n", len(dead), *service)
		return errPurgeUnconfirmed
	}
	// Each close is conditional (titanic.purge): a ticket retried since
	// the listing is left alone, whoever retried it.
	n, kept := 0, 0
	for _, d := range dead {
		switch err := c.Purge(e.ctx, d.ID); {
		case err == nil:
			n++
		case errors.Is(err, client.ErrNotFailed), errors.Is(err, client.ErrUnknown):
			kept++ // retried or closed since the listing
		case errors.Is(err, client.ErrUnsupported) && n == 0:
			return fmt.Errorf("%w (purge closes a ticket only if it is still failed, which needs cluster version 3;"+
				" titanic close TICKET closes one whatever its state)", err)
		default:
			fmt.Fprintf(e.stdout, "closed %d failed tickets of %s\n", n, *service)
			return err
		}
	}
	fmt.Fprintf(e.stdout, "closed %d failed tickets of %s\n", n, *service)
	if kept > 0 {
		fmt.Fprintf(e.stdout, "left %d alone: retried or closed since they were listed\n", kept)
	}
	return nil
}

// attemptJSON is one attempt of `status --attempts --json`.
type attemptJSON struct {
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Seconds float64   `json:"seconds"`
	Worker  string    `json:"worker,omitempty"`
	Outcome string    `json:"outcome"`
	Error   string    `json:"error,omitempty"`
}

func toAttemptsJSON(as []client.Attempt) []attemptJSON {
	out := make([]attemptJSON, 0, len(as))
	for _, a := range as {
		out = append(out, attemptJSON{Start: a.Start.UTC(), End: a.End.UTC(), Seconds: a.Took.Seconds(), Worker: a.Worker, Outcome: a.Outcome, Error: a.Error})
	}
	return out
}

// printAttempts writes the attempt history after a status.
func printAttempts(w io.Writer, as []client.Attempt) {
	if len(as) == 0 {
		fmt.Fprintln(w, "history:  no attempt ended without a reply")
		return
	}
	fmt.Fprintln(w, "history:  (attempts that ended without a reply, oldest first)")
	fmt.Fprintln(w, "  WHEN\tWORKER\tTOOK\tOUTCOME\tERROR")
	for _, a := range as {
		worker := shown(a.Worker)
		if worker == "" {
			worker = "-"
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", a.Start.UTC().Format(time.RFC3339Nano), worker, a.Took.Round(time.Millisecond), shown(a.Outcome), oneLine(a.Error))
	}
}
