package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/broker/mdp"
	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// Exit codes a shell user can rely on.
const (
	exitOK          = 0
	exitError       = 1 // anything else
	exitUsage       = 2 // bad command line
	exitPending     = 3 // reply: not answered yet
	exitUnknown     = 4 // unknown ticket, or request rejected: malformed, or too large
	exitFailed      = 5 // the ticket failed for good
	exitUnavailable = 6 // no broker answered
	exitKeyConflict = 7 // submit --key: the key names a ticket of another service or body
	// exitUnsupported: the broker, or its cluster, cannot take the
	// request yet (an older release; see `titanic cluster`).
	exitUnsupported = 8
	// exitInterrupted is the shell's code for a command ended by SIGINT
	// (128+2): scripts tell an interrupt from a failure.
	exitInterrupted = 130
)

// env is what a subcommand gets: its arguments and standard streams.
type env struct {
	ctx context.Context
	// environ is the process environment (nil: os.Environ), for tests.
	env    []string
	args   []string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	// dialed, if not nil, is told what the command dials.
	dialed *dialed
	// parseOnly: parseOnlyEnv is set; the command stops once its
	// command line parsed and checked (e.goAhead returns errParseOnly).
	parseOnly bool
}

// parseOnlyEnv names a hidden switch, off unless the variable is set to 1:
// every command then parses and checks its command line as a run does
// (the command name, its flags and their values, its arguments; the
// broker and config also resolve the configuration) and exits 0 without
// dialing, reading or writing anything (see env.goAhead), or 2 as a run
// would for a bad command line. The README test (internal/e2e
// TestReadme) parses the README's examples that need hosts it does not
// run this way, so that a command or flag the binary no longer has fails
// the test. It is not a setting: config ignores TITANIC_* variables of no
// section (config.misspeltEnv leaves it alone too).
const parseOnlyEnv = "TITANIC_PARSE_ONLY"

// errParseOnly ends a command whose command line parsed under
// parseOnlyEnv; Run exits 0 on it.
var errParseOnly = errors.New("command line ok (" + parseOnlyEnv + "=1: nothing run)")

// parseFlags is the package's parseFlags. Under parseOnlyEnv the command
// goes on checking its command line (arguments, values, flags that
// exclude each other) as a run does, up to e.goAhead.
func (e env) parseFlags(fs *flag.FlagSet, args []string) error { return parseFlags(fs, args) }

// goAhead is called by every command once its whole command line is
// checked, before it dials, reads or writes anything (client commands:
// in clientFlags.dial): under parseOnlyEnv it ends the command with
// errParseOnly, so that parse-only refuses, exit 2, every command line a
// run refuses as a usage error, and only those.
func (e env) goAhead() error {
	if e.parseOnly {
		return errParseOnly
	}
	return nil
}

type command struct {
	name, summary string
	run           func(e env) error
}

func commands() []command {
	return []command{
		{"broker", "run a broker (durable Titanic + Majordomo)", runBroker},
		{"worker", "serve a service by running a command per request", runWorker},
		{"submit", "submit a request, print its ticket (--wait: its reply)", runSubmit},
		{"status", "show a ticket's state", runStatus},
		{"wait", "wait for tickets, with progress (exit 5 if any failed, else 4 if any is unknown)", runWait},
		{"reply", "print a ticket's reply (--wait to wait for it)", runReply},
		{"close", "close a ticket (delete it and its reply)", runClose},
		{"retry", "give a failed ticket another round (--service S --failed: every failed ticket of S)", runRetry},
		{"cancel", "cancel a pending or running ticket (it ends as cancelled)", runCancel},
		{"pause", "stop dispatching a service's tickets (submits are still taken)", runPause},
		{"resume", "dispatch a paused service's tickets again", runResume},
		{"dead", "list the dead set: tickets failed for good, with reason and attempts", runDead},
		{"purge", "close the failed tickets of a service (--service S --yes)", runPurge},
		{"tickets", "list tickets", runTickets},
		{"clients", "list the clients present at a broker", runClients},
		{"stats", "per service: pending, in flight, done, failed, workers, rates (--json)", runStats},
		{"top", "the stats table, refreshed every second until Ctrl-C", runTop},
		{"cluster", "show a replicated deployment; join or remove a raft member", runCluster},
		{"backup", "write an online snapshot of a running broker's store", runBackup},
		{"check", "verify a data file (stopped broker, or a backup)", runCheck},
		{"compact", "shrink a stopped broker's data file to its live tickets (offline)", runCompact},
		{"restore", "make a data directory from a backup (a new broker, pair or group)", runRestore},
		{"config", "print the effective broker configuration (flags, file, environment)", runConfig},
		{"keygen", "make a CURVE key pair (NAME.key, NAME.pub)", runKeygen},
		{"completion", "print a shell completion script (bash; zsh with bashcompinit)", runCompletion},
		{"version", "print the version", runVersion},
	}
}

