package binarystar

import "bytes"

// wirePrefix starts every state message. The version lives in the prefix
// so that a future format can be told apart (and dropped as malformed by
// this one) instead of being misread as a state.
const wirePrefix = "BSTAR1 "

// WireVersion is the pair state link's protocol version, the digit of
// wirePrefix (`titanic version` prints it).
const WireVersion = 1

// newerWire reports the version of a state message of a newer protocol
// ("BSTAR<n> ...", n > WireVersion), so that a peer that runs a newer
// release is named as such instead of being dropped as garbage.
func newerWire(frame []byte) (int, bool) {
	rest, ok := bytes.CutPrefix(frame, []byte("BSTAR"))
	if !ok {
		return 0, false
	}
	n := 0
	for i, c := range rest {
		if c == ' ' && i > 0 {
			return n, n > WireVersion
		}
		if c < '0' || c > '9' || n > 1000 {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return 0, false
}

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
