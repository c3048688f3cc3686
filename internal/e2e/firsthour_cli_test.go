package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

// A paused service (titanic pause) takes submits and dispatches nothing:
// `titanic submit --wait` warns at once that it is paused, as it warns when
// no worker serves the service (else the wait, unbounded by default, never
// ends with a worker idle), and `titanic stats` shows the pause: a PAUSED
// column, and "paused" in --json.
func TestSubmitWaitToPausedServiceSaysSo(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir())
	harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "upper", "--", "tr", "a-z", "A-Z")
	if _, code := cli(t, "", "pause", "--broker", ep, "upper"); code != 0 {
		t.Fatalf("pause: exit %d", code)
	}
	_, stderr, code := cliStderr(t, "", "submit", "--broker", ep, "--wait", "--wait-timeout", "3s", "upper", "x")
	if code != 3 {
		t.Fatalf("submit --wait to a paused service: exit %d, want 3 (still pending)", code)
	}
	if !strings.Contains(stderr, `service "upper" is paused`) || !strings.Contains(stderr, "titanic resume upper") {
		t.Errorf("submit --wait to a paused service (a worker idle): stderr %q; want a warning that the service is paused (titanic resume)", strings.TrimSpace(stderr))
	}
	out, code := cli(t, "", "stats", "--broker", ep, "--json")
	if code != 0 {
		t.Fatalf("stats --json: exit %d", code)
	}
	var st struct {
		Services []struct {
			Service string
			Paused  bool
		}
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("stats --json: %v\n%s", err, out)
	}
	if len(st.Services) != 1 || st.Services[0].Service != "upper" || !st.Services[0].Paused {
		t.Errorf("stats --json with upper paused: %+v; want upper with paused true", st.Services)
	}
	table, _ := cli(t, "", "stats", "--broker", ep)
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 2 || !strings.HasSuffix(strings.TrimSpace(lines[0]), "PAUSED") || !strings.HasSuffix(strings.TrimSpace(lines[1]), "yes") {
		t.Errorf("stats with upper paused:\n%s\nwant a PAUSED column saying yes", table)
	}
	if _, code := cli(t, "", "resume", "--broker", ep, "upper"); code != 0 {
		t.Fatalf("resume: exit %d", code)
	}
	if out, _ := cli(t, "", "stats", "--broker", ep, "--json"); !strings.Contains(out, `"paused": false`) {
		t.Errorf("stats --json after resume: %s; want paused false", out)
	}
}

// When --wait-timeout runs out, `titanic wait` prints TICKET<TAB>pending
// (--json: one object) for every ticket not answered, those never handed
// to one of its --parallel waiters too: a script reading the output to
// learn which tickets are still pending must see them all.
func TestWaitTimeoutPrintsEveryTicket(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir())
	var tickets []string
	for range 4 {
		out, code := cli(t, "", "submit", "--broker", ep, "nobody", "x")
		if code != 0 {
			t.Fatalf("submit: exit %d", code)
		}
		tickets = append(tickets, strings.TrimSpace(out))
	}
	args := append([]string{"wait", "--broker", ep, "--parallel", "1", "--wait-timeout", "1s"}, tickets...)
	out, code := cli(t, "", args...)
	if code != 3 {
		t.Fatalf("wait: exit %d, want 3 (pending)", code)
	}
	for _, tk := range tickets {
		if strings.Count(out, tk+"\tpending\n") != 1 {
			t.Errorf("wait --parallel 1 --wait-timeout 1s of 4 pending tickets: not one line %s<TAB>pending; stdout:\n%s", tk, out)
		}
	}
	out, code = cli(t, "", append(args, "--json")...)
	if code != 3 {
		t.Fatalf("wait --json: exit %d, want 3 (pending)", code)
	}
	seen := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var row struct{ ID, State string }
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatalf("wait --json: line %q: %v", line, err)
		}
		seen[row.ID] = row.State
	}
	for _, tk := range tickets {
		if seen[tk] != "pending" {
			t.Errorf("wait --json --parallel 1 --wait-timeout 1s: %s has state %q, want pending; stdout:\n%s", tk, seen[tk], out)
		}
	}
}

// GET /api/v1/tickets/{id}/attempts of a ticket never submitted answers
// 404 unknown ticket, as every ticket endpoint does (README, HTTP), and as
// `status --attempts` exits 4: not 200 {"attempts": []}, which reads as a
// ticket with no failed attempt. A known ticket without one still gets 200
// and an empty list.
func TestHTTPAttemptsOfUnknownTicketIs404(t *testing.T) {
	ep, addr := harness.FreeEndpoint(t), harness.FreeAddr(t)
	harness.Broker(t, "broker", ep, t.TempDir(), "--http-listen", addr)
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	const unknown = "0123456789abcdef0123456789abcdef"
	for _, path := range []string{"/api/v1/tickets/" + unknown, "/api/v1/tickets/" + unknown + "/attempts"} {
		if code, body := get(path); code != http.StatusNotFound || !strings.Contains(body, "unknown ticket") {
			t.Errorf("GET %s (never submitted): %d %s; want 404 unknown ticket", path, code, body)
		}
	}
	if _, code := cli(t, "", "status", "--attempts", "--broker", ep, unknown); code != 4 {
		t.Errorf("status --attempts of an unknown ticket: exit %d, want 4", code)
	}
	out, code := cli(t, "", "submit", "--broker", ep, "nobody", "x")
	if code != 0 {
		t.Fatalf("submit: exit %d", code)
	}
	known := strings.TrimSpace(out)
	if code, body := get("/api/v1/tickets/" + known + "/attempts"); code != http.StatusOK || !strings.Contains(body, `"attempts":[]`) {
		t.Errorf("GET attempts of a pending ticket with none: %d %s; want 200 and an empty list", code, body)
	}
}

