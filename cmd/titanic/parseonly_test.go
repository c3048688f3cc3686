package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TITANIC_PARSE_ONLY=1 parses a command line and stops: a client command
// dials nothing (a dead broker would cost it seconds and exit 6), keygen
// and restore write nothing, a broker opens no store; a bad command line
// still exits 2.
func TestParseOnly(t *testing.T) {
	dir := t.TempDir()
	environ := []string{parseOnlyEnv + "=1"}
	dead := []string{"--broker", "tcp://127.0.0.1:1", "--try-timeout", "2s"}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{append([]string{"submit", "--wait", "svc", "body"}, dead...), exitOK},
		{append([]string{"reply", "0123456789abcdef0123456789abcdef", "--wait"}, dead...), exitOK},
		{append([]string{"cluster", "join", "n4", "10.0.0.4:7000"}, dead...), exitOK},
		{append([]string{"cluster", "join", "--voter", "--force", "n4", "10.0.0.4:7000"}, dead...), exitOK},
		{append([]string{"cluster", "join", "--force", "n4", "10.0.0.4:7000"}, dead...), exitUsage},
		{[]string{"keygen", "--dir", dir, "alice"}, exitOK},
		{[]string{"restore", "--data", filepath.Join(dir, "restored"), filepath.Join(dir, "missing.db")}, exitOK},
		{[]string{"broker", "--data", filepath.Join(dir, "data"), "--listen", "tcp://10.0.0.1:5555", "--pair", "primary", "--peer", "10.0.0.2"}, exitOK},
		{[]string{"config", "--heartbeat", "1s"}, exitOK},
		{append([]string{"submit", "--bogus", "svc", "body"}, dead...), exitUsage},
		{[]string{"broker", "--heartbeat", "soon"}, exitUsage},
		{[]string{"frobnicate"}, exitUsage},
	} {
		var out, errb bytes.Buffer
		start := time.Now()
		code := run(context.Background(), tc.args, environ, strings.NewReader(""), &out, &errb)
		if code != tc.code {
			t.Errorf("%s=1 titanic %q: exit %d, want %d\n%s", parseOnlyEnv, tc.args, code, tc.code, errb.String())
		}
		if tc.code == exitOK && (!strings.Contains(errb.String(), "command line ok") || out.Len() != 0) {
			t.Errorf("%s=1 titanic %q: stdout %q, stderr %q; want nothing on stdout and \"command line ok\"", parseOnlyEnv, tc.args, out.String(), errb.String())
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s=1 titanic %q took %s: it dialed or waited", parseOnlyEnv, tc.args, d)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("%s=1 left %s in the directory: it must write nothing", parseOnlyEnv, e.Name())
	}
}
