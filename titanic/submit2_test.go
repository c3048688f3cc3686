package titanic

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

var optNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func TestParseSubmitOptions(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want store.Lifecycle
	}{
		{"", store.Lifecycle{}},
		{"  ", store.Lifecycle{}},
		{"priority=normal", store.Lifecycle{}},
		{"delay=0s", store.Lifecycle{}}, // due at once: no delay
		{"at=2020-01-01T00:00:00Z", store.Lifecycle{}},
		{"delay=30s", store.Lifecycle{Due: optNow.Add(30 * time.Second)}},
		{"at=2030-01-02T05:00:00+01:00 priority=high", store.Lifecycle{Due: time.Date(2030, 1, 2, 4, 0, 0, 0, time.UTC), Priority: store.PriorityHigh}},
		{"priority=low ttl=1h", store.Lifecycle{Priority: store.PriorityLow, Deadline: optNow.Add(time.Hour)}},
		{"deadline=2030-01-03T00:00:00Z delay=1m", store.Lifecycle{Due: optNow.Add(time.Minute), Deadline: time.Date(2030, 1, 3, 0, 0, 0, 0, time.UTC)}},
		{"attempts=3 backoff=1s,1m", store.Lifecycle{Retry: store.RetryPolicy{MaxAttempts: 3, Base: time.Second, Max: time.Minute}}},
		{"backoff=250ms", store.Lifecycle{Retry: store.RetryPolicy{Base: 250 * time.Millisecond}}},
	} {
		got, err := ParseSubmitOptions(tc.in, optNow)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if !got.Due.Equal(tc.want.Due) || !got.Deadline.Equal(tc.want.Deadline) || got.Priority != tc.want.Priority || got.Retry != tc.want.Retry {
			t.Errorf("%q = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseSubmitOptionsRefused(t *testing.T) {
	for _, tc := range []struct{ in, says string }{
		{"colour=red", `unknown option "colour"`},
		{"delay", "key=value"},
		{"delay=", "key=value"},
		{"delay=-1s", "negative"},
		{"delay=soon", "duration"},
		{"delay=1s delay=2s", "twice"},
		{"delay=1s at=2030-01-02T03:04:06Z", "one of them"},
		{"ttl=1m deadline=2030-01-03T00:00:00Z", "one of them"},
		{"ttl=-5m", "negative"},
		{"delay=87600h", "more than"},
		{"at=2100-01-01T00:00:00Z", "ahead"},
		{"at=tomorrow", "RFC 3339"},
		{"deadline=2029-12-31T00:00:00Z", "has passed"},
		{"delay=2h ttl=1h", "not after the due time"},
		{"priority=urgent", "priority"},
		{"attempts=0", "attempts"},
		{"attempts=1001", "attempts"},
		{"attempts=x", "attempts"},
		{"backoff=0s", "above 0"},
		{"backoff=1m,1s", "below the base"},
		{"backoff=1s,", "duration"},
		{"backoff=200h", "more than"},
		{"backoff=25h", "more than 1 day"},
		{"delay=8785h", "more than 366 days"},
		{"deadline=2031-01-04T00:00:00Z", "366 days ahead"},
		{"ttl=0s", "above 0"},
		{"backoff=,1s", "BASE[,MAX]"},
		{strings.Repeat("x", 2000), "bytes"},
	} {
		_, err := ParseSubmitOptions(tc.in, optNow)
		if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%q: %v, want a bad request saying %q", tc.in, err, tc.says)
		}
	}
}

func TestParseSubmit2(t *testing.T) {
	fr := func(s ...string) [][]byte {
		out := make([][]byte, len(s))
		for i, x := range s {
			out[i] = []byte(x)
		}
		return out
	}
	r, err := parseSubmit2(fr("", "priority=high", "echo", "a", "b"), optNow)
	if err != nil || r.idemKey != "" || r.service != "echo" || len(r.body) != 2 || r.lifecycle.Priority != store.PriorityHigh {
		t.Fatalf("unkeyed submit2: %+v, %v", r, err)
	}
	r, err = parseSubmit2(fr("k1", "", "echo", ""), optNow)
	if err != nil || r.idemKey != "k1" || !r.lifecycle.IsZero() {
		t.Fatalf("keyed submit2 without options: %+v, %v", r, err)
	}
	for _, bad := range [][][]byte{
		nil,
		fr("k"),
		fr("k", ""),
		fr("k", "", "echo"),           // no body frame
		fr("k", "", "titanic.x", "b"), // internal service
		fr(strings.Repeat("k", 129), "", "e", "b"), // key too long
		fr("k", "nice=yes", "echo", "b"),
	} {
		if r, err := parseSubmit2(bad, optNow); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%q: accepted as %+v", bad, r)
		}
	}
}

func TestEchoKey(t *testing.T) {
	out := [][]byte{[]byte("200"), []byte("t"), []byte("new")}
	if got := echoKey(tsp.SvcSubmit2, out, [][]byte{{}, []byte("o")}); len(got) != 4 || len(got[3]) != 0 {
		t.Errorf("submit2 without a key: %q, want the empty key frame last", got)
	}
	if got := echoKey(tsp.SvcSubmit, out[:2], [][]byte{{}, []byte("o")}); len(got) != 2 {
		t.Errorf("submit with an empty key: %q, want no key frame", got)
	}
	if got := echoKey(tsp.SvcRequest, out[:2], [][]byte{[]byte("k")}); len(got) != 2 {
		t.Errorf("titanic.request: %q, want no key frame", got)
	}
}
