package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

// titanic submit --key "" is a usage error: found by an outside-in test of
// the job lifecycle.
//
// README: "`--key K` makes the submit idempotent: a resend with the same
// key, service and body prints the same ticket". An empty K was taken
// silently as no key at all (exit 0, a new ticket each time), so a script
// that runs `titanic submit --key "$ORDER_ID" ...` with the variable
// unset, and submits again after a timeout, stores the request twice: the
// promise the flag makes is broken without a word. The broker refuses a
// key over 128 bytes; an empty one, given on purpose, is no key at all.
func TestSubmitRefusesEmptyKey(t *testing.T) {
	wantEmptyKeyRefused(t, "submit", "--key", "", "svc", "b")
	wantEmptyKeyRefused(t, "submit", "--key=", "svc", "b")
	wantEmptyKeyRefused(t, "submit", "--key", "", "--from", "-", "svc")
}

// wantEmptyKeyRefused runs titanic args against an endpoint nothing
// listens on (44999, in this machine's test range): a command past its
// usage check fails with exit 6, not 2.
func wantEmptyKeyRefused(t *testing.T, args ...string) {
	t.Helper()
	var stderr bytes.Buffer
	code := run(context.Background(), append(args, "--broker", "tcp://127.0.0.1:44999", "--try-timeout", "50ms", "--retries", "1"),
		[]string{}, strings.NewReader("line\n"), io.Discard, &stderr)
	if code != exitUsage {
		t.Errorf("titanic %q: exit %d, want %d (usage: an empty --key would make the submit silently not idempotent); stderr: %s", args, code, exitUsage, stderr.String())
	}
}
