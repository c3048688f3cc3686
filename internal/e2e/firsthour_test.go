package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/titanicmq/titanic/internal/harness"
)

// Issue 12, a new user's first hour: each trap through the built binary.

// Flags after the service name are flags, not the worker's command; flags
// after a ticket are flags too.
func TestFirstHourFlagsAnywhere(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), fastBroker...)
	harness.Start(t, "worker", "worker running", "worker", "upper", "--broker", ep, "--timeout", "10s", "--heartbeat", "200ms", "--", "tr", "a-z", "A-Z")
	out, code := cli(t, "", "submit", "upper", "abc", "--broker", ep)
	ticket := strings.TrimSpace(out)
	if code != 0 || len(ticket) != 32 {
		t.Fatalf("submit SERVICE BODY --broker EP: %q exit %d, want a ticket", out, code)
	}
	if out, code := cli(t, "", "reply", ticket, "--wait", "--broker", ep); code != 0 || out != "ABC" {
		t.Fatalf("reply TICKET --wait --broker EP: %q exit %d, want ABC (the worker ran tr, not --timeout)", out, code)
	}
}

// Ctrl-C during wait and reply --wait leaves the ticket pending, reports
// no failure and exits 130; --wait-timeout ends a wait with exit 3.
func TestFirstHourInterruptAndWaitTimeout(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	br := harness.Broker(t, "broker", ep, t.TempDir(), fastBroker...)
	out, code := cli(t, "", "submit", "--broker", ep, "nobody", "x")
	ticket := strings.TrimSpace(out)
	if code != 0 || len(ticket) != 32 {
		t.Fatalf("submit: %q exit %d", out, code)
	}
	for _, args := range [][]string{{"wait", ticket}, {"reply", "--wait", ticket}, {"wait", "--notify", "tcp://127.0.0.1:1", ticket}} {
		cmd := exec.Command(harness.Binary(t), append(args, "--broker", ep)...)
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Any moment after start-up will do (nothing to wait for: reply
		// prints nothing while it waits); a second is well past the
		// installing of the signal handler and the first lookup.
		time.Sleep(time.Second)
		_ = cmd.Process.Signal(syscall.SIGINT)
		var errText strings.Builder
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			errText.WriteString(sc.Text() + "\n")
		}
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 {
			t.Fatalf("%v interrupted: %v, want exit 130; stderr:\n%s", args, err, errText.String())
		}
		if strings.Contains(errText.String(), "tickets failed") || strings.Contains(stdout.String(), "error") {
			t.Fatalf("%v interrupted reports a failure: stdout %q stderr %q", args, stdout.String(), errText.String())
		}
	}
	if out, code := cli(t, "", "status", "--broker", ep, ticket); code != 0 || !strings.Contains(out, "state:    pending") {
		t.Fatalf("status after the interrupts: %q exit %d, want pending\n%s", out, code, br.Tail())
	}
	start := time.Now()
	out, code = cli(t, "", "wait", "--broker", ep, "--wait-timeout", "1s", ticket)
	if el := time.Since(start); code != 3 || el > 8*time.Second || out != ticket+"\tpending\n" {
		t.Fatalf("wait --wait-timeout 1s: %q exit %d after %s, want %s pending, exit 3", out, code, el, ticket)
	}
	if _, code := cli(t, "", "submit", "--broker", ep, "--wait", "--wait-timeout", "1s", "nobody", "y"); code != 3 {
		t.Fatalf("submit --wait --wait-timeout 1s: exit %d, want 3", code)
	}
}

// SIGHUP (a closed terminal, or a `kill -HUP` meant for a CURVE broker's
// reload) stops neither a worker nor a broker without --curve.
func TestFirstHourSIGHUPIgnored(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	br := harness.Broker(t, "broker", ep, t.TempDir(), fastBroker...)
	w := harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "--heartbeat", "200ms", "upper", "--", "tr", "a-z", "A-Z")
	br.Signal(syscall.SIGHUP)
	w.Signal(syscall.SIGHUP)
	// Both must still serve: the reply needs the broker and the worker.
	if out, code := cli(t, "", "submit", "--broker", ep, "--wait", "--wait-timeout", "20s", "upper", "hup"); code != 0 || out != "HUP" {
		t.Fatalf("submit --wait after SIGHUP: %q exit %d, want HUP\nbroker:\n%s\nworker:\n%s", out, code, br.Tail(), w.Tail())
	}
	if br.Exited() || w.Exited() {
		t.Fatalf("exited after SIGHUP: broker %v, worker %v", br.Exited(), w.Exited())
	}
}

