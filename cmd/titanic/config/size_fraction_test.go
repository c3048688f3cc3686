package config

import (
	"strings"
	"testing"
)

// A size with a fraction ("1.5MiB", or a TOML float 1.5) is refused
// saying that a size takes no fraction, not as `unknown unit ".5MiB"`:
// the unit is a known one, and that message would send the operator
// looking for a unit spelling that is already right.
func TestFractionalSizeMessage(t *testing.T) {
	for _, text := range []string{"[limits]\nmax_body = \"1.5MiB\"\n", "[limits]\nmax_body = 1.5\n"} {
		path := writeFile(t, "bad.toml", text)
		_, err := Load([]string{"--config", path}, nil, newFS())
		if err == nil {
			continue // taking 1.5MiB would do as well
		}
		if strings.Contains(err.Error(), "unknown unit") {
			t.Errorf("%q: %v; want it to say a size is a whole number of bytes or units (no fraction), not that the unit is unknown", text, err)
		}
	}
}
