package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// EnvBrokers names the environment variable with the broker list of client
// commands and workers when --broker is not given. It is not a
// TITANIC_<SECTION>_<KEY> broker setting (no section is named "brokers"),
// so a broker started in the same environment does not refuse it.
const EnvBrokers = "TITANIC_BROKERS"

// defaultBroker is the endpoint a broker on the defaults listens on.
const defaultBroker = "tcp://127.0.0.1:5555"

const brokerHelp = "broker endpoints, comma-separated (failover order); default: $" + EnvBrokers + ", else " + defaultBroker

// brokerList is --broker if given, else $TITANIC_BROKERS, else the
// default broker's endpoint.
func brokerList(e env, flagValue string) []string {
	if l := splitList(flagValue); len(l) > 0 {
		return l
	}
	for _, kv := range e.environ() {
		if v, ok := strings.CutPrefix(kv, EnvBrokers+"="); ok {
			if l := splitList(v); len(l) > 0 {
				return l
			}
		}
	}
	return []string{defaultBroker}
}

// checkBrokers refuses a broker list with an endpoint libzmq cannot
// connect to as a bad command line: its own error ("connect
// 127.0.0.1:5555: invalid argument") does not say what to write.
func checkBrokers(eps []string) error {
	for _, ep := range eps {
		if err := client.CheckEndpoint(ep); err != nil {
			return usagef("%v (--broker or $%s)", err, EnvBrokers)
		}
	}
	return nil
}

// clientFlags are the flags every client command takes.
type clientFlags struct {
	brokers   *string
	timeout   *time.Duration
	retries   *int
	refused   *optDuration
	serverKey *string
	ownKey    *string
	// notify and waitTimeout are only on the commands that wait (nil on
	// the others).
	notify      *string
	waitTimeout *time.Duration
}

func addClientFlags(fs *flag.FlagSet) clientFlags {
	timeout := new(time.Duration)
	const tryHelp = "time to wait for each try of each request (with several brokers, a dead one costs no try while another serves)"
	fs.DurationVar(timeout, "try-timeout", defaultTimeout, tryHelp)
	fs.DurationVar(timeout, "timeout", defaultTimeout, "the earlier name of --try-timeout")
	return clientFlags{
		brokers: fs.String("broker", "", brokerHelp),
		timeout: timeout,
		retries: fs.Int("retries", client.DefaultRetries, "tries per broker before giving up"),
		refused: optDurationFlag(fs, "refused-wait",
			"give up sooner once every broker has refused connections (nothing listens) for this `duration`; default: all tries of a broker but one, at least 2s; 0: keep the tries"),
		serverKey: fs.String("curve-server-key", "", "CURVE: the broker's public key file (with --curve-key)"),
		ownKey:    fs.String("curve-key", "", "CURVE: this client's key file, made by titanic keygen (its .pub must be in the broker's allowlist)"),
	}
}

// addWaitFlags adds the client flags of a command that waits for replies.
func addWaitFlags(fs *flag.FlagSet) clientFlags {
	cf := addClientFlags(fs)
	cf.notify = fs.String("notify", "", "the brokers' notification endpoints, comma-separated: waiting is woken by them instead of polling")
	cf.waitTimeout = fs.Duration("wait-timeout", 0, "give up waiting after this long in all (exit 3; the tickets stay queued); 0: no limit")
	return cf
}

// waitContext bounds a wait by --wait-timeout.
func (f clientFlags) waitContext(e env) (context.Context, context.CancelFunc) {
	if f.waitTimeout == nil || *f.waitTimeout <= 0 {
		return context.WithCancel(e.ctx)
	}
	return context.WithTimeout(e.ctx, *f.waitTimeout)
}

// waitExpired reports whether a wait ended by --wait-timeout (not by an
// interrupt).
func (f clientFlags) waitExpired(e env, ctx context.Context) bool {
	return e.ctx.Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded)
}

// refusedWait is --refused-wait as client.Config.RefusedWait: not given,
// the Config's default (which follows --retries and --try-timeout); the
// flag's 0 is never.
func (f clientFlags) refusedWait() time.Duration {
	switch {
	case !f.refused.set:
		return 0
	case f.refused.d <= 0:
		return -1
	}
	return f.refused.d
}

// optDuration is a duration flag that knows whether it was given.
type optDuration struct {
	d   time.Duration
	set bool
}

