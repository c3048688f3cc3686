package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

// titanic submit --ttl 0s is a usage error: found by an outside-in test of
// the job lifecycle.

// README, Bounds: "`delay`, `ttl` ... `ttl` above 0", checked by "one
// validator ... whichever way they come (titanic.submit2, so the CLI and
// the Go client, and the HTTP API's JSON)": the wire refuses ttl=0s and
// the HTTP API `"ttl": "0s"` (400 "must be above 0"), and the CLI
// refuses `--backoff 0s` as a usage error. `titanic submit --ttl 0s`
// (or `--ttl 0`) is taken instead, silently as "no TTL": the ticket is
// stored with no deadline at all and never expires (exit 0), the
// opposite of what a TTL of zero asks.
func TestSubmitRefusesTTLZero(t *testing.T) {
	var stderr bytes.Buffer
	// Nothing listens there (44999, in this machine's test range): a
	// command past its usage check fails with exit 6, not 2.
	code := run(context.Background(), []string{"submit", "--ttl", "0s", "svc", "b", "--broker", "tcp://127.0.0.1:44999", "--try-timeout", "50ms", "--retries", "1"},
		[]string{}, strings.NewReader(""), io.Discard, &stderr)
	if code != exitUsage {
		t.Fatalf("titanic submit --ttl 0s: exit %d, want %d (usage: a ttl must be above 0, as --backoff 0s is refused); stderr: %s", code, exitUsage, stderr.String())
	}
}
