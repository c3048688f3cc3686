package main

import (
	"errors"
	"fmt"
	"testing"
)

// shownErr, which escapes the errors the commands print on stderr (see
// TestCLIOutputEscapesWireStrings), keeps the line breaks between joined
// errors (a check's list of problems, a sharded submit's answers) and
// escapes all else.
func TestShownErrKeepsJoinedLines(t *testing.T) {
	err := fmt.Errorf("check: %w: %w", errors.New("corrupt"),
		errors.Join(errors.New("ticket a: bad\x1b[2J"), fmt.Errorf("service %s: %w", "s\nforged", errors.New("x"))))
	want := "check: corrupt: ticket a: bad\\x1b[2J\nservice s\\nforged: x"
	if got := shownErr(err); got != want {
		t.Errorf("shownErr:\n%q\nwant\n%q", got, want)
	}
	if got := shownErr(errors.New("a\tb\x1b")); got != `a\tb\x1b` {
		t.Errorf("shownErr of a plain error: %q", got)
	}
}
