package main

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// shown returns a string that came from the wire (a service name any
// client may submit to, a failure reason built from a worker's stderr, a
// client's ID) as the commands' tables and lines print it: printable
// UTF-8 as it is; control characters (newline, tab, ESC ...), other
// runes a terminal does not print as themselves (bidirectional
// overrides, zero-width ones) and bytes that are not UTF-8 escaped as Go
// writes them in a quoted string (\n, \t, \x1b, \u202e, \xff). So no
// such string reaches the operator's terminal as an escape sequence,
// starts a line of its own or shifts a table's columns.
func shown(s string) string {
	i := 0
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || !strconv.IsPrint(r) {
			break
		}
		i += n
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteString(`\x`)
			b.WriteString(strconv.FormatUint(uint64(s[i])>>4, 16))
			b.WriteString(strconv.FormatUint(uint64(s[i])&15, 16))
		case strconv.IsPrint(r):
			b.WriteString(s[i : i+n])
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += n
	}
	return b.String()
}