// Run runs the titanic command line and returns the process exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return run(ctx, args, nil, stdin, stdout, stderr)
}

// dialed records what a client command dialed, for its error message.
type dialed struct {
	brokers []string
	timeout time.Duration
	retries int
}

// unavailable explains "no broker answered": what was seen of each broker
// (the client's causes, one per line), where the command looked, and how
// to point it elsewhere. It returns the whole message for err.
func (d *dialed) unavailable(err error) string {
	var ue *client.UnavailableError
	if errors.As(err, &ue) {
		// A cause is a broker's own words, or its endpoint: shown.
		var b strings.Builder
		b.WriteString(shown(strings.Replace(err.Error(), ue.Error(), ue.Summary(), 1)))
		b.WriteString(":")
		for _, c := range ue.Causes {
			b.WriteString("\n  " + shown(c.String()))
		}
		switch {
		case ue.NoActive:
			// They answered: "is a broker running there?" would mislead.
			fmt.Fprintf(&b, "\n  They answered, but none serves clients now (a pair's passive node, a raft follower, a group without"+
				"\n  a quorum, a pair node waiting for its peer: their words are above, more in their logs). Other brokers: --broker A,B or $%s", EnvBrokers)
		case ue.All(client.CauseAuth) || ue.All(client.CauseHandshake) || ue.All(client.CauseTooLarge):
			// The cause names the setting to change: nothing to add.
		case ue.RefusedFor > 0:
			fmt.Fprintf(&b, "\n  Is a broker running there? Other brokers: --broker A,B or $%s; more patience with brokers being started: --refused-wait", EnvBrokers)
		case ue.RefusedAtOnce():
			fmt.Fprintf(&b, "\n  Every broker refused this request for good (the causes above): more tries would not help.")
		default:
			fmt.Fprintf(&b, "\n  Is a broker running there? Other brokers: --broker A,B or $%s; more patience: --retries, --try-timeout", EnvBrokers)
		}
		return b.String()
	}
	if d == nil || len(d.brokers) == 0 {
		return shownErr(err)
	}
	return shownErr(err) + fmt.Sprintf("\n  tried %s: %d tries of %s (--retries, --try-timeout) per broker, no answer."+
		"\n  Is a broker running there? (A CURVE broker does not answer a key outside its allowlist,"+
		"\n  nor a message larger than its limits.max_message_size.) Other brokers: --broker A,B or $%s",
		strings.Join(d.brokers, ", "), d.retries, d.timeout, EnvBrokers)
}

// run is Run with the environment (nil: os.Environ()).
func run(ctx context.Context, args, environ []string, stdin io.Reader, stdout, stderr io.Writer) int {
	switch {
	case len(args) > 0 && (args[0] == "--version" || args[0] == "-version" || args[0] == "-v" || args[0] == "-V"):
		args = append([]string{"version"}, args[1:]...)
	case len(args) > 1 && args[0] == "help":
		// help COMMAND: the command's own help, as git help and kubectl
		// help give.
		args = []string{args[1], "--help"}
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		if c.name == "broker" || c.name == "worker" {
			defer ignoreHUP()()
		}
		d := &dialed{}
		e := env{ctx: ctx, env: environ, args: args[1:], stdin: stdin, stdout: stdout, stderr: stderr, dialed: d}
		e.parseOnly = slices.Contains(e.environ(), parseOnlyEnv+"=1")
		err := c.run(e)
		if errors.Is(err, errParseOnly) {
			fmt.Fprintf(stderr, "titanic %s: %v\n", c.name, err)
			return exitOK
		}
		if err == nil || errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		if ctx.Err() != nil && c.name != "broker" {
			// Interrupted (Ctrl-C, SIGTERM): what the command waited for
			// is left as it was; its error is only the interrupt's.
			fmt.Fprintf(stderr, "titanic %s: interrupted\n", c.name)
			return exitInterrupted
		}
		// Errors carry text from the wire (a broker's answer, a service
		// name, a ticket field): shown, as the commands' output is.
		msg := shownErr(err)
		if errors.Is(err, client.ErrUnavailable) {
			msg = d.unavailable(err)
		}
		fmt.Fprintf(stderr, "titanic %s: %s\n", c.name, msg)
		return exitCode(err)
	}
	fmt.Fprintf(stderr, "titanic: unknown command %q\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: titanic COMMAND [flags] [args]   (titanic help COMMAND, or COMMAND --help, for its flags; titanic --version)")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nexit codes: 0 ok, 1 error, 2 usage, 3 pending, 4 unknown ticket or rejected, 5 ticket failed, 6 broker unavailable, 7 key conflict, 8 not supported by the broker yet, 129 hung up (SIGHUP), 130 interrupted")
}

// ignoreHUP keeps SIGHUP from killing a long-running process: a broker
// with CURVE reloads its allowlist on it (its own handler), and a
// `kill -HUP` meant for that, or a closed terminal, must not stop workers
// or other brokers. The returned func restores the default.
func ignoreHUP() (restore func()) {
	// A channel nobody reads: Notify drops signals it cannot deliver.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	return func() { signal.Stop(hup) }
}

