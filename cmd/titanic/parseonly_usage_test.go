package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// README ("This README is tested"): TITANIC_PARSE_ONLY=1 makes any command
// parse its command line, "command, flags and their values", and exit 0,
// "2 for a bad command line". It is how TestReadme checks the lines it
// cannot run (broker lines, cluster join/leave, the CURVE client line).
// So every command line that is a usage error when run (exit 2, before
// any dial) is one under parse-only too: a missing argument (status with
// no TICKET, cluster join without its address, backup without NAME,
// worker without its command), a value out of range (--limit 5000,
// --priority urgent, --interval 0s), options that exclude each other
// (--delay with --at).
func TestParseOnlyRefusesWhatARunRefuses(t *testing.T) {
	for _, args := range [][]string{
		{"status"},
		{"backup"},
		{"cluster", "join", "n4"},
		{"cluster", "join", "--force", "n4", "10.0.0.4:7000"},
		{"worker", "svc"},
		{"tickets", "--limit", "5000"},
		{"submit", "--priority", "urgent", "s", "x"},
		{"submit", "--delay", "1s", "--at", "2027-01-01T00:00:00Z", "s", "x"},
		{"top", "--interval", "0s"},
	} {
		env := []string{"TITANIC_BROKERS=tcp://127.0.0.1:1"}
		real := runCLIEnv(t, env, args...)
		parse := runCLIEnv(t, append(env, parseOnlyEnv+"=1"), args...)
		if real == exitUsage && parse != exitUsage {
			t.Errorf("titanic %v: exit %d when run (a usage error), but TITANIC_PARSE_ONLY=1 exits %d (command line ok)", args, real, parse)
		}
	}
}

func runCLIEnv(t *testing.T, environ []string, args ...string) int {
	t.Helper()
	var out, errb bytes.Buffer
	return run(context.Background(), args, environ, strings.NewReader(""), &out, &errb)
}
