package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFirstHourConfigListAsString: a new user writes a config file from
// the reference table, whose Environment column takes one endpoint as a
// plain string (TITANIC_BROKER_LISTEN=tcp://127.0.0.1:6000), and writes
//
//	[broker]
//	listen = "tcp://127.0.0.1:6000"
//
// The broker (and titanic config) stop with the TOML decoder's words:
// `toml: line 2 (last key "broker.listen"): incompatible types: TOML value
// has type string; destination has type slice`, Go's type name where every
// other config error says what to write. It should say that broker.listen
// is a list and show the form: listen = ["tcp://127.0.0.1:6000"].
func TestFirstHourConfigListAsString(t *testing.T) {
	for _, c := range []struct{ key, section, value string }{
		{"listen", "broker", `"tcp://127.0.0.1:6000"`},
		{"admin_from", "security", `"10.0.0.0/8"`},
	} {
		file := filepath.Join(t.TempDir(), "titanic.toml")
		if err := os.WriteFile(file, []byte("["+c.section+"]\n"+c.key+" = "+c.value+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, stderr, code := cliStderr(t, "", "config", "--config", file)
		want := "[" + c.value + "]"
		if code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("%s.%s = %s: exit %d, want 2 showing the list form %s; stderr: %s", c.section, c.key, c.value, code, want, strings.TrimSpace(stderr))
		}
	}
}
