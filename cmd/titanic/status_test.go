package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// A done ticket whose first attempt failed shows that failure as an
// earlier attempt's, not as the reason of its state; a failed ticket's
// reason is its state's.
func TestStatusReasonLabel(t *testing.T) {
	for _, tc := range []struct {
		state, want, not string
	}{
		{"done", "last failed attempt: lease timeout", "reason:"},
		{"pending", "last failed attempt: lease timeout", "reason:"},
		{"failed", "reason:   lease timeout", "last failed attempt"},
		{"cancelled", "reason:   lease timeout", "last failed attempt"},
	} {
		var b strings.Builder
		printStatus(&b, "t", client.Status{State: tc.state, Reason: "lease timeout", Attempts: 2})
		if out := b.String(); !strings.Contains(out, tc.want) || strings.Contains(out, tc.not) {
			t.Errorf("%s:\n%s\nwant %q, not %q", tc.state, out, tc.want, tc.not)
		}
	}
}

// A cluster change or a backup refused for this host's address says so
// and what to do; other refusals show their text, not quoted frames.
func TestAdminRefusalText(t *testing.T) {
	err := adminRefusal(tsp.SvcJoin, [][]byte{[]byte("400"), []byte(tsp.Forbidden.Text("192.0.2.9 is not this host"))})
	if !strings.Contains(err.Error(), "refused: forbidden: 192.0.2.9 is not this host") || !strings.Contains(err.Error(), "security.admin_from") {
		t.Errorf("forbidden: %v", err)
	}
	if code := exitCode(err); code != exitUnknown {
		t.Errorf("forbidden: exit %d, want %d (rejected)", code, exitUnknown)
	}
	err = adminRefusal(tsp.SvcBackup, [][]byte{[]byte("500"), []byte("busy, retry later: a backup is being written")})
	if err.Error() != "titanic.backup: 500 busy, retry later: a backup is being written" || exitCode(err) != exitError {
		t.Errorf("busy: %v (exit %d)", err, exitCode(err))
	}
	// A name refused (`backup ../x`, or one that exists): rejected, exit 4.
	err = adminRefusal(tsp.SvcBackup, [][]byte{[]byte("400"), []byte("want one frame: a file name of letters, digits, '.', '_' or '-'")})
	if code := exitCode(err); code != exitUnknown || !strings.Contains(err.Error(), "a file name of letters") {
		t.Errorf("bad name: %v, exit %d, want %d", err, code, exitUnknown)
	}
}

// titanic backup makes one try, as long as the broker gives a backup: a
// second try found the first still writing (busy), and the command
// failed with the backup written. A broker that is not there still fails
// it at once.
func TestBackupOneLongTry(t *testing.T) {
	var out, errb strings.Builder
	start := time.Now()
	code := run(context.Background(), []string{"backup", "--broker", "tcp://127.0.0.1:1", "x.db"}, nil, strings.NewReader(""), &out, &errb)
	if code == exitOK || !strings.Contains(errb.String(), "1 tries of 30m0s") || time.Since(start) > 10*time.Second {
		t.Fatalf("backup with no broker: exit %d after %s, stderr %q; want a failure within seconds naming one try of 30m0s", code, time.Since(start), errb.String())
	}
}
