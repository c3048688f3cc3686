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

// shownErr is an error's message as the commands print it on stderr: text
// that came from the wire (a broker's answer, a service name, a ticket
// field, a worker's reason) wrapped in it is escaped as shown escapes it,
// so that no escape sequence reaches the terminal and no newline forges a
// line. The line breaks errors.Join puts between errors are kept, each
// error of the join shown in turn.
func shownErr(err error) string {
	msg := err.Error()
	var kids []error
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		kids = u.Unwrap()
		texts := make([]string, len(kids))
		for i, k := range kids {
			texts[i] = k.Error()
		}
		if len(kids) > 1 && msg == strings.Join(texts, "\n") { // a join
			for i, k := range kids {
				texts[i] = shownErr(k)
			}
			return strings.Join(texts, "\n")
		}
	case interface{ Unwrap() error }:
		if k := u.Unwrap(); k != nil {
			kids = []error{k}
		}
	}
	// A wrapper: its own words escaped, a wrapped join's line breaks kept.
	for _, k := range kids {
		t := k.Error()
		if i := strings.Index(msg, t); strings.Contains(t, "\n") && i >= 0 {
			return shown(msg[:i]) + shownErr(k) + shown(msg[i+len(t):])
		}
	}
	return shown(msg)
}