func optDurationFlag(fs *flag.FlagSet, name, usage string) *optDuration {
	v := new(optDuration)
	fs.Var(v, name, usage)
	return v
}

func (v *optDuration) String() string {
	if v == nil || !v.set {
		return ""
	}
	return v.d.String()
}

func (v *optDuration) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	v.d, v.set = d, true
	return nil
}

// dial makes a client from the flags; tune, if given, adjusts its config.
func (f clientFlags) dial(e env, tune ...func(*client.Config)) (*client.Client, error) {
	// A bad endpoint is a bad command line: TITANIC_PARSE_ONLY says so.
	brokers := brokerList(e, *f.brokers)
	if err := checkBrokers(brokers); err != nil {
		return nil, err
	}
	if err := e.goAhead(); err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cc, err := clientCurve(*f.serverKey, *f.ownKey)
	if err != nil {
		return nil, err
	}
	cfg := client.Config{Brokers: brokers, Timeout: *f.timeout, Retries: *f.retries, RefusedWait: f.refusedWait(), Logger: log, Curve: cc}
	if f.notify != nil {
		cfg.Notify = splitList(*f.notify)
	}
	for _, t := range tune {
		t(&cfg)
	}
	if e.dialed != nil {
		*e.dialed = dialed{brokers: cfg.Brokers, timeout: cfg.Timeout, retries: cfg.Retries}
	}
	return client.New(cfg)
}

// identify makes a waiting command's client present at the broker
// (titanic.hello) under a name that says what and where it is, so that
// `titanic clients` shows who waits; commands that ask once and leave
// stay anonymous (a hello would cost them a round trip for nothing).
func identify(name string) func(*client.Config) {
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	id := fmt.Sprintf("titanic-%s@%s/%d", name, strings.ReplaceAll(host, " ", "_"), os.Getpid())
	return func(cfg *client.Config) { cfg.ID = id[:min(len(id), titanic.MaxClientID)] }
}

// isTerminal reports whether f, a standard stream, is a terminal (a tty,
// not only a character device): then nobody pipes a body in and a read
// of standard input waits for typing, and output may be redrawn in place.
func isTerminal(stream any) bool {
	f, ok := stream.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	// A character device is not yet a terminal: /dev/null is one (cron,
	// systemd, nohup give it as standard input).
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && isTTY(f)
}

func runSubmit(e env) error {
	fs := newFlags(e, "submit", "[flags] SERVICE [BODY | -]   (no BODY or -: read standard input)")
	cf := addWaitFlags(fs)
	key := fs.String("key", "", "idempotency key: a resubmit with the same key, service and body returns the same ticket; with another service or body it fails (exit 7) (with --from: a prefix, line N gets KEY:N)")
	wait := fs.Bool("wait", false, "wait for the reply and print it instead of the ticket")
	from := fs.String("from", "", "submit one request per line of FILE (-: standard input); prints TICKET<TAB>LINE-NUMBER, a progress bar and a summary")
	parallel := fs.Int("parallel", client.DefaultMaxPending, "with --from: submits in flight at once (pipelined on one connection)")
	lf := addLifecycleFlags(fs)
	asJSON := addJSONFlag(fs)
	if err := e.parseFlags(fs, e.args); err != nil {
		return err
	}
	if *key == "" && lf.given("key") {
		// An empty key is no key: the submit would not be idempotent,
		// which is what --key promises (a variable left unset).
		return usagef("--key wants a key of 1 to 128 bytes: an empty one would make the submit not idempotent")
	}
	opt := client.SubmitOptions{IdemKey: *key}
	if err := lf.apply(&opt); err != nil {
		return err
	}
	if *from != "" {
		if fs.NArg() != 1 || *wait || *asJSON {
			return usagef("--from FILE wants SERVICE only, and no --wait (use titanic wait) nor --json")
		}
		if err := e.goAhead(); err != nil {
			return err
		}
		return submitFrom(e, cf, fs.Arg(0), *from, opt, *parallel)
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return usagef("want SERVICE [BODY | -]")
	}
	if err := e.goAhead(); err != nil {
		return err
	}
	var body []byte
	if fs.NArg() == 2 && fs.Arg(1) != "-" {
		body = []byte(fs.Arg(1))
	} else {
		if isTerminal(e.stdin) {
			// As cat or psql do on a terminal, but saying so: a silent
			// wait looks like a hang.
			fmt.Fprintln(e.stderr, "titanic submit: reading the request body from standard input; end it with Ctrl-D (or give BODY as an argument)")
		}
		b, err := io.ReadAll(e.stdin)
		if err != nil {
			return fmt.Errorf("read standard input: %w", err)
		}
		body = b
	}
	var tune []func(*client.Config)
	if *wait {
		tune = append(tune, identify("submit"))
	}
	c, err := cf.dial(e, tune...)
	if err != nil {
		return err
	}
	defer c.Close()
	ticket, err := c.Submit(e.ctx, fs.Arg(0), [][]byte{body}, opt)
	if kc := (*client.KeyConflictError)(nil); errors.As(err, &kc) {
		return fmt.Errorf("%w: key %q already names ticket %s, %s; a resend must repeat its service and body exactly, another request needs another key",
			client.ErrKeyConflict, kc.Key, kc.Ticket, kc.Detail)
	}
	if err != nil {
		return err
	}
	if !*wait {
		if *asJSON {
			return printJSON(e.stdout, struct {
				ID string `json:"id"`
			}{ticket})
		}
		fmt.Fprintln(e.stdout, shown(ticket))
		return nil
	}
	fmt.Fprintln(e.stderr, shown(ticket))
	warnUndispatched(e, c, fs.Arg(0))
	return printReply(e, cf, c, ticket, true, *asJSON)
}

