package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/titanicmq/titanic/internal/harness"
)

// TestFirstHourStartErrorsSayWhatToDo: the broker's start-up errors that a
// new user meets in the first hour. A second broker on the data directory
// of a running one says what to do ("is a broker running on it? stop it,
// or give this one another --data"); two others do not:
//
//   - a second broker on the port of a running one (another --data): "bind
//     tcp://127.0.0.1:5555: address already in use", after it has created
//     and opened its store, naming neither --listen nor what holds the port;
//   - --data given the data file (as `titanic check --file` takes one):
//     "data directory: mkdir DIR/titanic.db: not a directory", where --data
//     wants the directory that holds titanic.db.
func TestFirstHourStartErrorsSayWhatToDo(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	dir := t.TempDir()
	harness.Broker(t, "first", ep, dir)

	stderr, code := runBroker(t, nil, "--listen", ep, "--data", t.TempDir(), "--http-listen", "")
	if code == 0 || !strings.Contains(stderr, "--listen") {
		t.Errorf("a second broker on the port of a running one: exit %d, want an error naming --listen; stderr: %s", code, lastLines(stderr, 1))
	}

	file := filepath.Join(t.TempDir(), "titanic.db")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	stderr, code = runBroker(t, nil, "--listen", harness.FreeEndpoint(t), "--data", file, "--http-listen", "")
	if code == 0 || !strings.Contains(stderr, "--data") {
		t.Errorf("--data given a file: exit %d, want an error saying --data takes the directory; stderr: %s", code, lastLines(stderr, 1))
	}
}
