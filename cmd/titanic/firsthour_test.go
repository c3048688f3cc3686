package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/cmd/titanic/config"
)

// runCLI runs the command line in process and returns its exit code,
// standard output and standard error.
func runCLI(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(ctx, args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestParseFlagsAnywhereBeforeDashDash(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		timeout time.Duration
		wait    bool
		pos     []string
	}{
		{[]string{"svc", "--timeout", "10s", "--", "cat"}, 10 * time.Second, false, []string{"svc", "cat"}},
		{[]string{"--timeout=3s", "svc", "--", "sh", "-c", "echo --wait", "--", "-x"}, 3 * time.Second, false, []string{"svc", "sh", "-c", "echo --wait", "--", "-x"}},
		{[]string{"TICKET", "--wait"}, time.Minute, true, []string{"TICKET"}},
		{[]string{"a", "-wait", "b", "-timeout", "2s", "-"}, 2 * time.Second, true, []string{"a", "b", "-"}},
		{[]string{"svc", "--", "--wait"}, time.Minute, false, []string{"svc", "--wait"}},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		timeout := fs.Duration("timeout", time.Minute, "")
		wait := fs.Bool("wait", false, "")
		if err := parseFlags(fs, tc.args); err != nil {
			t.Fatalf("parseFlags(%q): %v", tc.args, err)
		}
		if *timeout != tc.timeout || *wait != tc.wait || !slices.Equal(fs.Args(), tc.pos) {
			t.Errorf("parseFlags(%q): timeout %s wait %v args %q, want %s %v %q", tc.args, *timeout, *wait, fs.Args(), tc.timeout, tc.wait, tc.pos)
		}
	}
}

// A flag after the ticket is a flag, not a second ticket: `reply TICKET
// --wait` gets as far as the (absent) broker instead of a usage error.
func TestFlagsAfterArguments(t *testing.T) {
	dead := []string{"--broker", "tcp://127.0.0.1:1", "--timeout", "50ms", "--retries", "1"}
	ctx := context.Background()
	if code, _, stderr := runCLI(t, ctx, append([]string{"reply", "0123456789abcdef0123456789abcdef", "--wait"}, dead...)...); code != exitUnavailable {
		t.Fatalf("reply TICKET --wait ...: exit %d (stderr %q), want %d (no broker answered)", code, stderr, exitUnavailable)
	}
	if code, _, stderr := runCLI(t, ctx, append([]string{"status", "0123456789abcdef0123456789abcdef"}, dead...)...); code != exitUnavailable {
		t.Fatalf("status TICKET --broker ...: exit %d (stderr %q), want %d", code, stderr, exitUnavailable)
	}
	// A worker's command without -- gets a hint.
	if code, _, stderr := runCLI(t, ctx, "worker", "svc", "grep", "-v", "x"); code != exitUsage || !strings.Contains(stderr, "after --") {
		t.Fatalf("worker svc grep -v x: exit %d, stderr %q, want %d and a hint to use --", code, stderr, exitUsage)
	}
}

// Ctrl-C while waiting is an interrupt (exit 130), not a failed ticket.
func TestInterruptedWaitIsNotAFailure(t *testing.T) {
	// A long per-try timeout: the wait is still in its first try when
	// interrupted.
	dead := []string{"--broker", "tcp://127.0.0.1:1", "--try-timeout", "1m", "--retries", "1"}
	for _, args := range [][]string{
		{"wait", "0123456789abcdef0123456789abcdef"},
		{"reply", "--wait", "0123456789abcdef0123456789abcdef"},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(200*time.Millisecond, cancel)
		code, stdout, stderr := runCLI(t, ctx, append(args, dead...)...)
		cancel()
		if code != exitInterrupted || strings.Contains(stderr, "tickets failed") || strings.Contains(stdout, "error") {
			t.Errorf("%v interrupted: exit %d, stdout %q, stderr %q; want exit %d and no failure reported", args, code, stdout, stderr, exitInterrupted)
		}
	}
}

// --wait-timeout bounds a whole wait (exit 3: not answered yet), apart from
// the per-try timeout.
func TestWaitTimeout(t *testing.T) {
	dead := []string{"--broker", "tcp://127.0.0.1:1", "--try-timeout", "1m", "--retries", "1", "--wait-timeout", "300ms"}
	for _, args := range [][]string{
		{"wait", "0123456789abcdef0123456789abcdef"},
		{"reply", "--wait", "0123456789abcdef0123456789abcdef"},
	} {
		start := time.Now()
		code, stdout, stderr := runCLI(t, context.Background(), append(args, dead...)...)
		if el := time.Since(start); code != exitPending || el > 10*time.Second || !strings.Contains(stderr, "--wait-timeout 300ms") {
			t.Errorf("%v: exit %d after %s, stdout %q, stderr %q; want exit %d within 10s naming --wait-timeout", args, code, el, stdout, stderr, exitPending)
		}
	}
	// Commands that never wait do not offer it, nor --notify.
	for _, cmd := range []string{"status", "close", "tickets", "clients", "cluster", "backup"} {
		code, _, stderr := runCLI(t, context.Background(), cmd, "--help")
		if code != exitOK || strings.Contains(stderr, "-notify") || strings.Contains(stderr, "-wait-timeout") {
			t.Errorf("%s --help: exit %d, offers --notify or --wait-timeout:\n%s", cmd, code, stderr)
		}
	}
}

func TestVersionAndHelpCommand(t *testing.T) {
	ctx := context.Background()
	for _, arg := range []string{"--version", "-v", "version"} {
		// The first line is the version; the protocol versions follow
		// (TestVersionPrintsProtocols).
		if code, stdout, stderr := runCLI(t, ctx, arg); code != exitOK || !strings.HasPrefix(stdout, "titanic "+Version+"\n") {
			t.Errorf("titanic %s: exit %d, stdout %q, stderr %q; want the version first", arg, code, stdout, stderr)
		}
	}
	code, stdout, stderr := runCLI(t, ctx, "help", "submit")
	if code != exitOK || !strings.Contains(stdout+stderr, "usage: titanic submit") || strings.Contains(stdout, "commands:") {
		t.Errorf("titanic help submit: exit %d, stdout %q, stderr %q; want submit's help", code, stdout, stderr)
	}
	if code, _, stderr := runCLI(t, ctx, "help", "nosuch"); code != exitUsage || !strings.Contains(stderr, `unknown command "nosuch"`) {
		t.Errorf("titanic help nosuch: exit %d, stderr %q", code, stderr)
	}
}

// make build installs only what building needs: nftables and iproute2 are
// for the failover tests.
func TestMakeBuildInstallsNoTestTools(t *testing.T) {
	mk, err := exec.LookPath("make")
	if err != nil {
		t.Skip("no make")
	}
	out, err := exec.Command(mk, "-n", "-C", "../..", "build").CombinedOutput()
	if err != nil {
		t.Fatalf("make -n build: %v\n%s", err, out)
	}
	for _, tool := range []string{"nftables", "iproute2"} {
		if strings.Contains(string(out), tool) {
			t.Errorf("make build would install %s:\n%s", tool, out)
		}
	}
	if out, err := exec.Command(mk, "-n", "-C", "../..", "test-deps").CombinedOutput(); err != nil || !strings.Contains(string(out), "nftables") {
		t.Errorf("make -n test-deps: %v, want it to install nftables:\n%s", err, out)
	}
}

// Client commands take the broker list from $TITANIC_BROKERS when --broker
// is not given, and a broker in the same environment accepts it.
func TestBrokersFromEnvironment(t *testing.T) {
	e := env{env: []string{"TITANIC_BROKERS=tcp://a:1, tcp://b:2"}}
	if got := brokerList(e, ""); !slices.Equal(got, []string{"tcp://a:1", "tcp://b:2"}) {
		t.Errorf("brokerList with $TITANIC_BROKERS = %q", got)
	}
	if got := brokerList(e, "tcp://c:3"); !slices.Equal(got, []string{"tcp://c:3"}) {
		t.Errorf("brokerList with --broker = %q, want the flag's", got)
	}
	if got := brokerList(env{env: []string{}}, ""); !slices.Equal(got, []string{defaultBroker}) {
		t.Errorf("brokerList with neither = %q, want %s", got, defaultBroker)
	}
	var out, errb bytes.Buffer
	e = env{ctx: context.Background(), env: []string{"TITANIC_BROKERS=tcp://127.0.0.1:1"}, stdout: &out, stderr: &errb}
	if err := runConfig(e); err != nil {
		t.Fatalf("titanic config with $TITANIC_BROKERS set: %v (a broker would refuse to start)", err)
	}
}

// "no broker answered" names the endpoints tried, the tries and their
// timeout, and comes within 10 s on the defaults.
func TestUnavailableNamesEndpoints(t *testing.T) {
	var out, errb bytes.Buffer
	start := time.Now()
	code := run(context.Background(), []string{"status", "0123456789abcdef0123456789abcdef"}, []string{"TITANIC_BROKERS=tcp://127.0.0.1:1"}, strings.NewReader(""), &out, &errb)
	el := time.Since(start)
	msg := errb.String()
	if code != exitUnavailable || el > 10*time.Second {
		t.Fatalf("status against a dead broker: exit %d after %s, want %d within 10s", code, el, exitUnavailable)
	}
	for _, want := range []string{"tcp://127.0.0.1:1", "3 tries", "1s", "--broker", EnvBrokers} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not name %q", msg, want)
		}
	}
}

// The default HTTP listener gives way when its port is taken; one asked
// for by flag or environment does not.
func TestHTTPDefaultListener(t *testing.T) {
	for _, tc := range []struct {
		args, environ []string
		want          bool
	}{
		{nil, nil, true},
		{[]string{"--data", "d"}, []string{"TITANIC_BROKERS=x"}, true},
		{[]string{"--http-listen", "127.0.0.1:8080"}, nil, false},
		{[]string{"-http-listen=127.0.0.1:8080"}, nil, false},
		{nil, []string{"TITANIC_HTTP_LISTEN=127.0.0.1:8080"}, false},
	} {
		e := env{args: tc.args, env: append([]string{}, tc.environ...)}
		if got := httpDefault(e, config.Default()); got != tc.want {
			t.Errorf("httpDefault(args %q, env %q) = %v, want %v", tc.args, tc.environ, got, tc.want)
		}
	}
	cfg := config.Default()
	cfg.HTTP.Listen = "127.0.0.1:9999"
	if httpDefault(env{env: []string{}}, cfg) {
		t.Error("httpDefault of a listener set in the file (another address) = true")
	}
}