// $TITANIC_BROKERS is the broker list of client commands and workers that
// are given no --broker; a broker started in the same environment accepts
// it (it refuses unknown TITANIC_BROKER_* settings).
func TestFirstHourBrokersFromEnvironment(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	t.Setenv("TITANIC_BROKERS", ep)
	harness.Broker(t, "broker", ep, t.TempDir(), fastBroker...)
	harness.Start(t, "worker", "worker running", "worker", "--heartbeat", "200ms", "upper", "--", "tr", "a-z", "A-Z")
	if out, code := cli(t, "", "submit", "--wait", "--wait-timeout", "20s", "upper", "env"); code != 0 || out != "ENV" {
		t.Fatalf("submit --wait with $TITANIC_BROKERS: %q exit %d, want ENV", out, code)
	}
	// A dead one is named in the error.
	dead := harness.FreeEndpoint(t)
	cmd := exec.Command(harness.Binary(t), "status", "0123456789abcdef0123456789abcdef")
	cmd.Env = append(cmd.Environ(), "TITANIC_BROKERS="+dead)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 6 || !strings.Contains(string(out), dead) {
		t.Fatalf("status against a dead $TITANIC_BROKERS: %v, %q; want exit 6 naming %s", err, out, dead)
	}
}

// A plain `titanic broker` starts although port 8080 is taken, warning that
// it has no HTTP listener; a listener asked for on a taken port stops it.
func TestFirstHourHTTPPortTaken(t *testing.T) {
	// Take the default port unless something else already has it: either
	// way it is taken.
	if ln, err := net.Listen("tcp", "127.0.0.1:8080"); err == nil {
		defer ln.Close()
	}
	ep := harness.FreeEndpoint(t)
	br := harness.Start(t, "broker", "broker ready", "broker", "--listen", ep, "--data", t.TempDir())
	if !strings.Contains(br.Tail(), "port is taken") {
		t.Fatalf("broker with port 8080 taken: no warning\n%s", br.Tail())
	}
	if out, code := cli(t, "", "submit", "--broker", ep, "svc", "x"); code != 0 || len(strings.TrimSpace(out)) != 32 {
		t.Fatalf("submit to the broker without its HTTP listener: %q exit %d", out, code)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	out, code := runBroker(t, nil, "--listen", harness.FreeEndpoint(t), "--data", t.TempDir(), "--http-listen", ln.Addr().String())
	if code == 0 || !strings.Contains(out, ln.Addr().String()) || !strings.Contains(out, "address already in use") {
		t.Fatalf("broker --http-listen on a taken port: exit %d, %s; want it to stop naming the address", code, out)
	}
}

// submit --wait for a service nobody serves says so within a few seconds
// (8/MMI), and is quiet for a served one.
func TestFirstHourNoWorkerWarning(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), fastBroker...)
	cmd := exec.Command(harness.Binary(t), "submit", "--wait", "--wait-timeout", "3s", "--broker", ep, "nobody-serves-this", "x")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	_ = cmd.Run()
	if !strings.Contains(stderr.String(), `no worker serves "nobody-serves-this"`) {
		t.Fatalf("submit --wait for an unserved service, after %s: stderr %q, want a warning", time.Since(start), stderr.String())
	}
	harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "--heartbeat", "200ms", "upper", "--", "tr", "a-z", "A-Z")
	// "worker running" comes before its registration: one answered request
	// shows the broker knows it.
	if out, code := cli(t, "", "submit", "--wait", "--wait-timeout", "20s", "--broker", ep, "upper", "warm"); code != 0 || out != "WARM" {
		t.Fatalf("submit --wait upper: %q exit %d", out, code)
	}
	cmd = exec.Command(harness.Binary(t), "submit", "--wait", "--wait-timeout", "20s", "--broker", ep, "upper", "x")
	stderr.Reset()
	cmd.Stderr = &stderr
	if out, err := cmd.Output(); err != nil || string(out) != "X" || strings.Contains(stderr.String(), "warning") {
		t.Fatalf("submit --wait for a served service: %q %v, stderr %q; want X and no warning", out, err, stderr.String())
	}
}

