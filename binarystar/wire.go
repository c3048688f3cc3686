package binarystar

import "bytes"

// wirePrefix starts every state message. The version lives in the prefix
// so that a future format can be told apart (and dropped as malformed by
// this one) instead of being misread as a state.
const wirePrefix = "BSTAR1 "

// maxWireSize bounds what the SUB socket accepts; a state message is 8
// bytes, and anything much larger is not ours.
const maxWireSize = 64

// encodeState returns the one-frame state message "BSTAR1 <n>", n being the
// Guide's state number.
func encodeState(s State) []byte {
	b := make([]byte, 0, len(wirePrefix)+1)
	b = append(b, wirePrefix...)
	return append(b, byte('0'+s))
}

// parseState decodes a state message. Only the exact form encodeState
// produces is accepted: anything else is reported as malformed, so that a
// stray publisher cannot inject an event.
func parseState(frame []byte) (State, bool) {
	rest, ok := bytes.CutPrefix(frame, []byte(wirePrefix))
	if !ok || len(rest) != 1 || rest[0] < '0' || rest[0] > '9' {
		return 0, false
	}
	s := State(rest[0] - '0')
	if !s.valid() {
		return 0, false
	}
	return s, true
}
