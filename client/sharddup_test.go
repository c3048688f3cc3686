package client

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// An unkeyed submit through Sharded gets a random key from the shard's
// Client. When that shard's broker answers "outcome unknown" (it may have
// stored the submit) and no node of the shard serves the resend, Submit
// now fails with the key in the error, so that the caller can resend
// "without making a second ticket" (README, Refusal kinds). Sharded reads
// the error as ErrShardUnavailable and submits the same job to the next
// shard under a new random key: a second ticket, while the first shard may
// hold the first one and run it once it serves again. The caller is told
// only of the second. Sharded should not fall back once a shard said the
// outcome is unknown; it should return that error (with its key and shard).
func TestShardedUnkeyedSubmitNoFallbackAfterUncertain(t *testing.T) {
	uncertain := uncertainFirst(t, func([][]byte) [][]byte { return frames("500", "not active") })
	other := newFake(t, func(service string, body [][]byte, n int) [][]byte {
		if service == tsp.SvcRole {
			return tsp.EncodeRole(tsp.Role{Serving: true})
		}
		return [][]byte{[]byte("200"), []byte(ticket), []byte("new"), body[0]}
	})
	s, err := NewSharded([]Config{
		{Brokers: []string{uncertain.endpoint}, Timeout: 100 * time.Millisecond, Retries: 2},
		{Brokers: []string{other.endpoint}, Timeout: 100 * time.Millisecond, Retries: 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	// The first unkeyed submit of a Sharded goes to shard 0 (round robin
	// from turn 0).
	tk, err := s.Submit(testCtx(t), "echo", frames("job"), SubmitOptions{})
	first := uncertain.requests()
	if len(first) == 0 {
		t.Fatalf("Submit = %q, %v: shard 0 got no submit; the test assumes round robin starts there", tk, err)
	}
	key := string(first[0][3])
	if got := other.requests(); len(got) > 0 {
		t.Fatalf("Submit = %q, %v: after shard 0 said the submit under key %q may be stored, the job was submitted again to shard 1 under key %q: a possible second ticket", tk, err, key, got[0][3])
	}
	if err == nil || !strings.Contains(err.Error(), key) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Submit = %q, %v: want shard 0's ErrUnavailable giving key %q", tk, err, key)
	}
}
