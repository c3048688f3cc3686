package client

import (
	"testing"
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
