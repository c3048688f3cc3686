package zsock

import (
	"testing"
	"time"
)

// TestPollTimeout: zmq_poll counts whole milliseconds, so what is left is
// rounded up (a part of a millisecond would poll for none, and the loop
// would spin until the deadline), and a deadline passed is no wait.
func TestPollTimeout(t *testing.T) {
	now := time.Unix(1000, 0)
	for _, c := range []struct {
		left, want time.Duration
	}{
		{-time.Second, 0},
		{0, 0},
		{time.Nanosecond, time.Millisecond},
		{time.Millisecond, time.Millisecond},
		{1500 * time.Microsecond, 2 * time.Millisecond},
	} {
		if got := PollTimeout(now, now.Add(c.left)); got != c.want {
			t.Errorf("PollTimeout with %v left = %v, want %v", c.left, got, c.want)
		}
	}
}
