package client

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// A submit answered "outcome unknown" (a raft leader lost its leadership
// with it in flight: it may be stored) is sent again with its key; when no
// node serves afterwards (the group has lost its quorum, the election
// outlasts the tries), the resend fails with ErrUnavailable, and the
// error gives the key, as README (Refusal kinds, outcome unknown)
// promises: a caller who gave no key can resend without making a second
// ticket.
func TestSubmitUncertainThenUnavailableKeepsKey(t *testing.T) {
	// Then the node lost its leadership: the gate refuses, no key.
	f := uncertainFirst(t, func([][]byte) [][]byte { return frames("500", "not active") })
	c := newClient(t, 100*time.Millisecond, 2, f.endpoint)
	_, err := c.Submit(testCtx(t), "echo", frames("job"), SubmitOptions{})
	if err == nil {
		t.Fatal("Submit succeeded; want it to run out of tries")
	}
	reqs := f.requests() // ["" | MDPC01 | service | key | ...]
	if len(reqs) == 0 {
		t.Fatal("no submit reached the broker")
	}
	key := string(reqs[0][3])
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("err %v is not ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), key) {
		t.Fatalf("Submit = %v: the error does not give the idempotency key %q of a submit the broker said may be stored", err, key)
	}
}
