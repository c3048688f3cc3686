package client

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// An unkeyed submit through Sharded gets a random key from the shard's
// Client. When that shard's broker answers "outcome unknown" (it may have
// stored the submit) and no node of the shard serves the resend, Submit
// fails with the key in the error, so that the caller can resend "without
// making a second ticket" (README, Refusal kinds). Sharded must not then
// give the job to the next shard under a new random key: a second ticket,
// while the first shard may hold the first one and run it once it serves
// again, and the caller told only of the second. It returns the shard's
// error, naming the shard and the key.
func TestShardedUnkeyedSubmitNoFallbackAfterUncertain(t *testing.T) {
	s, uncertain, other := uncertainShards(t)
	// The first unkeyed submit of a Sharded goes to shard 0 (round robin
	// from turn 0).
	checkHeldByShard0(t, s, uncertain, other, SubmitOptions{})
}

// The same for a keyed submit with WithKeyedFallback whose home shard said
// the outcome is unknown: the fallback shard, which does not know the key,
// would make a second ticket for it.
func TestShardedKeyedFallbackStopsAfterUncertain(t *testing.T) {
	s, uncertain, other := uncertainShards(t, WithKeyedFallback())
	key := ""
	for i := 0; key == ""; i++ {
		if k := "k-" + strconv.Itoa(i); s.ShardFor(k) == 0 {
			key = k
		}
	}
	checkHeldByShard0(t, s, uncertain, other, SubmitOptions{IdemKey: key})
}

// shardTestTimeout is the Timeout of the shards' Clients (of one try
// each) in the tests of a submit a shard said it may hold. It must be
// long enough on a loaded machine: a try not answered within it is taken
// for a node that is not there (the uncertain answer, when it comes, is
// lost with the try's socket), and a Client resends "outcome unknown"
// only within its Retries x Timeout; the submit then rightly goes to the
// other shard. With tries of 100ms, a run under CPU load lost the
// uncertain answer in about one run in three, and with 500ms one run in
// fifteen had no submit reach shard 0 at all. The tries' time is also how
// long a Client asks a node answering "not active" again, paid once or
// twice a round: hence one try per Client.
const shardTestTimeout = time.Second

// uncertainShards is a Sharded client of two shards: shard 0's node
// answers the first submit "outcome unknown" and then refuses as not
// active, shard 1's takes every submit.
func uncertainShards(t *testing.T, opts ...ShardOption) (s *Sharded, uncertain, other *fakeBroker) {
	t.Helper()
	uncertain = uncertainFirst(t, func([][]byte) [][]byte { return frames("500", "not active") })
	other = newFake(t, func(service string, body [][]byte, n int) [][]byte {
		if service == tsp.SvcRole {
			return tsp.EncodeRole(tsp.Role{Serving: true})
		}
		return [][]byte{[]byte("200"), []byte(ticket), []byte("new"), body[0]}
	})
	s, err := NewSharded([]Config{
		{Brokers: []string{uncertain.endpoint}, Timeout: shardTestTimeout, Retries: 1},
		{Brokers: []string{other.endpoint}, Timeout: shardTestTimeout, Retries: 1},
	}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, uncertain, other
}

// checkHeldByShard0 submits with opt, which goes to shard 0 first, and
// wants shard 0's ErrUnavailable naming the shard and the key, and
// nothing sent to shard 1.
func checkHeldByShard0(t *testing.T, s *Sharded, uncertain, other *fakeBroker, opt SubmitOptions) {
	t.Helper()
	tk, err := s.Submit(testCtx(t), "echo", frames("job"), opt)
	first := uncertain.requests()
	if len(first) == 0 {
		t.Fatalf("Submit = %q, %v: shard 0 got no submit; the test assumes it goes there first", tk, err)
	}
	key := string(first[0][3])
	if got := other.requests(); len(got) > 0 {
		t.Fatalf("Submit = %q, %v: after shard 0 said the submit under key %q may be stored, the job was submitted again to shard 1 under key %q: a possible second ticket", tk, err, key, got[0][3])
	}
	if err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "shard 0") || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Submit = %q, %v: want shard 0's ErrUnavailable naming shard 0 and giving key %q", tk, err, key)
	}
}
