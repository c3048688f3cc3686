package config

import (
	"strings"
	"testing"
)

// A bad value in the config file is refused naming the key and where it
// is, the file and the line: an unknown key (as the parser's own errors
// do: "toml: line 3 (last key ...)"), and a value the parser takes but
// the validation refuses, which would otherwise look as if it had come
// from the command line ("broker.liveness (--liveness): -1: must be at
// least 1").
func TestFileErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct{ text, key string }{
		{"[broker]\nheartbeat = \"2s\"\nlivenes = 3\n", "broker.livenes"},
		{"[broker]\nheartbeat = \"2s\"\nliveness = -1\n", "broker.liveness"},
		{"[store]\ndir = \"/tmp\"\nmax_batch = 0\n", "store.max_batch"},
	} {
		path := writeFile(t, "bad.toml", tc.text)
		_, err := Load([]string{"--config", path}, nil, newFS())
		if err == nil {
			t.Errorf("%q: no error", tc.text)
			continue
		}
		for _, w := range []string{tc.key, path, "line 3"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q lacks %q", tc.text, err, w)
			}
		}
	}
}

// A value the validation refuses names where it came from whatever the
// source: the environment variable or the flag, the last that set it.
func TestValueErrorsNameTheirOrigin(t *testing.T) {
	path := writeFile(t, "ok.toml", "[broker]\nliveness = 3\n")
	for _, tc := range []struct {
		args, env []string
		want      string
	}{
		{[]string{"--config", path}, []string{"TITANIC_BROKER_LIVENESS=-1"}, "environment TITANIC_BROKER_LIVENESS"},
		{[]string{"--config", path, "--liveness", "-1"}, []string{"TITANIC_BROKER_LIVENESS=2"}, "flag --liveness"},
	} {
		_, err := Load(tc.args, tc.env, newFS())
		if err == nil || !strings.Contains(err.Error(), "broker.liveness") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: %v; want broker.liveness named, from %s", tc.args, tc.env, err, tc.want)
		}
	}
	// The lines of a multi-line string are no keys; a key of an array of
	// tables is found under it.
	text := "[log]\nlevel = \"\"\"\nliveness = 2\n\"\"\"\n[[queue.services]]\nname = \"a\"\nmax_atempts = 2\n"
	lines := keyLines(text)
	if lines["log.level"] != 2 || lines["queue.services.max_atempts"] != 7 {
		t.Errorf("keyLines(%q) = %v", text, lines)
	}
	if _, ok := lines["log.liveness"]; ok {
		t.Errorf("keyLines took a line of a multi-line string for a key: %v", lines)
	}
}
