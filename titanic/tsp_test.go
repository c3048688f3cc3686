package titanic

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

// FuzzParseTSP feeds every TSP request parser frames cut from fuzz bytes
// (split on 0x00); none may panic, and accepted input must be well formed.
func FuzzParseTSP(f *testing.F) {
	f.Add([]byte("echo\x00hello"))
	f.Add([]byte("key\x00echo\x00\x00"))
	f.Add([]byte("0123456789abcdef0123456789abcdef"))
	f.Add([]byte("svc\x00done\x000123456789abcdef0123456789abcdef\x0010"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, in []byte) {
		frames := bytes.Split(in, []byte{0})
		for _, keyed := range []bool{false, true} {
			if r, err := parseSubmit(frames, keyed); err == nil {
				if r.service == "" || len(r.body) == 0 || (keyed && r.idemKey == "") || !utf8.ValidString(r.service) {
					t.Fatalf("accepted a bad submit: %+v", r)
				}
			}
		}
		if id, err := parseTicket(frames); err == nil && id.IsZero() && len(frames[0]) != 32 && len(frames[0]) != 36 {
			t.Fatalf("accepted ticket %q", frames[0])
		}
		if f, err := parseList(frames); err == nil && (f.Limit < 1 || f.Limit > MaxListLimit) {
			t.Fatalf("list limit %d out of range", f.Limit)
		}
	})
}

// A service name is text: it ends up in logs, metrics labels and JSON.
func TestSubmitServiceNotUTF8(t *testing.T) {
	for _, keyed := range []bool{false, true} {
		frames := [][]byte{[]byte("ec\xffho"), []byte("body")}
		if keyed {
			frames = append([][]byte{[]byte("k1")}, frames...)
		}
		if r, err := parseSubmit(frames, keyed); err == nil {
			t.Errorf("keyed=%v: accepted service %q", keyed, r.service)
		}
	}
}
