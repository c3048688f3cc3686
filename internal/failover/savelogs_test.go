package failover

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSaveLogsOfSubtest: a failing subtest's broker logs are kept in
// $TITANIC_ARTIFACTS like a test's (TestPairRollingRestart/sigterm's were
// lost: "open .../artifacts/TestPairRollingRestart/sigterm-pa-....log: no
// such file or directory"). No broker runs: a node without a life has an
// empty log.
func TestSaveLogsOfSubtest(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TITANIC_ARTIFACTS", dir)
	t.Run("sub", func(t *testing.T) {
		saveLogs(t, &node{name: "pa"})
	})
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasPrefix(e.Name(), "TestSaveLogsOfSubtest_sub-pa-") {
			files = append(files, e.Name())
		}
	}
	if len(files) != 1 {
		t.Fatalf("files in %s: %v, want one log TestSaveLogsOfSubtest_sub-pa-<n>.log", dir, entries)
	}
	if filepath.Ext(files[0]) != ".log" {
		t.Fatalf("kept %s, want a .log file", files[0])
	}
}
