package client

import (
	"strings"
	"testing"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// README (Sharding) says an unkeyed submit that a shard answered "outcome
// unknown" and then could not serve fails "with the error naming that
// shard and the submit's key (the random one, when none was given), to
// resend it with". Resent with that key through the same Sharded, as a
// keyed submit, it goes to the key's home shard (rendezvous), not to the
// shard that may hold it: the random key was drawn by the shard's Client
// without regard to the shard, so for n shards the resend lands elsewhere
// with probability (n-1)/n, and makes the second ticket the stop was meant
// to prevent. Each round below is a fresh pair of shards whose first
// submit goes to shard 0; the resend must reach shard 0 every time (a
// correct client passes every round; this one fails a round with
// probability 1/2, all 12 with 1-2^-12).
func TestShardedUncertainResendWithKeyReachesHoldingShard(t *testing.T) {
	for round := range 12 {
		s, uncertain, other := uncertainShards(t)
		_, err := s.Submit(testCtx(t), "echo", frames("job"), SubmitOptions{})
		first := uncertain.requests()
		if err == nil || len(first) == 0 {
			t.Fatalf("round %d: Submit = %v with %d submits to shard 0: want shard 0's uncertain failure", round, err, len(first))
		}
		key := string(first[0][3])
		tk, err := s.Submit(testCtx(t), "echo", frames("job"), SubmitOptions{IdemKey: key})
		if got := other.requests(); len(got) > 0 {
			t.Fatalf("round %d: resending with key %q from the error (shard 0 may hold it) went to shard %d, which made ticket %q (err %v): a second ticket for one job",
				round, key, s.ShardFor(key), tk, err)
		}
		s.Close()
	}
}

// The same when the submit moved on: shard 0 is not active (a failure
// that stored nothing), so the submit goes to shard 1, which says it may
// hold it. The key in the error is the one shard 1 got, and it must be
// homed on shard 1 (a key homed on shard 0 would send the resend there,
// making a second ticket once shard 0 serves again). Each try draws its
// own key, for its own shard.
func TestShardedUncertainAfterMoveOnKeyHomedOnHoldingShard(t *testing.T) {
	for round := range 12 {
		notActive := newFake(t, func(service string, body [][]byte, n int) [][]byte {
			if service == tsp.SvcRole {
				return tsp.EncodeRole(tsp.Role{Serving: true})
			}
			return frames("500", "not active")
		})
		uncertain := uncertainFirst(t, func([][]byte) [][]byte { return frames("500", "not active") })
		s, err := NewSharded([]Config{
			{Brokers: []string{notActive.endpoint}, Timeout: shardTestTimeout, Retries: 1},
			{Brokers: []string{uncertain.endpoint}, Timeout: shardTestTimeout, Retries: 1},
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Submit(testCtx(t), "echo", frames("job"), SubmitOptions{})
		tried, held := notActive.requests(), uncertain.requests()
		if err == nil || len(tried) == 0 || len(held) == 0 {
			t.Fatalf("round %d: Submit = %v with %d submits to shard 0 and %d to shard 1: want shard 1's uncertain failure after shard 0's", round, err, len(tried), len(held))
		}
		key0, key1 := string(tried[0][3]), string(held[0][3])
		if s.ShardFor(key0) != 0 || s.ShardFor(key1) != 1 {
			t.Fatalf("round %d: shard 0 got key %q (home %d), shard 1 key %q (home %d): want each homed on the shard it went to", round, key0, s.ShardFor(key0), key1, s.ShardFor(key1))
		}
		if !strings.Contains(err.Error(), key1) || !strings.Contains(err.Error(), "shard 1") {
			t.Fatalf("round %d: Submit = %v: want the error to name shard 1 and key %q", round, err, key1)
		}
		s.Close()
	}
}
