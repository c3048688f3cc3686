package titanic

import (
	"bytes"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// One outsider asking for backups in a loop writes one warning per request
// ("backup refused"): the broker's other per-client complaints are logged
// at most every 10 s.
func TestRefusedBackupsDoNotFloodTheLog(t *testing.T) {
	var out bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &out}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	allow := func(from string) error {
		return errors.New(from + " is not this host, a member's host, or in security.admin_from")
	}
	h := newHarness(t, Config{BackupDir: t.TempDir(), AllowBackup: allow, Logger: log}, "")
	const n = 200
	for i := range n {
		if r := h.callFrom("192.0.2.9", tsp.SvcBackup, "b"+strconv.Itoa(i)); !tsp.Is(r, tsp.CodeUnknown, tsp.Forbidden) {
			t.Fatalf("backup from an outsider = %q, want 400 forbidden", r)
		}
	}
	mu.Lock()
	lines := strings.Count(out.String(), "backup refused")
	mu.Unlock()
	if lines > 10 {
		t.Errorf("%d refused backups from one address wrote %d \"backup refused\" lines; want a bounded few", n, lines)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
