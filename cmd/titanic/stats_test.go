package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
)

// binCLI runs the built binary with args and returns its exit code,
// standard output and standard error.
func binCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(harness.Binary(t), args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String(), errb.String()
	case err != nil:
		t.Fatalf("run titanic %v: %v", args, err)
	}
	return 0, out.String(), errb.String()
}

// parseTable reads the lines of a stats table (header first) into one map
// per service, by column name.
func parseTable(t *testing.T, lines []string) map[string]map[string]string {
	t.Helper()
	if len(lines) == 0 || !slicesEqual(strings.Fields(lines[0]), queueHeader) {
		t.Fatalf("table header = %q, want %q", lines, queueHeader)
	}
	rows := map[string]map[string]string{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != len(queueHeader) {
			t.Fatalf("table line %q has %d columns, want %d", l, len(f), len(queueHeader))
		}
		row := map[string]string{}
		for i, h := range queueHeader {
			row[h] = f[i]
		}
		rows[f[0]] = row
	}
	return rows
}

func slicesEqual(a, b []string) bool { return strings.Join(a, "\x00") == strings.Join(b, "\x00") }

// wantRow checks a service's columns; want alternates column and value.
func wantRow(t *testing.T, what string, rows map[string]map[string]string, service string, want ...string) {
	t.Helper()
	row, ok := rows[service]
	if !ok {
		t.Fatalf("%s: no line for %s in %v", what, service, rows)
	}
	for i := 0; i < len(want); i += 2 {
		if row[want[i]] != want[i+1] {
			t.Errorf("%s: %s %s = %s, want %s (line %v)", what, service, want[i], row[want[i]], want[i+1], row)
		}
	}
}

// TestStatsAndTop drives `titanic stats` and `titanic top` through the
// built binary: exact per-service counts with a worker holding a job,
// --json, top's tables until Ctrl-C (exit 130), and the counts after a
// broker restart, which come back from the store.
func TestStatsAndTop(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	dir := t.TempDir()
	b := harness.Broker(t, "broker", ep, dir, "--max-attempts", "2")
	script := `read x; case "$x" in fail) echo no >&2; exit 1;; hold) exec sleep 600;; esac; echo "$x"`
	w := harness.Start(t, "worker", "worker running", "worker", "--broker", ep, "--heartbeat", "200ms", "upper", "--", "sh", "-c", script)
	br := []string{"--broker", ep}

	for _, body := range []string{"a", "b"} {
		if code, out, stderr := binCLI(t, append([]string{"submit", "--wait", "upper", body}, br...)...); code != exitOK || strings.TrimSpace(out) != body {
			t.Fatalf("submit --wait upper %s: exit %d, stdout %q, stderr %q", body, code, out, stderr)
		}
	}
	if code, _, stderr := binCLI(t, append([]string{"submit", "--wait", "upper", "fail"}, br...)...); code != exitFailed {
		t.Fatalf("submit --wait upper fail: exit %d, stderr %q, want %d", code, stderr, exitFailed)
	}
	for _, sb := range [][2]string{{"upper", "hold"}, {"upper", "p1"}, {"upper", "p2"}, {"other", "x"}} {
		if code, _, stderr := binCLI(t, append([]string{"submit", sb[0], sb[1]}, br...)...); code != exitOK {
			t.Fatalf("submit %s %s: exit %d, stderr %q", sb[0], sb[1], code, stderr)
		}
	}

	// The worker takes "hold" and keeps it; p1 and p2 wait behind it.
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, out, stderr := binCLI(t, append([]string{"stats", "--json", "--service", "upper"}, br...)...)
		var st client.QueueStats
		if code != exitOK || json.Unmarshal([]byte(out), &st) != nil || len(st.Services) != 1 || st.Services[0].Service != "upper" {
			t.Fatalf("stats --json --service upper: exit %d, stdout %q, stderr %q", code, out, stderr)
		}
		if st.Services[0].InFlight == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the held job is not in flight after 20s: %+v", st.Services[0])
		}
		time.Sleep(50 * time.Millisecond) // polling the broker's state: no event to wait on
	}
	code, out, stderr := binCLI(t, append([]string{"stats"}, br...)...)
	if code != exitOK {
		t.Fatalf("stats: exit %d, stderr %q", code, stderr)
	}
	rows := parseTable(t, strings.Split(strings.TrimRight(out, "\n"), "\n"))
	wantRow(t, "stats", rows, "upper", "PENDING", "2", "DELAYED", "0", "IN-FLIGHT", "1", "DONE", "2", "FAILED", "1",
		"WORKERS", "1", "IDLE", "0", "BUSY", "1")
	wantRow(t, "stats", rows, "other", "PENDING", "1", "IN-FLIGHT", "0", "DONE", "0", "FAILED", "0", "WORKERS", "0", "IDLE", "0", "BUSY", "0")

	// top, on a pipe: one table per interval, until Ctrl-C.
	top := exec.Command(harness.Binary(t), append([]string{"top", "--interval", "100ms"}, br...)...)
	pipe, err := top.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var topErr bytes.Buffer
	top.Stderr = &topErr
	if err := top.Start(); err != nil {
		t.Fatal(err)
	}
	kill := time.AfterFunc(20*time.Second, func() { _ = top.Process.Kill() })
	defer kill.Stop()
	sc := bufio.NewScanner(pipe)
	var tables [][]string
	for len(tables) < 3 && sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "titanic top"):
			tables = append(tables, nil)
		case line != "" && len(tables) > 0:
			tables[len(tables)-1] = append(tables[len(tables)-1], line)
		}
	}
	if len(tables) < 3 {
		t.Fatalf("top printed %d tables before its output ended; stderr %q", len(tables), topErr.String())
	}
	for i, tb := range tables[:2] {
		rows := parseTable(t, tb)
		wantRow(t, "top table "+string(rune('1'+i)), rows, "upper", "PENDING", "2", "IN-FLIGHT", "1", "DONE", "2", "FAILED", "1", "BUSY", "1")
		wantRow(t, "top table "+string(rune('1'+i)), rows, "other", "PENDING", "1")
	}
	_ = top.Process.Signal(os.Interrupt)
	go func() { _, _ = bufio.NewReader(pipe).WriteTo(&bytes.Buffer{}) }() // keep the pipe drained
	err = top.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitInterrupted {
		t.Fatalf("top after Ctrl-C: %v, want exit %d; stderr %q", err, exitInterrupted, topErr.String())
	}

	// A restart: done and failed come back from the store; the held job
	// is pending again (its worker is gone; the attempt the restart cut
	// short counts, and with no backoff it is queued at once), and the
	// rates start over.
	if err := b.Stop(15 * time.Second); err != nil {
		t.Fatalf("stop broker: %v", err)
	}
	w.Kill()
	harness.Broker(t, "broker2", ep, dir, "--max-attempts", "2", "--backoff-base", "-1s")
	code, out, stderr = binCLI(t, append([]string{"stats"}, br...)...)
	if code != exitOK {
		t.Fatalf("stats after restart: exit %d, stderr %q", code, stderr)
	}
	rows = parseTable(t, strings.Split(strings.TrimRight(out, "\n"), "\n"))
	wantRow(t, "after restart", rows, "upper", "PENDING", "3", "IN-FLIGHT", "0", "DONE", "2", "FAILED", "1",
		"WORKERS", "0", "SUBMIT/S", "0.0", "REPLY/S", "0.0")
	wantRow(t, "after restart", rows, "other", "PENDING", "1", "DONE", "0")
}
