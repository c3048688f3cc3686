package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

// The job lifecycle through the built binary: each test also across a
// broker restart (kill -9, then a new broker on the same data).

// lcBroker starts a broker for the lifecycle tests; restart kills it and
// starts another on the same data and endpoint.
type lcBroker struct {
	t     *testing.T
	ep    string
	data  string
	extra []string
	p     *harness.Process
	n     int
}

func newLCBroker(t *testing.T, extra ...string) *lcBroker {
	b := &lcBroker{t: t, ep: harness.FreeEndpoint(t), data: t.TempDir(), extra: append(extra, fastBroker...)}
	b.p = harness.Broker(t, "broker", b.ep, b.data, b.extra...)
	return b
}

func (b *lcBroker) restart() {
	b.t.Helper()
	b.p.Kill()
	b.n++
	b.p = harness.Broker(b.t, fmt.Sprintf("broker-restart%d", b.n), b.ep, b.data, b.extra...)
}

// cli runs a client command against the broker.
func (b *lcBroker) cli(args ...string) (string, int) {
	b.t.Helper()
	return cli(b.t, "", append(append(args[:1:1], "--broker", b.ep), args[1:]...)...)
}

// worker starts `titanic worker SERVICE -- sh -c SCRIPT`.
func (b *lcBroker) worker(name, service, script string) *harness.Process {
	b.t.Helper()
	return harness.Start(b.t, name, "worker running", "worker", "--broker", b.ep, "--heartbeat", "200ms", service, "--", "sh", "-c", script)
}

// submit runs titanic submit and returns the ticket.
func (b *lcBroker) submit(args ...string) string {
	b.t.Helper()
	out, code := b.cli(append([]string{"submit"}, args...)...)
	tk := strings.TrimSpace(out)
	if code != 0 || len(tk) != 32 {
		b.t.Fatalf("submit %v: %q exit %d\nbroker log:\n%s", args, out, code, b.p.Tail())
	}
	return tk
}

// replyWait runs titanic reply --wait (bounded) and returns the reply.
func (b *lcBroker) replyWait(ticket string) string {
	b.t.Helper()
	out, code := b.cli("reply", "--wait", "--wait-timeout", "60s", ticket)
	if code != 0 {
		b.t.Fatalf("reply --wait %s: %q exit %d\nbroker log:\n%s", ticket, out, code, b.p.Tail())
	}
	return out
}

// serving waits until the broker has a worker for service (8/MMI).
func (b *lcBroker) serving(service string) {
	b.t.Helper()
	c := newClient(b.t, b.ep)
	waitFor(b.t, 20*time.Second, "a worker registered for "+service, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		rep, err := c.Request(ctx, "mmi.service", [][]byte{[]byte(service)})
		return err == nil && len(rep) > 0 && string(rep[0]) == "200"
	})
}

// clock is a worker script that answers the time it ran (Unix ns).
const clock = `cat >/dev/null; date +%s%N`

func ranAt(t *testing.T, reply string) time.Time {
	t.Helper()
	ns, err := strconv.ParseInt(strings.TrimSpace(reply), 10, 64)
	if err != nil {
		t.Fatalf("worker reply %q is not a time", reply)
	}
	return time.Unix(0, ns)
}

// A delayed ticket is not dispatched before its due time, with a worker
// waiting all along, and keeps its delay across a broker restart while
// delayed (it is pending to 9/TSP meanwhile). Needs the dispatcher's
// delay (helper A's branch).
func TestLifecycleDelay(t *testing.T) {
	b := newLCBroker(t)
	b.worker("worker", "clock", clock)
	b.serving("clock")

	start := time.Now()
	tk := b.submit("--delay", "2s", "clock", "x")
	if at := ranAt(t, b.replyWait(tk)); at.Before(start.Add(2 * time.Second)) {
		t.Fatalf("ran %s after the submit, before its 2s delay", at.Sub(start))
	}

	// --at, then a restart while it is delayed.
	start = time.Now()
	due := start.Add(4 * time.Second).UTC()
	tk = b.submit("--at", due.Format(time.RFC3339Nano), "clock", "y")
	b.restart()
	if out, code := b.cli("reply", tk); code != 3 {
		t.Fatalf("reply of a delayed ticket after a restart: %q exit %d, want 3 (pending)", out, code)
	}
	if out, code := b.cli("status", tk); code != 0 || !strings.Contains(out, "state:    pending") {
		t.Fatalf("status of a delayed ticket after a restart: %q exit %d, want pending", out, code)
	}
	if at := ranAt(t, b.replyWait(tk)); at.Before(due) {
		t.Fatalf("ran at %s, before its due time %s", at.Format(time.RFC3339Nano), due.Format(time.RFC3339Nano))
	}
}