// warnUndispatched warns when the broker will not dispatch the ticket
// now, so that a wait that may never end is not silent: the service is
// paused (titanic.stats; a broker without the field says nothing), or
// has no worker (8/MMI: a typo, a worker not started). The answer is the
// broker's view of this moment: a resume or a worker may still come.
func warnUndispatched(e env, c *client.Client, service string) {
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Second)
	defer cancel()
	if st, err := c.QueueStats(ctx, service); err == nil {
		for _, q := range st.Services {
			if q.Service == service && q.Paused {
				fmt.Fprintf(e.stderr, "titanic submit: warning: service %q is paused: its tickets are taken but not dispatched until titanic resume %s; --wait-timeout bounds this wait\n", service, service)
				return
			}
		}
	}
	rep, err := c.Request(ctx, "mmi.service", [][]byte{[]byte(service)})
	if err != nil || len(rep) == 0 || string(rep[0]) != "404" {
		return // served, or no answer: nothing to say
	}
	fmt.Fprintf(e.stderr, "titanic submit: warning: no worker serves %q now; the ticket waits for one (for ever by default; the broker's queue.no_worker_timeout, when set, fails it after that long); --wait-timeout bounds this wait\n", service)
}

func printReply(e env, cf clientFlags, c *client.Client, ticket string, wait, asJSON bool) error {
	var frames [][]byte
	var err error
	if wait {
		ctx, cancel := cf.waitContext(e)
		defer cancel()
		frames, err = waitThrough(e, ctx, c, ticket)
		if err != nil && cf.waitExpired(e, ctx) {
			return fmt.Errorf("%w: %s not answered within --wait-timeout %s; it stays queued (titanic reply --wait %s)", client.ErrPending, ticket, *cf.waitTimeout, ticket)
		}
	} else {
		frames, err = c.Reply(e.ctx, ticket, client.ReplyOptions{})
	}
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(e.stdout, toReplyJSON(ticket, frames))
	}
	for _, f := range frames {
		if _, err := e.stdout.Write(f); err != nil {
			return err
		}
	}
	return nil
}

// waitThrough is c.Wait that rides out broker outages: README's "waits
// until answered" holds through a restart or a failover longer than
// --refused-wait. Only once a broker has said the ticket is pending,
// though: brokers that never answered (a wrong --broker) end the wait
// with ErrUnavailable (exit 6) as at once as any command. ctx (Ctrl-C,
// --wait-timeout) ends it.
func waitThrough(e env, ctx context.Context, c *client.Client, ticket string) ([][]byte, error) {
	frames, err := c.Reply(ctx, ticket, client.ReplyOptions{})
	// A broker's passing 500 (busy, or a pair's "not ready" for a
	// ticket its peer may hold) is waited through, as c.Wait does: it
	// ended the wait as a failure (exit 5, found by a reviewer), which
	// tells a script to resubmit a ticket that may be done.
	if !errors.Is(err, client.ErrPending) && !errors.Is(err, client.ErrServer) {
		return frames, err
	}
	warned := false
	for {
		frames, err = c.Wait(ctx, ticket, client.WaitOptions{})
		if !errors.Is(err, client.ErrUnavailable) || ctx.Err() != nil {
			return frames, err
		}
		if !warned {
			fmt.Fprintf(e.stderr, "titanic: warning: waiting for %s: %s; still waiting, until a broker answers (Ctrl-C or --wait-timeout to stop)\n", shown(ticket), shownErr(err))
			warned = true
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(time.Second): // each try waits --refused-wait too
		}
	}
}

