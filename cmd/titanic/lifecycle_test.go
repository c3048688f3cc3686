package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
)

// The lifecycle flags become the client's SubmitOptions.
func TestLifecycleFlagsApply(t *testing.T) {
	fs := flag.NewFlagSet("submit", flag.ContinueOnError)
	lf := addLifecycleFlags(fs)
	if err := fs.Parse([]string{"--delay", "30s", "--priority", "low", "--deadline", "2030-01-02T15:04:05Z", "--attempts", "3", "--backoff", "1s,5m"}); err != nil {
		t.Fatal(err)
	}
	opt := client.SubmitOptions{IdemKey: "k"}
	if err := lf.apply(&opt); err != nil {
		t.Fatal(err)
	}
	want := client.SubmitOptions{IdemKey: "k", Delay: 30 * time.Second, Priority: client.PriorityLow, Deadline: time.Date(2030, 1, 2, 15, 4, 5, 0, time.UTC),
		MaxAttempts: 3, BackoffBase: time.Second, BackoffMax: 5 * time.Minute}
	if opt.Delay != want.Delay || opt.Priority != want.Priority || !opt.Deadline.Equal(want.Deadline) || opt.MaxAttempts != want.MaxAttempts ||
		opt.BackoffBase != want.BackoffBase || opt.BackoffMax != want.BackoffMax || opt.IdemKey != "k" || !opt.At.IsZero() || opt.TTL != 0 {
		t.Fatalf("options %+v, want %+v", opt, want)
	}
}

// Bad lifecycle command lines are usage errors (exit 2), refused before
// any broker is asked.
func TestLifecycleUsage(t *testing.T) {
	for _, args := range [][]string{
		{"submit", "--delay", "1s", "--at", "2030-01-02T15:04:05Z", "svc", "b"},
		{"submit", "--ttl", "1s", "--deadline", "2030-01-02T15:04:05Z", "svc", "b"},
		{"submit", "--at", "tomorrow", "svc", "b"},
		{"submit", "--priority", "urgent", "svc", "b"},
		{"submit", "--backoff", "1m,1s", "svc", "b"},
		{"submit", "--backoff", "0s", "svc", "b"},
		{"submit", "--attempts", "-1", "svc", "b"},
		{"cancel"},
		{"pause"},
		{"resume", "a", "b"},
		{"retry"},
		{"retry", "--failed"},
		{"retry", "--service", "s"},
		{"retry", "--service", "s", "--failed", "0123456789abcdef0123456789abcdef"},
		{"purge"},
		{"purge", "--yes"},
		{"dead", "extra"},
	} {
		var stderr bytes.Buffer
		// No broker listens there: a command that got past its usage
		// check would fail otherwise (exit 6), not 2.
		code := run(context.Background(), append(args, "--broker", "tcp://127.0.0.1:1", "--try-timeout", "50ms", "--retries", "1"), []string{}, strings.NewReader(""), io.Discard, &stderr)
		if code != exitUsage {
			t.Errorf("titanic %v: exit %d, want %d (usage); stderr: %s", args, code, exitUsage, stderr.String())
		}
	}
}
