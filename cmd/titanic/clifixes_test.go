package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/store"
)

// A worker of a reserved service is refused at once, before it dials: the
// broker would refuse its READY and it would reconnect forever.
func TestWorkerRefusesReservedServices(t *testing.T) {
	for _, svc := range []string{"mmi.x", "titanic.request", "titanic.x"} {
		start := time.Now()
		code, _, stderr := runCLI(t, context.Background(), "worker", "--broker", "tcp://127.0.0.1:1", svc, "--", "cat")
		if code != exitError || time.Since(start) > 5*time.Second ||
			!strings.Contains(stderr, `the "mmi." and "titanic." services are reserved`) {
			t.Errorf("worker %s -- cat: exit %d after %s, stderr %q; want %d at once naming both reserved prefixes",
				svc, code, time.Since(start), stderr, exitError)
		}
	}
}

// A submit every broker refuses for good says it failed at once, or after
// the tries it made, each refused at once: not "after 3 tries of 1s",
// which were never waited out.
func TestRefusedSubmitSaysWhatWasTried(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), "--max-message-size", "4KiB")
	dead := harness.FreeEndpoint(t)
	big := strings.Repeat("x", 64<<10)
	for _, tc := range []struct {
		brokers, want string
	}{
		{ep, "titanic.submit failed at once:\n  " + ep + ": the broker closed the connection right after this request"},
		// The live broker is asked each time, and refuses each at once.
		// (6 tries, unless the dead one has refused its connections for
		// --refused-wait by then).
		{ep + "," + dead, " tries, each refused at once:\n"},
	} {
		start := time.Now()
		// Tries of 3s: the verdict takes a cut, libzmq's 100ms reconnect,
		// a handshake and the resend's cut (under 0.6s on a quiet
		// machine, over 1s at a load average of 45), and a try that ran
		// out first would rightly be reported as waited out.
		code, _, stderr := runCLI(t, context.Background(), "submit", "--try-timeout", "3s", "--broker", tc.brokers, "echo", big)
		// Exit 4, a rejected request: no broker is unavailable, the
		// request is too large (a script retrying on 6 would retry it
		// for ever).
		if el := time.Since(start); code != exitUnknown || el > 5*time.Second ||
			!strings.Contains(stderr, tc.want) || strings.Contains(stderr, "tries of") {
			t.Errorf("submit --broker %s echo <64 KiB>: exit %d after %s, stderr %q; want %d saying %q", tc.brokers, code, el, stderr, exitUnknown, tc.want)
		}
	}
}

// close refuses a malformed ticket as reply does (exit 4, the same
// words), before asking a broker (which would answer a close of any
// string with success); a well-formed unknown ticket closes (9/TSP: close
// is idempotent). wait counts an unknown ticket as unknown, not failed,
// and exits 4.
func TestCloseAndWaitOfUnknownTickets(t *testing.T) {
	ctx := context.Background()
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir())
	br := []string{"--broker", ep}
	for _, tk := range []string{"garbage", "0123456789abcdef0123456789abcdeg"} {
		_, _, replyErr := runCLI(t, ctx, append([]string{"reply", tk}, br...)...)
		code, stdout, stderr := runCLI(t, ctx, append([]string{"close", tk}, br...)...)
		if code != exitUnknown || stdout != "" || !strings.Contains(stderr, "malformed ticket id") ||
			strings.TrimPrefix(stderr, "titanic close: ") != strings.TrimPrefix(replyErr, "titanic reply: ") {
			t.Errorf("close %s: exit %d, stdout %q, stderr %q; want %d and reply's words %q", tk, code, stdout, stderr, exitUnknown, replyErr)
		}
	}
	for _, tk := range []string{"0123456789abcdef0123456789abcdef", "01234567-89ab-cdef-0123-456789abcdef"} {
		if code, stdout, stderr := runCLI(t, ctx, append([]string{"close", tk}, br...)...); code != exitOK || stdout+stderr != "" {
			t.Errorf("close %s (well-formed, unknown): exit %d, stdout %q, stderr %q; want success", tk, code, stdout, stderr)
		}
	}
	const unknown = "0123456789abcdef0123456789abcdef"
	code, stdout, stderr := runCLI(t, ctx, append([]string{"wait", unknown}, br...)...)
	if code != exitUnknown || stdout != unknown+"\tunknown\n" ||
		!strings.Contains(stderr, "1/1 ended, 0 answered, 0 failed, 1 unknown") || !strings.Contains(stderr, "1 of 1 tickets unknown") {
		t.Errorf("wait %s: exit %d, stdout %q, stderr %q; want %d, unknown counted as unknown", unknown, code, stdout, stderr, exitUnknown)
	}
}