// usageError marks a bad command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func exitCode(err error) int {
	var ue usageError
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, client.ErrPending):
		return exitPending
	case errors.Is(err, client.ErrKeyConflict): // before ErrRejected, which it also matches
		return exitKeyConflict
	case errors.Is(err, client.ErrUnknown), errors.Is(err, client.ErrRejected):
		return exitUnknown
	case errors.Is(err, client.ErrFailed):
		return exitFailed
	case errors.Is(err, client.ErrUnavailable):
		return exitUnavailable
	case errors.Is(err, client.ErrUnsupported):
		return exitUnsupported
	}
	return exitError
}

// newFlags returns a FlagSet whose errors come back to Run, with usage text
// naming the command.
func newFlags(e env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: titanic %s %s\n\nflags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses e.args, turning flag errors into usage errors. Flags
// may come anywhere before "--", as with git or kubectl (`reply TICKET
// --wait`, `worker SVC --timeout 10s -- CMD`); everything after "--" is an
// argument as given. The arguments are left in fs.Args().
func parseFlags(fs *flag.FlagSet, args []string) error {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return usageError{err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		// flag.Parse stops at the first argument, or consumes a "--" and
		// stops after it: from there on everything is an argument.
		if i := len(args) - len(rest); i > 0 && args[i-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	// Leave the arguments in fs.Args() for the callers; a leading "--"
	// keeps Parse from reading any of them as a flag.
	return fs.Parse(append([]string{"--"}, pos...))
}

// splitList splits a comma-separated flag value.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func runVersion(e env) error {
	fs := newFlags(e, "version", "")
	if err := e.parseFlags(fs, e.args); err != nil {
		return err
	}
	if err := e.goAhead(); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "titanic", Version)
	fmt.Fprintf(e.stdout, "%s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintln(e.stdout, "protocols and formats (what this binary speaks and reads):")
	for _, p := range protocolVersions() {
		fmt.Fprintf(e.stdout, "  %-22s %s\n", p[0], p[1])
	}
	return nil
}

// protocolVersions lists every wire and record another build may read, and
// the version this one speaks (README, "Upgrades and releases").
func protocolVersions() [][2]string {
	return [][2]string{
		{"7/MDP", mdp.ClientHeader + " (clients), " + mdp.WorkerHeader + " (workers)"},
		{"9/TSP extensions", fmt.Sprint(titanic.ExtensionsVersion)},
		{"data file format", fmt.Sprint(store.FormatVersion)},
		{"replicated ops record", fmt.Sprintf("up to %d", store.OpsRecordVersion)},
		{"pair state link", fmt.Sprintf("BSTAR%d", binarystar.WireVersion)},
		{"peering", fmt.Sprintf("TPEER%02d", broker.PeerProtocol)},
		{"notifications", fmt.Sprint(tsp.EventVersion)},
	}
}

func (e env) environ() []string {
	if e.env != nil {
		return e.env
	}
	return os.Environ()
}

// runCompletion prints a bash completion script: commands, then each
// command's flags (from its --help, so it cannot drift).
func runCompletion(e env) error {
	fs := newFlags(e, "completion", "bash|zsh   (eval \"$(titanic completion bash)\")")
	if err := e.parseFlags(fs, e.args); err != nil {
		return err
	}
	if fs.NArg() != 1 || (fs.Arg(0) != "bash" && fs.Arg(0) != "zsh") {
		return usagef("want bash or zsh")
	}
	if err := e.goAhead(); err != nil {
		return err
	}
	var names []string
	var cases strings.Builder
	for _, c := range commands() {
		names = append(names, c.name)
		var help strings.Builder
		_ = c.run(env{ctx: e.ctx, args: []string{"--help"}, stdin: strings.NewReader(""), stdout: io.Discard, stderr: &help})
		var flags []string
		for _, line := range strings.Split(help.String(), "\n") {
			if f, ok := strings.CutPrefix(strings.TrimSpace(line), "-"); ok {
				if name, _, _ := strings.Cut(f, " "); name != "" {
					flags = append(flags, "--"+name)
				}
			}
		}
		fmt.Fprintf(&cases, "    %s) opts=%q ;;\n", c.name, strings.Join(flags, " "))
	}
	if fs.Arg(0) == "zsh" {
		fmt.Fprintln(e.stdout, "autoload -U +X bashcompinit && bashcompinit")
	}
	fmt.Fprintf(e.stdout, `_titanic() {
  local cur=${COMP_WORDS[COMP_CWORD]} opts
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W %q -- "$cur")); return
  fi
  case ${COMP_WORDS[1]} in
%s    *) opts="" ;;
  esac
  if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W "$opts" -- "$cur")); else COMPREPLY=($(compgen -f -- "$cur")); fi
}
complete -F _titanic titanic
`, strings.Join(names, " "), cases.String())
	return nil
}
