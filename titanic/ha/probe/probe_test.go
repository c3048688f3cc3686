package probe_test

import (
	"errors"
	"testing"

	"github.com/titanicmq/titanic/titanic/ha/probe"
)

func TestParse(t *testing.T) {
	fr := func(s ...string) [][]byte {
		out := make([][]byte, len(s))
		for i, x := range s {
			out[i] = []byte(x)
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		in    [][]byte
		want  probe.Answer
		isErr bool
	}{
		{"active pair node", probe.Encode(probe.Answer{Serving: true, Star: "active"}), probe.Answer{Serving: true, Star: "active"}, false},
		{"passive pair node", probe.Encode(probe.Answer{Star: "passive"}), probe.Answer{Star: "passive"}, false},
		{"waiting pair node", probe.Encode(probe.Answer{Star: "primary", Why: "not active: waiting"}), probe.Answer{Star: "primary", Why: "not active: waiting"}, false},
		{"unknown frames ignored", fr("200", "serving=false", "later=1"), probe.Answer{}, false},
		{"group follower", probe.Encode(probe.Answer{}), probe.Answer{}, false},
		{"single mode: unknown titanic service", fr("400", "unknown titanic service"), probe.Answer{Serving: true}, false},
		{"draining", fr("500", "not active"), probe.Answer{}, false},
		{"200 without roles", fr("200"), probe.Answer{Serving: true}, false},
		{"empty", nil, probe.Answer{}, true},
		{"odd status", fr("302"), probe.Answer{}, true},
	} {
		got, err := probe.Parse(tc.in)
		if (err != nil) != tc.isErr || (err != nil && !errors.Is(err, probe.ErrMalformed)) {
			t.Errorf("%s: err = %v, want error %t", tc.name, err, tc.isErr)
		}
		if got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