// cliErr runs the binary with stdin and returns its stdout, stderr and
// exit code.
func cliErr(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(harness.Binary(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return out.String(), errb.String(), 0
}

// Item 7: start-up lines are printed once; status --body shows the
// request body (text as it is, binary named); clients says what it lists
// and shows a waiting command.
func TestFirstHourBodyClientsAndLogs(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	addr := harness.FreeAddr(t)
	br := harness.Broker(t, "broker", ep, t.TempDir(), "--http-listen", addr, "--heartbeat", "200ms")
	// "broker ready" comes after the HTTP listener's line: both are in.
	for _, line := range []string{"broker ready", "http listening"} {
		if n := strings.Count(br.Tail(), line); n != 1 {
			t.Errorf("start-up line %q printed %d times, want once:\n%s", line, n, br.Tail())
		}
	}

	out, code := cli(t, "", "submit", "--broker", ep, "nobody", "hello body")
	text := strings.TrimSpace(out)
	if code != 0 {
		t.Fatalf("submit: exit %d", code)
	}
	out, code = cli(t, "", "status", text, "--body", "--broker", ep)
	if code != 0 || !strings.Contains(out, "body:     10 bytes\nhello body\n") || !strings.Contains(out, "state:    pending") {
		t.Fatalf("status --body of a text body: exit %d\n%s", code, out)
	}
	if out, _ := cli(t, "", "status", text, "--broker", ep); strings.Contains(out, "body:") {
		t.Fatalf("status without --body shows the body:\n%s", out)
	}
	out, code = cli(t, "\x00\x01\xfe\x1b[2J", "submit", "--broker", ep, "nobody", "-")
	bin := strings.TrimSpace(out)
	if code != 0 {
		t.Fatalf("submit - (binary): exit %d", code)
	}
	out, code = cli(t, "", "status", "--body", bin, "--broker", ep)
	if code != 0 || !strings.Contains(out, "body:     7 bytes\n(binary, not shown") || strings.Contains(out, "\x1b") {
		t.Fatalf("status --body of a binary body: exit %d\n%q", code, out)
	}

	stdout, stderr, code := cliErr(t, "", "clients", "--broker", ep)
	if code != 0 || stdout != "" || !strings.Contains(stderr, "no client present") || !strings.Contains(stderr, "--wait") {
		t.Fatalf("clients with none present: exit %d, stdout %q, stderr %q; want a note saying what is listed", code, stdout, stderr)
	}
	waiter := exec.Command(harness.Binary(t), "reply", "--wait", text, "--broker", ep)
	if err := waiter.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = waiter.Process.Kill(); _ = waiter.Wait() }()
	want := "titanic-reply@"
	deadline := time.Now().Add(10 * time.Second)
	for {
		stdout, _, _ = cliErr(t, "", "clients", "--broker", ep)
		if strings.Contains(stdout, want) && strings.Contains(stdout, "/"+strconv.Itoa(waiter.Process.Pid)+"\t") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("clients while reply --wait waits: %q, want %s...%d listed", stdout, want, waiter.Process.Pid)
		}
		time.Sleep(50 * time.Millisecond) // polling a listing: no event to wait for
	}
}

// Item 7: submit with no body on a terminal says it reads standard input.
func TestFirstHourSubmitStdinTerminalHint(t *testing.T) {
	master, tty := openPTY(t)
	defer master.Close()
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), fastBroker...)
	cmd := exec.Command(harness.Binary(t), "submit", "--broker", ep, "nobody")
	cmd.Stdin = tty
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close() // the child has its copy
	// Echoed input comes back on the master: drain it.
	go func() { _, _ = io.Copy(io.Discard, master) }()
	hint := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stderr).ReadString('\n')
		hint <- line
		_, _ = io.Copy(io.Discard, stderr)
	}()
	select {
	case line := <-hint:
		if !strings.Contains(line, "reading the request body from standard input") || !strings.Contains(line, "Ctrl-D") {
			t.Fatalf("submit on a terminal: first stderr line %q, want the stdin hint", line)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("submit on a terminal printed no hint within 10s")
	}
	// Type a body and end it as the hint says.
	if _, err := master.Write([]byte("typed body\n\x04")); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("submit after Ctrl-D: %v", err)
	}
	ticket := strings.TrimSpace(stdout.String())
	if out, code := cli(t, "", "status", "--body", ticket, "--broker", ep); code != 0 || !strings.Contains(out, "typed body\n") {
		t.Fatalf("status --body of the typed body: exit %d\n%s", code, out)
	}
	// Not on a terminal: no hint (scripts piping a body see nothing new).
	if _, stderr, code := cliErr(t, "piped", "submit", "--broker", ep, "nobody"); code != 0 || stderr != "" {
		t.Fatalf("submit with piped stdin: exit %d, stderr %q, want none", code, stderr)
	}
}