// A broker on a data directory another process holds says so once, with
// titanic check's hint.
func TestBrokerOnLockedStore(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "titanic.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	code, _, stderr := binCLI(t, "broker", "--data", dir, "--listen", harness.FreeEndpoint(t), "--http-listen", "", "--lock-timeout", "100ms")
	if code != exitError || strings.Count(stderr, "open store") != 1 ||
		!strings.Contains(stderr, "titanic.db: locked by another process") || !strings.Contains(stderr, "is a broker running on it?") {
		t.Errorf("broker on a locked store: exit %d, stderr %q; want %d, one \"open store\", and the hint", code, stderr, exitError)
	}
}

// An HTTP submit the broker refuses says "bad request" once.
func TestHTTPBadRequestSaidOnce(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	addr := strings.TrimPrefix(harness.FreeEndpoint(t), "tcp://")
	harness.Broker(t, "broker", ep, t.TempDir(), "--http-listen", addr)
	resp, err := http.Post("http://"+addr+"/api/v1/tickets", "application/json", strings.NewReader(`{"service": "mmi.service", "body": "x"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct{ Error string }
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(e.Error, "submit: bad request: service ") || strings.Count(e.Error, "bad request") != 1 {
		t.Errorf("HTTP submit to mmi.service: %d %q; want 400 saying \"bad request\" once", resp.StatusCode, e.Error)
	}
}

// A worker whose command cannot be run stops at start, naming it; a
// failed run with nothing on stderr ends its error without a separator.
func TestWorkerCommandErrors(t *testing.T) {
	for _, tc := range []struct{ cmd, want string }{
		{"/nonexistent/prog", `command "/nonexistent/prog": no such file or directory`},
		{"no-such-titanic-test-prog", `command "no-such-titanic-test-prog": executable file not found in $PATH`},
	} {
		code, _, stderr := runCLI(t, context.Background(), "worker", "--broker", "tcp://127.0.0.1:1", "svc", "--", tc.cmd)
		if code != exitError || strings.TrimSpace(stderr) != "titanic worker: "+tc.want {
			t.Errorf("worker svc -- %s: exit %d, stderr %q; want %d and %q", tc.cmd, code, stderr, exitError, tc.want)
		}
	}
	ctx := context.Background()
	for _, tc := range []struct {
		cmdline []string
		want    string
	}{
		{[]string{"/nonexistent/prog"}, "fork/exec /nonexistent/prog: no such file or directory"},
		{[]string{"sh", "-c", "exit 3"}, "exit status 3"},
		{[]string{"sh", "-c", "echo oops >&2; exit 1"}, "exit status 1: oops"},
		{[]string{"sh", "-c", "exec sleep 5"}, "timed out after 100ms"},
	} {
		_, err := runCommand(ctx, 100*time.Millisecond, -1, tc.cmdline, nil)
		if err == nil || err.Error() != tc.want {
			t.Errorf("runCommand %q: %v, want %q", tc.cmdline, err, tc.want)
		}
	}
}

// tickets --limit out of 1 to 1000 is a usage error, as the HTTP API's
// limit= is a 400, not a silent default.
func TestTicketsLimitRange(t *testing.T) {
	for _, l := range []string{"-1", "0", "1001"} {
		code, _, stderr := runCLI(t, context.Background(), "tickets", "--broker", "tcp://127.0.0.1:1", "--limit", l)
		if code != exitUsage || !strings.Contains(stderr, "--limit "+l+": want 1 to 1000") {
			t.Errorf("tickets --limit %s: exit %d, stderr %q; want %d", l, code, stderr, exitUsage)
		}
	}
}

// A token file without a token stops the broker at start: it would have
// left the API open to all (a non-loopback listener too).
func TestBrokerRefusesEmptyTokenFile(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"empty": "", "blank": " \n\t\n", "two words": "abc def\n"} {
		tf := filepath.Join(dir, "token")
		if err := os.WriteFile(tf, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		addr := strings.TrimPrefix(harness.FreeEndpoint(t), "tcp://")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, harness.Binary(t), "broker", "--data", t.TempDir(), "--listen", harness.FreeEndpoint(t),
			"--http-listen", addr, "--http-token-file", tf)
		cmd.Stderr = &stderr
		err := cmd.Run()
		running := ctx.Err() != nil
		cancel()
		if running || err == nil || !strings.Contains(stderr.String(), "http.token_file "+tf) {
			t.Errorf("%s token file: %v (still running after 10 s: %v), stderr %q; want a refusal naming the file", name, err, running, stderr.String())
		}
	}
}
