package tsp_test

import (
	"errors"
	"testing"

	"github.com/titanicmq/titanic/titanic/tsp"
)

func TestParseRole(t *testing.T) {
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
		want  tsp.Role
		isErr bool
	}{
		{"active pair node", tsp.EncodeRole(tsp.Role{Serving: true, Star: "active"}), tsp.Role{Serving: true, Star: "active"}, false},
		{"passive pair node", tsp.EncodeRole(tsp.Role{Star: "passive"}), tsp.Role{Star: "passive"}, false},
		{"waiting pair node", tsp.EncodeRole(tsp.Role{Star: "primary", Why: "not active: waiting"}), tsp.Role{Star: "primary", Why: "not active: waiting"}, false},
		{"unknown frames ignored", fr("200", "serving=false", "later=1"), tsp.Role{}, false},
		{"group follower", tsp.EncodeRole(tsp.Role{}), tsp.Role{}, false},
		{"single mode: unknown titanic service", fr("400", "unknown titanic service"), tsp.Role{Serving: true}, false},
		{"draining", fr("500", "not active"), tsp.Role{}, false},
		{"200 without roles", fr("200"), tsp.Role{Serving: true}, false},
		{"empty", nil, tsp.Role{}, true},
		{"odd status", fr("302"), tsp.Role{}, true},
	} {
		got, err := tsp.ParseRole(tc.in)
		if (err != nil) != tc.isErr || (err != nil && !errors.Is(err, tsp.ErrMalformedRole)) {
			t.Errorf("%s: err = %v, want error %t", tc.name, err, tc.isErr)
		}
		if got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