// openPTY opens a pseudo-terminal pair: the master, and the terminal a
// child reads as its standard input.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		m.Close()
		t.Skipf("unlock pty: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		m.Close()
		t.Skipf("pty number: %v", e)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.FormatUint(uint64(n), 10), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("open pty: %v", err)
	}
	return m, s
}

// Item 9: --json on the commands that print results, one object per line.
func TestFirstHourJSONOutput(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), fastBroker...)
	harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "--heartbeat", "200ms", "upper", "--", "tr", "a-z", "A-Z")
	decode := func(what, out string, v any) {
		t.Helper()
		if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
			t.Fatalf("%s --json: %q, want one line", what, out)
		}
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("%s --json: %q: %v", what, out, err)
		}
	}
	out, code := cli(t, "", "submit", "--json", "--broker", ep, "upper", "json body")
	var sub struct{ ID string }
	if decode("submit", out, &sub); code != 0 || len(sub.ID) != 32 {
		t.Fatalf("submit --json: %q exit %d", out, code)
	}
	out, code = cli(t, "", "reply", "--wait", "--json", "--wait-timeout", "20s", sub.ID, "--broker", ep)
	var rep struct {
		ID, State string
		Reply     [][]byte
		ReplyText *string `json:"reply_text"`
	}
	if decode("reply", out, &rep); code != 0 || rep.ID != sub.ID || rep.State != "done" || len(rep.Reply) != 1 || string(rep.Reply[0]) != "JSON BODY" || rep.ReplyText == nil || *rep.ReplyText != "JSON BODY" {
		t.Fatalf("reply --wait --json: %q exit %d", out, code)
	}
	out, code = cli(t, "", "status", "--json", "--body", sub.ID, "--broker", ep)
	var st struct {
		ID, Service, State string
		Attempts           int
		Created            time.Time
		Body               [][]byte
	}
	if decode("status", out, &st); code != 0 || st.ID != sub.ID || st.Service != "upper" || st.State != "done" || st.Attempts != 1 || st.Created.IsZero() || len(st.Body) != 1 || string(st.Body[0]) != "json body" {
		t.Fatalf("status --json --body: %q exit %d", out, code)
	}
	out, code = cli(t, "\xff\x00", "submit", "--wait", "--json", "--wait-timeout", "20s", "--broker", ep, "upper", "-")
	var binRep struct {
		Reply     [][]byte
		ReplyText *string `json:"reply_text"`
	}
	if decode("submit --wait", out, &binRep); code != 0 || len(binRep.Reply) != 1 || string(binRep.Reply[0]) != "\xff\x00" || binRep.ReplyText != nil {
		t.Fatalf("submit --wait --json of a binary reply: %q exit %d, want base64 frames and no reply_text", out, code)
	}
	out, code = cli(t, "", "tickets", "--json", "--limit", "1", "--broker", ep)
	var page struct {
		Tickets []struct {
			ID, Service, State string
			Attempts           int
		}
		Next string
	}
	if decode("tickets", out, &page); code != 0 || len(page.Tickets) != 1 || page.Tickets[0].ID != sub.ID || page.Next != sub.ID {
		t.Fatalf("tickets --json --limit 1: %q exit %d, want the first ticket and next = it", out, code)
	}
	out, code = cli(t, "", "cluster", "--json", "--broker", ep)
	var cl struct {
		Nodes []struct {
			Endpoint        string
			Reached, Single bool
		}
	}
	if decode("cluster", out, &cl); code != 0 || len(cl.Nodes) != 1 || !cl.Nodes[0].Reached || !cl.Nodes[0].Single || cl.Nodes[0].Endpoint != ep {
		t.Fatalf("cluster --json against a single broker: %q exit %d", out, code)
	}
	out, code = cli(t, "", "clients", "--json", "--broker", ep)
	var cs struct{ Clients []any }
	if decode("clients", out, &cs); code != 0 || cs.Clients == nil {
		t.Fatalf("clients --json: %q exit %d, want a (possibly empty) list", out, code)
	}
	out, code = cli(t, "", "wait", "--json", sub.ID, "--broker", ep)
	var w struct{ ID, State string }
	if decode("wait", out, &w); code != 0 || w.ID != sub.ID || w.State != "done" {
		t.Fatalf("wait --json: %q exit %d", out, code)
	}
}