// `titanic worker` reports the tail of a failed command's stderr and keeps
// no more of it: a job that logs verbosely to stderr (here 300 MB) does not
// grow the worker by all of it, to be killed by OOM with every job it runs.
// Its stdout, the reply, is capped by --max-output: a command writing on
// without end is killed and its attempt fails saying why.
func TestWorkerKeepsOnlyStderrTail(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir())
	w := harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "noisy", "--",
		"sh", "-c", "head -c 300000000 /dev/zero | tr '\\0' x >&2; echo last words >&2; exit 1")
	_, stderr, code := cliStderr(t, "", "submit", "--broker", ep, "--attempts", "1", "--wait", "--wait-timeout", "60s", "noisy", "x")
	if code != 5 || !strings.Contains(stderr, "xxxlast words") {
		t.Fatalf("submit --wait: exit %d, stderr %q; want 5 with the stderr tail", code, stderr)
	}
	hwm, err := harness.ProcStatus(w.PID(), "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	if hwm > 100<<20 {
		t.Errorf("worker peak RSS %d MB after one job that wrote 300 MB to stderr, of which 512 bytes are reported; want it bounded (< 100 MB)", hwm>>20)
	}
	harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "--max-output", "1MiB", "endless", "--", "yes")
	_, stderr, code = cliStderr(t, "", "submit", "--broker", ep, "--attempts", "1", "--wait", "--wait-timeout", "60s", "endless", "x")
	if code != 5 || !strings.Contains(stderr, "over --max-output 1MiB") {
		t.Errorf("submit --wait to a command writing on without end (worker --max-output 1MiB): exit %d, stderr %q; want 5 naming --max-output", code, stderr)
	}
}

// `titanic submit --from - SERVICE` submits each line as it arrives: fed by
// a producer that runs on (tail -f log | titanic submit --from - svc), a
// line is acknowledged (TICKET<TAB>1) while the input is still open, not
// after EOF; and a line over the limit fails alone, named by its number,
// the lines around it submitted.
func TestSubmitFromStdinSubmitsAsLinesArrive(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir())
	cmd := exec.Command(harness.Binary(t), "submit", "--from", "-", "--broker", ep, "lines")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	got := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		got <- line
	}()
	if _, err := io.WriteString(stdin, "first\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case line := <-got:
		if !strings.HasSuffix(line, "\t1\n") {
			t.Fatalf("first output line %q, want TICKET<TAB>1", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("submit --from -: a line written to its standard input (kept open, as a producer's pipe) was not acknowledged within 10s")
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Errorf("submit --from - after its input closed: %v, want exit 0", err)
	}

	long := strings.Repeat("x", 16<<20+1)
	out, stderr, code := cliStderr(t, "one\n"+long+"\nthree\n", "submit", "--from", "-", "--broker", ep, "lines")
	if code != 1 || !strings.Contains(stderr, "line 2: line too long") || !strings.Contains(stderr, "2 submitted, 1 failed") {
		t.Errorf("submit --from - with line 2 over 16MiB: exit %d, stderr %.300q; want 1, line 2 named too long, the others submitted", code, stderr)
	}
	if !strings.HasSuffix(strings.SplitN(out, "\n", 2)[0], "\t1") || !strings.Contains(out, "\t3\n") {
		t.Errorf("submit --from - with line 2 over 16MiB: stdout %q; want tickets of lines 1 and 3", out)
	}
}

// A service name over 7/MDP's 255 bytes is refused (exit 4) with a message
// that shows its start and its length, not all 100 KB of it; retry
// --failed of it reports no count it did not make.
func TestRefusedLongServiceNameIsCut(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir())
	name := strings.Repeat("s", 100_000)
	for _, args := range [][]string{
		{"submit", "--broker", ep, name, "x"},
		{"submit", "--broker", ep, "--wait", name, "x"},
		{"retry", "--broker", ep, "--service", name, "--failed"},
	} {
		out, stderr, code := cliStderr(t, "", args...)
		if code != 4 || len(stderr) > 1000 || len(out) > 0 {
			t.Errorf("titanic %s with a service name of 100000 bytes: exit %d, stdout %d bytes, stderr %d bytes %.300q; want 4, nothing on stdout, and the name cut",
				args[0], code, len(out), len(stderr), stderr)
		}
	}
}