// ticketCommand parses the flags and the single TICKET argument; extra,
// if given, adds the command's own flags and says whether it waits.
// present, if given, is called after parsing: true makes the client
// present at the broker (identify).
func ticketCommand(e env, name string, extra func(fs *flag.FlagSet) (waits bool), present func() bool) (*client.Client, clientFlags, string, error) {
	fs := newFlags(e, name, "[flags] TICKET")
	var cf clientFlags
	if extra != nil && extra(fs) {
		cf = addWaitFlags(fs)
	} else {
		cf = addClientFlags(fs)
	}
	if err := e.parseFlags(fs, e.args); err != nil {
		return nil, cf, "", err
	}
	if fs.NArg() != 1 {
		return nil, cf, "", usagef("want exactly one TICKET")
	}
	var tune []func(*client.Config)
	if present != nil && present() {
		tune = append(tune, identify(name))
	}
	c, err := cf.dial(e, tune...)
	return c, cf, fs.Arg(0), err
}

func runStatus(e env) error {
	var withBody, withAttempts, asJSON *bool
	c, _, ticket, err := ticketCommand(e, "status", func(fs *flag.FlagSet) bool {
		withBody = fs.Bool("body", false, "show the request body too: printable text as it is, else its size (--json gives it in base64)")
		withAttempts = fs.Bool("attempts", false, "show the attempt history too: each attempt that ended without a reply (when, worker, how long, outcome, error)")
		asJSON = addJSONFlag(fs)
		return false
	}, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	var st client.Status
	var body [][]byte
	if *withBody {
		st, body, err = c.StatusBody(e.ctx, ticket)
	} else {
		st, err = c.Status(e.ctx, ticket)
	}
	if err != nil {
		return err
	}
	var history []client.Attempt
	if *withAttempts {
		if history, err = c.Attempts(e.ctx, ticket); err != nil {
			return err
		}
	}
	if *asJSON {
		out := toStatusJSON(st, body, *withBody)
		if *withAttempts {
			out.History = toAttemptsJSON(history)
		}
		return printJSON(e.stdout, out)
	}
	printStatus(e.stdout, ticket, st)
	if *withBody {
		printBody(e.stdout, body)
	}
	if *withAttempts {
		printAttempts(e.stdout, history)
	}
	return nil
}

// printStatus writes a ticket's status as `status` shows it. The reason
// of a ticket that has not failed for good is an earlier attempt's, and
// says so: the ticket may yet succeed, or already did.
func printStatus(w io.Writer, ticket string, st client.Status) {
	fmt.Fprintf(w, "ticket:   %s\nservice:  %s\nstate:    %s\nattempts: %d\ncreated:  %s\nupdated:  %s\n",
		shown(ticket), shown(st.Service), shown(st.State), st.Attempts, st.Created.Format(time.RFC3339Nano), st.Updated.Format(time.RFC3339Nano))
	switch {
	case st.Reason == "":
	case st.State == "failed" || st.State == "cancelled":
		fmt.Fprintf(w, "reason:   %s\n", shown(st.Reason))
	default:
		fmt.Fprintf(w, "last failed attempt: %s\n", shown(st.Reason))
	}
}

// printBody shows a request body after a status: its size, then each
// frame that is printable text as it is; a binary frame is named, not
// written, so that a terminal is not fed control bytes.
func printBody(w io.Writer, body [][]byte) {
	n := 0
	for _, f := range body {
		n += len(f)
	}
	if len(body) == 1 {
		fmt.Fprintf(w, "body:     %d bytes\n", n)
	} else {
		fmt.Fprintf(w, "body:     %d bytes in %d frames\n", n, len(body))
	}
	for i, f := range body {
		if len(body) > 1 {
			fmt.Fprintf(w, "--- frame %d, %d bytes\n", i+1, len(f))
		}
		if !printable(f) {
			fmt.Fprintf(w, "(binary, not shown: titanic status --body --json gives it in base64)\n")
			continue
		}
		if _, err := w.Write(f); err != nil {
			return
		}
		if len(f) > 0 && f[len(f)-1] != '\n' {
			fmt.Fprintln(w)
		}
	}
}

// printable reports whether b is text a terminal shows as it is: UTF-8
// without control characters other than tab and newlines.
func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if unicode.IsControl(r) && r != '\n' && r != '\t' && r != '\r' {
			return false
		}
	}
	return true
}