// Item 9: POST /api/v1/tickets submits over HTTP with TSP's guarantees;
// only as JSON (no cross-site form or simple CORS request) and with the
// token.
func TestFirstHourHTTPSubmit(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	addr := harness.FreeAddr(t)
	harness.Broker(t, "broker", ep, t.TempDir(), append([]string{"--http-listen", addr, "--http-token", "s3cret", "--max-body", "100"}, fastBroker...)...)
	post := func(ctype, token, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+addr+"/api/v1/tickets", strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("POST: %v", err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	const good = `{"service": "upper", "body": "over http", "key": "k1"}`
	// What a cross-site page can send without a preflight: refused.
	for _, ctype := range []string{"application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", ""} {
		if code, body := post(ctype, "s3cret", good); code != http.StatusUnsupportedMediaType {
			t.Errorf("POST as %q: %d %s, want 415", ctype, code, body)
		}
	}
	if code, body := post("application/json", "", good); code != http.StatusUnauthorized {
		t.Errorf("POST without the token: %d %s, want 401", code, body)
	}
	code, body := post("application/json", "s3cret", good)
	var got struct {
		ID        string
		Duplicate bool
	}
	if code != http.StatusCreated || json.Unmarshal([]byte(body), &got) != nil || len(got.ID) != 32 || got.Duplicate {
		t.Fatalf("POST submit: %d %s, want 201 and a new ticket", code, body)
	}
	// The ticket is durable and the same as a TSP one: the CLI sees it.
	if out, code := cli(t, "", "status", "--body", got.ID, "--broker", ep); code != 0 || !strings.Contains(out, "service:  upper") || !strings.Contains(out, "over http\n") {
		t.Fatalf("status --body of the HTTP ticket: exit %d\n%s", code, out)
	}
	code, body = post("application/json; charset=utf-8", "s3cret", good)
	var again struct {
		ID        string
		Duplicate bool
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &again) != nil || again.ID != got.ID || !again.Duplicate {
		t.Fatalf("POST with the same key: %d %s, want 200, the same ticket, duplicate", code, body)
	}
	// The same limits: --max-body 100 and internal services.
	for _, bad := range []string{
		`{"service": "upper", "body": "` + strings.Repeat("x", 101) + `"}`,
		`{"service": "titanic.close", "body": "x"}`,
		`{"service": "upper"}`,
		`{"service": "upper", "body": "x", "frames": ["eA=="]}`,
	} {
		if code, body := post("application/json", "s3cret", bad); code != http.StatusBadRequest {
			t.Errorf("POST %s: %d %s, want 400", bad, code, body)
		}
	}
	code, body = post("application/json", "s3cret", `{"service": "upper", "body_base64": "AP8="}`)
	if code != http.StatusCreated || json.Unmarshal([]byte(body), &got) != nil {
		t.Fatalf("POST body_base64: %d %s", code, body)
	}
	if out, code := cli(t, "", "status", "--json", "--body", got.ID, "--broker", ep); code != 0 || !strings.Contains(out, `"body":["AP8="]`) {
		t.Fatalf("status of the base64 HTTP ticket: exit %d %s", code, out)
	}
}

// Item 11: a new pair's primary started alone says, in its log and to
// clients, that it waits for its peer to be in sync once; once the backup
// runs, the pair serves.
func TestFirstHourLonePrimarySaysWhy(t *testing.T) {
	nodes := pairLayout(t)
	primary, backup := nodes[0], nodes[1]
	pr := harness.Broker(t, "primary", primary.ep, primary.dir, primary.args...)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(pr.Tail(), "not serving until this node has been in sync with its peer once") {
		if time.Now().After(deadline) {
			t.Fatalf("lone primary: no log line saying it waits for its peer\n%s", pr.Tail())
		}
		time.Sleep(20 * time.Millisecond) // polling a log file: no event to wait for
	}
	for _, eps := range []string{primary.ep, primary.ep + "," + backup.ep} {
		stdout, stderr, code := cliErr(t, "", "submit", "--broker", eps, "svc", "x")
		if code != 6 || stdout != "" || !strings.Contains(stderr, "not active: waiting for the peer backup at "+backup.ep) || !strings.Contains(stderr, "start both nodes") {
			t.Fatalf("submit --broker %s to a lone new primary: exit %d, stdout %q, stderr:\n%s\nwant exit 6 saying it waits for the backup", eps, code, stdout, stderr)
		}
	}
	harness.Broker(t, "backup", backup.ep, backup.dir, backup.args...)
	out, code := cli(t, "", "submit", "--broker", primary.ep+","+backup.ep, "--try-timeout", "2s", "--retries", "5", "svc", "x")
	if code != 0 || len(strings.TrimSpace(out)) != 32 {
		t.Fatalf("submit once both nodes run: %q exit %d\nprimary:\n%s", out, code, pr.Tail())
	}
}