// A second Ctrl-C (SIGINT) on a worker draining its running command
// (--drain-timeout) stops it at once, saying so, and kills the command,
// rather than being ignored for the rest of the drain.
func TestWorkerSecondInterruptStopsAtOnce(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir())
	pidFile := filepath.Join(t.TempDir(), "pid")
	w := harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "--drain-timeout", "5m", "slow", "--",
		"sh", "-c", "echo $$ > "+pidFile+".tmp && mv "+pidFile+".tmp "+pidFile+" && exec sleep 300")
	if _, code := cli(t, "", "submit", "--broker", ep, "slow", "x"); code != 0 {
		t.Fatalf("submit: exit %d", code)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 20s; worker log:\n%s", what, w.Tail())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	var pid string
	waitFor("the command started", func() bool {
		b, err := os.ReadFile(pidFile)
		pid = strings.TrimSpace(string(b))
		return err == nil
	})
	if n, err := strconv.Atoi(pid); err == nil {
		// Not the worker's process group: killed with the worker only by it.
		t.Cleanup(func() { _ = syscall.Kill(n, syscall.SIGKILL) })
	}
	w.Signal(syscall.SIGINT)
	waitFor("the worker draining", func() bool { return strings.Contains(w.Tail(), "waiting for the running request") })
	w.Signal(syscall.SIGINT)
	waitFor("the worker stopped after a second interrupt", w.Exited)
	if !strings.Contains(w.Tail(), "second interrupt: stopping at once") {
		t.Errorf("worker stopped by a second interrupt; log:\n%s\nwant it to say so", w.Tail())
	}
	if _, err := os.Stat("/proc/" + pid); err == nil {
		t.Errorf("the command (pid %s) still runs after its worker stopped at once", pid)
	}
}

// `reply --wait` and `wait` wait until answered (README) through a broker
// outage longer than --refused-wait (2s): once a broker said the ticket is
// pending, they warn that none answers now and go on waiting, and print
// the reply once the broker is back and a worker answers.
func TestWaitRidesOutBrokerOutage(t *testing.T) {
	ep, dir := harness.FreeEndpoint(t), t.TempDir()
	br := harness.Broker(t, "broker", ep, dir)
	out, code := cli(t, "", "submit", "--broker", ep, "later", "hello")
	if code != 0 {
		t.Fatalf("submit: exit %d", code)
	}
	ticket := strings.TrimSpace(out)
	type waiter struct {
		cmd    *exec.Cmd
		stdout strings.Builder
		warned chan struct{}
		ended  chan string // its standard error, once closed (it exited)
	}
	start := func(args ...string) *waiter {
		w := &waiter{cmd: exec.Command(harness.Binary(t), args...), warned: make(chan struct{}), ended: make(chan string, 1)}
		w.cmd.Stdout = &w.stdout
		stderr, err := w.cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := w.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.cmd.Process.Kill() })
		go func() {
			sc := bufio.NewScanner(stderr)
			once := false
			var all strings.Builder
			for sc.Scan() {
				all.WriteString(sc.Text() + "\n")
				if !once && strings.Contains(sc.Text(), "still waiting, until a broker answers") {
					once = true
					close(w.warned)
				}
			}
			w.ended <- all.String()
		}()
		return w
	}
	ws := []*waiter{
		start("reply", "--wait", "--broker", ep, ticket),
		start("wait", "--parallel", "1", "--broker", ep, ticket), // one client: the one present
	}
	// Both must have reached the broker before it stops: their presence
	// (titanic.hello, made with their first request) shows it.
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := cli(t, "", "clients", "--broker", ep)
		if strings.Count(out, "titanic-") >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the two waiters not present at the broker within 20s: %q", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := br.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	for i, w := range ws {
		select {
		case <-w.warned:
		case stderr := <-w.ended:
			t.Fatalf("waiter %d (%v) ended during the broker's outage instead of waiting; stderr:\n%s", i, w.cmd.Args[1:3], stderr)
		case <-time.After(30 * time.Second):
			t.Fatalf("waiter %d (%v): no warning within 30s that no broker answers", i, w.cmd.Args[1:3])
		}
	}
	harness.Broker(t, "broker2", ep, dir)
	harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "later", "--", "tr", "a-z", "A-Z")
	for i, w := range ws {
		done := make(chan error, 1)
		go func() { done <- w.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("waiter %d (%v) after the outage: %v, want exit 0", i, w.cmd.Args[1:3], err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("waiter %d (%v): not answered within 30s of the broker's return", i, w.cmd.Args[1:3])
		}
	}
	if got := ws[0].stdout.String(); got != "HELLO" {
		t.Errorf("reply --wait after the outage printed %q, want HELLO", got)
	}
	if got := ws[1].stdout.String(); got != ticket+"\tdone\n" {
		t.Errorf("wait after the outage printed %q, want %s<TAB>done", got, ticket)
	}
}
