package main

import "testing"

// shown keeps printable UTF-8 as it is and escapes what a terminal would
// take as a command or a new line.
func TestShownEscapesWhatIsNotPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"":                          "",
		"billing worker 1":          "billing worker 1",
		"café ✓ 東京":                 "café ✓ 東京",
		`C:\dir`:                    `C:\dir`,
		"ev\x1b[31mil\nforged":      `ev\x1b[31mil\nforged`,
		"a\tb\rc":                   `a\tb\rc`,
		"\xfa\xfb ok":               `\xfa\xfb ok`,
		"right\u202eto left":        `right\u202eto left`,
		"bell\a del\x7f nbsp\u00a0": `bell\a del\x7f nbsp\u00a0`,
	} {
		if got := shown(in); got != want {
			t.Errorf("shown(%q) = %q, want %q", in, got, want)
		}
	}
}