func runReply(e env) error {
	var wait, asJSON *bool
	c, cf, ticket, err := ticketCommand(e, "reply", func(fs *flag.FlagSet) bool {
		wait = fs.Bool("wait", false, "wait until the ticket is answered")
		asJSON = addJSONFlag(fs)
		return true
	}, func() bool { return *wait })
	if err != nil {
		return err
	}
	defer c.Close()
	return printReply(e, cf, c, ticket, *wait, *asJSON)
}

func runClose(e env) error {
	c, _, ticket, err := ticketCommand(e, "close", nil, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	// The broker answers a close of a ticket that cannot exist with
	// success (9/TSP: close is idempotent), so a typo would pass unseen:
	// a malformed ticket is refused here as reply's broker refuses it.
	if _, err := store.ParseID(ticket); err != nil {
		return fmt.Errorf("%w %s: bad request: %w", client.ErrUnknown, ticket, err)
	}
	return c.CloseTicket(e.ctx, ticket)
}

// maxTicketsLimit is the largest --limit of tickets: the brokers' largest
// titanic.list page, and the HTTP API's largest limit=.
const maxTicketsLimit = titanic.MaxListLimit

func runTickets(e env) error {
	fs := newFlags(e, "tickets", "[flags]")
	cf := addClientFlags(fs)
	service := fs.String("service", "", "only tickets of this service")
	state := fs.String("state", "", "only tickets in this state: pending, dispatched, done, failed or cancelled")
	after := fs.String("after", "", "start after this ticket (paging)")
	limit := fs.Int("limit", 100, fmt.Sprintf("at most this many tickets (1 to %d)", maxTicketsLimit))
	asJSON := addJSONFlag(fs)
	if err := parseNoArgs(e, fs); err != nil {
		return err
	}
	if *limit < 1 || *limit > maxTicketsLimit {
		// As the HTTP API's limit=: not a silent default.
		return usagef("--limit %d: want 1 to %d", *limit, maxTicketsLimit)
	}
	if *state != "" {
		// As the broker checks it (which would refuse it, exit 4): a
		// bad command line.
		if _, err := store.ParseState(*state); err != nil {
			return usagef("--state: %v", err)
		}
	}
	c, err := cf.dial(e)
	if err != nil {
		return err
	}
	defer c.Close()
	ts, err := c.List(e.ctx, client.ListOptions{Service: *service, State: *state, After: *after, Limit: *limit})
	if err != nil {
		return err
	}
	if *asJSON {
		// One document, as the HTTP API's page: next is the --after of
		// the next page ("" when this one was not full).
		type row struct {
			ID       string `json:"id"`
			Service  string `json:"service"`
			State    string `json:"state"`
			Attempts int    `json:"attempts"`
		}
		out := struct {
			Tickets []row  `json:"tickets"`
			Next    string `json:"next"`
		}{Tickets: make([]row, 0, len(ts))}
		for _, t := range ts {
			out.Tickets = append(out.Tickets, row{t.Ticket, t.Service, t.State, t.Attempts})
		}
		if len(ts) > 0 && len(ts) >= *limit {
			out.Next = ts[len(ts)-1].Ticket
		}
		return printJSON(e.stdout, out)
	}
	if len(ts) == 0 {
		// On stderr, as dead and clients say theirs: stdout stays the
		// list, empty.
		fmt.Fprintln(e.stderr, "titanic tickets: no ticket"+ticketsFilter(*service, *state, *after))
		return nil
	}
	for _, t := range ts {
		fmt.Fprintf(e.stdout, "%s\t%s\t%s\t%d\n", shown(t.Ticket), shown(t.Service), shown(t.State), t.Attempts)
	}
	if len(ts) > 0 && len(ts) >= *limit {
		// A full page may not be the end: say how to see the rest, on
		// stderr so that scripts reading stdout get tickets only.
		fmt.Fprintf(e.stderr, "titanic tickets: showed %d, the limit; there may be more: --after %s for the next page, or --limit up to %d\n",
			len(ts), shown(ts[len(ts)-1].Ticket), maxTicketsLimit)
	}
	return nil
}

// ticketsFilter says what an empty tickets listing was filtered by.
func ticketsFilter(service, state, after string) string {
	var by []string
	if state != "" {
		by = append(by, "in state "+state)
	}
	if service != "" {
		by = append(by, "of service "+shown(service))
	}
	if after != "" {
		by = append(by, "after "+shown(after))
	}
	return strings.Join(append([]string{""}, by...), " ")
}

// runClients lists the clients present at a broker: those that identify
// themselves with a client id (client.Config.ID, titanic.hello), which
// titanic's waiting commands do; commands that ask once and leave do not.
func runClients(e env) error {
	fs := newFlags(e, "clients", "[flags]")
	cf := addClientFlags(fs)
	asJSON := addJSONFlag(fs)
	c, err := dialNoArgs(e, fs, cf)
	if err != nil {
		return err
	}
	defer c.Close()
	rep, err := c.Request(e.ctx, tsp.SvcClients, [][]byte{{}})
	if err != nil {
		return err
	}
	if len(rep) == 0 || string(rep[0]) != "200" {
		return fmt.Errorf("clients: %q", rep)
	}
	if *asJSON {
		type row struct {
			ID    string    `json:"id"`
			Since time.Time `json:"since"`
			Seen  time.Time `json:"seen"`
		}
		out := struct {
			Clients []row `json:"clients"`
		}{Clients: []row{}}
		for _, line := range rep[1:] {
			c, ok := parseClient(line)
			if !ok {
				continue
			}
			out.Clients = append(out.Clients, row{c.id, c.since, c.seen})
		}
		return printJSON(e.stdout, out)
	}
	if len(rep) == 1 {
		// An empty list is no error, but it puzzles: say what is listed.
		fmt.Fprintln(e.stderr, "titanic clients: no client present at this broker. Listed are the clients that identify themselves"+
			" (Go client.Config.ID, the titanic.hello extension): programs, and titanic's waiting commands (submit --wait,"+
			" reply --wait, wait) while they wait; one-shot commands (submit, status, ...) and workers are not listed"+
			" (workers: the HTTP API's /api/v1/workers)")
	}
	for _, line := range rep[1:] {
		c, ok := parseClient(line)
		if !ok {
			continue
		}
		fmt.Fprintf(e.stdout, "%s\tconnected %s\tlast seen %s\n", shown(c.id), c.since.Format(time.RFC3339), c.seen.Format(time.RFC3339))
	}
	return nil
}

// presentClient is one client titanic.clients lists.
type presentClient struct {
	id          string
	since, seen time.Time
}

// parseClient reads one frame of titanic.clients: "ID SINCE SEEN", the
// times in Unix milliseconds. The ID is whatever comes before the last
// two fields, so an ID with spaces (or anything else in it) is kept
// whole.
func parseClient(frame []byte) (presentClient, bool) {
	rest, seenText, ok1 := cutLast(string(frame))
	id, sinceText, ok2 := cutLast(rest)
	since, err1 := strconv.ParseInt(sinceText, 10, 64)
	seen, err2 := strconv.ParseInt(seenText, 10, 64)
	if !ok1 || !ok2 || err1 != nil || err2 != nil {
		return presentClient{}, false
	}
	return presentClient{id, time.UnixMilli(since).UTC(), time.UnixMilli(seen).UTC()}, true
}

// cutLast cuts s around its last space.
func cutLast(s string) (before, after string, found bool) {
	i := strings.LastIndexByte(s, ' ')
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

// dialNoArgs parses the flags of a command that takes no argument and
// dials the brokers.
func dialNoArgs(e env, fs *flag.FlagSet, cf clientFlags) (*client.Client, error) {
	if err := parseNoArgs(e, fs); err != nil {
		return nil, err
	}
	return cf.dial(e)
}

// parseNoArgs parses the flags of a command that takes no argument.
func parseNoArgs(e env, fs *flag.FlagSet) error {
	if err := e.parseFlags(fs, e.args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
