package client

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzAnswer feeds the parsers of broker answers (status codes, status
// and list bodies) frames cut from fuzz bytes (split on 0x00): none may
// panic, and every error must be one a caller can branch on.
func FuzzAnswer(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		rep := bytes.Split(in, []byte{0})
		known := func(err error) bool {
			for _, s := range []error{ErrPending, ErrUnknown, ErrRejected, ErrFailed, ErrServer, ErrProtocol} {
				if errors.Is(err, s) {
					return true
				}
			}
			return false
		}
		for _, submit := range []bool{false, true} {
			if err := status(rep, "t", submit); err != nil && !known(err) {
				t.Fatalf("status(%q) = %v: not a sentinel", rep, err)
			}
		}
		if st, err := parseStatus("t", rep); err != nil && !known(err) {
			t.Fatalf("parseStatus: %v", err)
		} else if err == nil && st.Attempts < 0 {
			t.Fatalf("negative attempts: %+v", st)
		}
		ls, _, err := parseList(rep)
		if err != nil && !known(err) {
			t.Fatalf("parseList: %v", err)
		}
		for _, l := range ls {
			if l.Ticket == "" || l.Attempts < 0 {
				t.Fatalf("bad list row %+v from %q", l, rep)
			}
		}
	})
}