// orderLog is a worker script that appends each body to the file named
// by $1's directory's "order" and answers ok.
func orderScript(dir string) string {
	return fmt.Sprintf(`b="$(cat)"; echo "$b" >> %q; echo ok`, filepath.Join(dir, "order"))
}

func readOrder(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "order"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// With one worker, a service's high tickets run before its normal ones and
// those before its low ones, whatever their submit order; also when the
// tickets were queued before a restart. Needs the dispatcher's priorities
// (helper A's branch).
func TestLifecyclePriority(t *testing.T) {
	b := newLCBroker(t)
	dir := t.TempDir()
	submitRound := func(round string) []string {
		var tks []string
		for _, p := range []string{"low", "normal", "high", "low", "high", "normal"} {
			tks = append(tks, b.submit("--priority", p, "prio", round+"-"+p))
		}
		return tks
	}
	want := func(round string) []string {
		return []string{round + "-high", round + "-high", round + "-normal", round + "-normal", round + "-low", round + "-low"}
	}
	check := func(tks []string, got []string, round string) {
		t.Helper()
		if strings.Join(got, " ") != strings.Join(want(round), " ") {
			t.Fatalf("%s: ran in the order %v, want %v", round, got, want(round))
		}
	}

	// Paused, so that all six are queued when the worker may take them.
	if _, code := b.cli("pause", "prio"); code != 0 {
		t.Fatal("pause")
	}
	b.worker("worker", "prio", orderScript(dir))
	b.serving("prio")
	tks := submitRound("one")
	if _, code := b.cli("resume", "prio"); code != 0 {
		t.Fatal("resume")
	}
	for _, tk := range tks {
		b.replyWait(tk)
	}
	check(tks, readOrder(t, dir), "one")

	// Queued, then the broker restarts, then the worker comes back.
	if _, code := b.cli("pause", "prio"); code != 0 {
		t.Fatal("pause")
	}
	tks = submitRound("two")
	b.restart()
	b.serving("prio")
	if _, code := b.cli("resume", "prio"); code != 0 {
		t.Fatal("resume after the restart")
	}
	for _, tk := range tks {
		b.replyWait(tk)
	}
	check(tks, readOrder(t, dir)[6:], "two")
}

// A cancelled pending ticket is never dispatched, also once the broker
// restarted and a worker came; its lookups say failed (exit 5) and its
// status cancelled. A second cancel exits 1, an unknown ticket 4.
func TestLifecycleCancel(t *testing.T) {
	b := newLCBroker(t)
	dir := t.TempDir()
	keep := b.submit("job", "keep")
	drop := b.submit("job", "drop")
	if out, code := b.cli("cancel", drop); code != 0 || !strings.Contains(out, "cancelled") {
		t.Fatalf("cancel: %q exit %d", out, code)
	}
	b.restart()
	b.worker("worker", "job", orderScript(dir))
	b.replyWait(keep)
	if got := readOrder(t, dir); len(got) != 1 || got[0] != "keep" {
		t.Fatalf("ran %v, want keep only", got)
	}
	if out, code := b.cli("reply", drop); code != 5 || out != "" {
		t.Fatalf("reply of a cancelled ticket: %q exit %d, want 5", out, code)
	}
	if out, code := b.cli("status", drop); code != 0 || !strings.Contains(out, "state:    cancelled") {
		t.Fatalf("status of a cancelled ticket: %q exit %d", out, code)
	}
	if _, code := b.cli("cancel", drop); code != 1 {
		t.Fatalf("second cancel: exit %d, want 1", code)
	}
	if _, code := b.cli("cancel", "0123456789abcdef0123456789abcdef"); code != 4 {
		t.Fatalf("cancel of an unknown ticket: exit %d, want 4", code)
	}
	if _, code := b.cli("cancel", keep); code != 1 {
		t.Fatalf("cancel of a done ticket: exit %d, want 1", code)
	}
}

// A paused service's tickets are taken and not dispatched, with its
// worker registered, also after a restart; resume runs them.
func TestLifecyclePauseResume(t *testing.T) {
	b := newLCBroker(t)
	if out, code := b.cli("pause", "job"); code != 0 || !strings.Contains(out, "paused") {
		t.Fatalf("pause: %q exit %d", out, code)
	}
	dir := t.TempDir()
	b.worker("worker", "job", orderScript(dir))
	tk := b.submit("job", "a")
	b.restart()
	b.serving("job")
	// The worker is registered: a dispatch would happen now. The ticket
	// must still be pending (the pause held across the restart).
	tk2 := b.submit("job", "b")
	if out, code := b.cli("reply", tk); code != 3 {
		t.Fatalf("reply of a paused service's ticket: %q exit %d, want 3", out, code)
	}
	if out, code := b.cli("status", tk2); code != 0 || !strings.Contains(out, "state:    pending") {
		t.Fatalf("status: %q exit %d, want pending", out, code)
	}
	if out, code := b.cli("resume", "job"); code != 0 || !strings.Contains(out, "resumed") {
		t.Fatalf("resume: %q exit %d", out, code)
	}
	b.replyWait(tk)
	b.replyWait(tk2)
	if got := readOrder(t, dir); strings.Join(got, " ") != "a b" {
		t.Fatalf("ran %v, want a b", got)
	}
}

// The dead set: failed tickets listed with reason and attempts (also
// after a restart), their attempt history, retried one at a time or all
// of a service's at once, and purged (only with --yes).
func TestLifecycleDeadRetryPurge(t *testing.T) {
	b := newLCBroker(t, "--max-attempts", "1")
	flag := filepath.Join(t.TempDir(), "healthy")
	b.worker("worker", "flaky", fmt.Sprintf(`if [ -e %q ]; then cat; else cat >/dev/null; echo "disk on fire" >&2; exit 3; fi`, flag))
	var tks []string
	for i := range 4 {
		tks = append(tks, b.submit("flaky", fmt.Sprint("job", i)))
	}
	other := b.submit("nobody", "x") // another service: never in flaky's dead set
	for _, tk := range tks {
		if _, code := b.cli("reply", "--wait", "--wait-timeout", "60s", tk); code != 5 {
			t.Fatalf("reply --wait of %s: exit %d, want 5 (failed)", tk, code)
		}
	}
	b.restart()

	out, code := b.cli("dead", "--service", "flaky", "--json")
	var dead struct {
		Tickets []struct {
			ID       string    `json:"id"`
			Service  string    `json:"service"`
			Attempts int       `json:"attempts"`
			Failed   time.Time `json:"failed"`
			Reason   string    `json:"reason"`
		} `json:"tickets"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &dead) != nil || len(dead.Tickets) != 4 {
		t.Fatalf("dead --json: %q exit %d, want 4 tickets", out, code)
	}
	for i, d := range dead.Tickets {
		if d.ID != tks[i] || d.Service != "flaky" || d.Attempts != 1 || d.Failed.IsZero() || !strings.Contains(d.Reason, "disk on fire") {
			t.Fatalf("dead ticket %d: %+v, want %s failed after 1 attempt with the worker's error", i, d, tks[i])
		}
	}
	if out, code := b.cli("dead"); code != 0 || strings.Count(out, "disk on fire") != 4 || strings.Contains(out, other) {
		t.Fatalf("dead: %q exit %d, want the 4 flaky tickets", out, code)
	}

	out, code = b.cli("status", "--attempts", tks[0])
	if code != 0 || !strings.Contains(out, "history:") || !hasLine(out, "failed", "disk on fire") {
		t.Fatalf("status --attempts: %q exit %d, want the failed attempt with its error", out, code)
	}
	out, code = b.cli("status", "--attempts", "--json", tks[0])
	var st struct {
		State   string `json:"state"`
		History []struct {
			Start   time.Time `json:"start"`
			Seconds float64   `json:"seconds"`
			Outcome string    `json:"outcome"`
			Error   string    `json:"error"`
		} `json:"history"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.State != "failed" || len(st.History) != 1 ||
		st.History[0].Outcome != "failed" || st.History[0].Start.IsZero() || st.History[0].Seconds < 0 {
		t.Fatalf("status --attempts --json: %q exit %d", out, code)
	}

	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := b.cli("retry", tks[0]); code != 0 || !strings.Contains(out, "pending again") {
		t.Fatalf("retry: %q exit %d", out, code)
	}
	if got := b.replyWait(tks[0]); got != "job0" {
		t.Fatalf("retried ticket's reply %q", got)
	}
	if _, code := b.cli("retry", tks[0]); code != 1 {
		t.Fatalf("retry of a done ticket: exit %d, want 1", code)
	}
	if out, code := b.cli("retry", "--service", "flaky", "--failed"); code != 0 || !strings.Contains(out, "3 failed tickets of flaky") {
		t.Fatalf("retry --failed: %q exit %d, want 3 retried", out, code)
	}
	for i, tk := range tks[1:] {
		if got := b.replyWait(tk); got != fmt.Sprint("job", i+1) {
			t.Fatalf("ticket %d's reply %q", i+1, got)
		}
	}
	if out, code := b.cli("dead", "--service", "flaky", "--json"); code != 0 || strings.TrimSpace(out) != `{"tickets":[]}` {
		t.Fatalf("dead after the retries: %q exit %d, want none", out, code)
	}

	// Two more fail; purge closes them only with --yes.
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	more := []string{b.submit("flaky", "m1"), b.submit("flaky", "m2")}
	for _, tk := range more {
		if _, code := b.cli("reply", "--wait", "--wait-timeout", "60s", tk); code != 5 {
			t.Fatalf("reply --wait of %s: exit %d, want 5", tk, code)
		}
	}
	if out, code := b.cli("purge", "--service", "flaky"); code != 1 || !strings.Contains(out, "would close 2 failed tickets of flaky") {
		t.Fatalf("purge without --yes: %q exit %d, want exit 1 saying it would close 2", out, code)
	}
	if _, code := b.cli("status", more[0]); code != 0 {
		t.Fatalf("purge without --yes closed %s", more[0])
	}
	if out, code := b.cli("purge", "--service", "flaky", "--yes"); code != 0 || !strings.Contains(out, "closed 2 failed tickets of flaky") {
		t.Fatalf("purge --yes: %q exit %d", out, code)
	}
	for _, tk := range more {
		if _, code := b.cli("status", tk); code != 4 {
			t.Fatalf("status of purged %s: exit %d, want 4 (unknown)", tk, code)
		}
	}
	for _, tk := range tks {
		if _, code := b.cli("status", tk); code != 0 {
			t.Fatalf("purge closed the done ticket %s", tk)
		}
	}
	if out, code := b.cli("status", other); code != 0 || !strings.Contains(out, "pending") {
		t.Fatalf("another service's ticket after the purge: %q exit %d", out, code)
	}
}

// A client that speaks only 9/TSP (titanic.request, titanic.reply,
// titanic.close, by frames) is unaffected: its own requests run; a
// delayed or paused ticket answers 300; a cancelled one 500 failed.
func TestLifecyclePlainTSP(t *testing.T) {
	b := newLCBroker(t)
	b.worker("worker", "echo", "cat")
	c := newClient(t, b.ep)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tsp := func(service string, body ...string) []string {
		t.Helper()
		fr := make([][]byte, len(body))
		for i, s := range body {
			fr[i] = []byte(s)
		}
		rep, err := c.Request(ctx, service, fr)
		if err != nil {
			t.Fatalf("%s: %v", service, err)
		}
		out := make([]string, len(rep))
		for i, f := range rep {
			out[i] = string(f)
		}
		return out
	}
	rep := tsp("titanic.request", "echo", "hello")
	if len(rep) != 2 || rep[0] != "200" || len(rep[1]) != 32 {
		t.Fatalf("titanic.request: %q", rep)
	}
	plain := rep[1]
	waitFor(t, 20*time.Second, "the plain ticket answered", func() bool {
		r := tsp("titanic.reply", plain)
		return r[0] == "200"
	})
	if r := tsp("titanic.reply", plain); len(r) != 2 || r[1] != "hello" {
		t.Fatalf("titanic.reply: %q, want [200 hello]", r)
	}

	if _, code := b.cli("pause", "held"); code != 0 {
		t.Fatal("pause")
	}
	rep = tsp("titanic.request", "held", "x")
	if rep[0] != "200" {
		t.Fatalf("titanic.request to a paused service: %q, want 200 (taken)", rep)
	}
	held := rep[1]
	if r := tsp("titanic.reply", held); r[0] != "300" {
		t.Fatalf("titanic.reply of a paused service's ticket: %q, want 300", r)
	}
	if _, code := b.cli("cancel", held); code != 0 {
		t.Fatal("cancel")
	}
	if r := tsp("titanic.reply", held); len(r) != 2 || r[0] != "500" || !strings.HasPrefix(r[1], "failed: cancelled") {
		t.Fatalf("titanic.reply of a cancelled ticket: %q, want [500 failed: cancelled...]", r)
	}
	// A delayed ticket, with a worker there all along, is pending to
	// 9/TSP (needs the dispatcher's delay: helper A's branch).
	delayed := b.submit("--delay", "1h", "echo", "later")
	b.serving("echo")
	if r := tsp("titanic.reply", delayed); r[0] != "300" {
		t.Fatalf("titanic.reply of a delayed ticket: %q, want 300", r)
	}
	if _, code := b.cli("cancel", delayed); code != 0 {
		t.Fatal("cancel of a delayed ticket")
	}
	for _, tk := range []string{plain, delayed, held} {
		if r := tsp("titanic.close", tk); len(r) != 1 || r[0] != "200" {
			t.Fatalf("titanic.close: %q", r)
		}
	}
	if r := tsp("titanic.reply", plain); r[0] != "400" {
		t.Fatalf("titanic.reply after close: %q, want 400", r)
	}
}

// The attempt history names the worker of each failed attempt, by the
// printable form of its routing identity that the broker's log uses too,
// but only once the data file is at format 2: before, a worker's name
// alone would end a rollback to v0.1.0, so a store that took nothing but
// first-release work records none ("-").
func TestLifecycleAttemptWorker(t *testing.T) {
	b := newLCBroker(t, "--max-attempts", "1")
	b.worker("worker", "flaky", `cat >/dev/null; echo "disk on fire" >&2; exit 3`)
	b.serving("flaky")
	type history struct {
		History []struct {
			Worker  string `json:"worker"`
			Outcome string `json:"outcome"`
			Error   string `json:"error"`
		} `json:"history"`
	}
	attempts := func(tk string) history {
		t.Helper()
		out, code := b.cli("status", "--attempts", "--json", tk)
		var h history
		if code != 0 || json.Unmarshal([]byte(out), &h) != nil {
			t.Fatalf("status --attempts --json %s: %q exit %d", tk, out, code)
		}
		return h
	}

	plain := b.submit("flaky", "plain")
	if _, code := b.cli("reply", "--wait", "--wait-timeout", "60s", plain); code != 5 {
		t.Fatalf("reply --wait of the plain ticket: exit %d, want 5 (failed)", code)
	}
	if h := attempts(plain); len(h.History) != 1 || h.History[0].Worker != "" || h.History[0].Outcome != "failed" {
		t.Fatalf("plain ticket's history on a first-release store: %+v, want one failed attempt and no worker", h)
	}
	if out, code := b.cli("status", "--attempts", plain); code != 0 || !hasLine(out, "\t-\t", "failed") {
		t.Fatalf("status --attempts: %q exit %d, want the worker shown as -", out, code)
	}

	// A lifecycle option is an op of a newer kind: the file is at
	// format 2 from then on, and workers are recorded.
	opted := b.submit("--attempts", "2", "--backoff", "50ms", "flaky", "opted")
	if _, code := b.cli("reply", "--wait", "--wait-timeout", "60s", opted); code != 5 {
		t.Fatalf("reply --wait of the ticket with --attempts 2: exit %d, want 5 (failed)", code)
	}
	h := attempts(opted)
	if len(h.History) != 2 || h.History[0].Outcome != "retried" || h.History[1].Outcome != "failed" {
		t.Fatalf("history of the ticket with --attempts 2: %+v, want retried then failed", h)
	}
	name := h.History[0].Worker
	if len(name) != 12 || !strings.HasPrefix(name, "0x") || h.History[1].Worker != name {
		t.Fatalf("history %+v: want both attempts naming the one worker by its 5-byte routing identity (0x + 10 hex digits)", h)
	}
	log, err := os.ReadFile(b.p.Log)
	if err != nil {
		t.Fatal(err)
	}
	if !hasLine(string(log), "worker registered", "worker="+name) {
		t.Fatalf("no broker log line registers worker %s:\n%s", name, b.p.Tail())
	}
	if out, code := b.cli("status", "--attempts", opted); code != 0 || !hasLine(out, name, "retried", "disk on fire") {
		t.Fatalf("status --attempts: %q exit %d, want the retried attempt naming %s", out, code, name)
	}
}
