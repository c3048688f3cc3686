package client

import (
	"errors"
	"testing"
	"time"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// resendBroker leaves the first lifecycle request unanswered (as a broker
// whose commit outlasts the client's try, the answer going to the dropped
// connection), answers the resend with refusal, and a status lookup with
// state.
func resendBroker(t *testing.T, refusal [][]byte, state string) *fakeBroker {
	return newFake(t, func(service string, _ [][]byte, n int) [][]byte {
		if service == tsp.SvcStatus {
			return frames("200", state, "0", "svc", "2026-01-02T15:04:05Z", "2026-01-02T15:04:05Z", "")
		}
		if n == 1 {
			return nil
		}
		return refusal
	})
}

// A cancel, retry or purge the client sent again is judged by the
// ticket's state, not by the resend's refusal alone: the first send may
// have been applied (TestLifecycleCommandResentFound in internal/e2e shows
// it through the binary). A refusal of a state the first send cannot have
// made, or of a request sent once, stands.
func TestLifecycleResendJudgedByState(t *testing.T) {
	finished := frames("400", tsp.Finished.Text("cancel: the ticket is finished already"))
	notFailed := frames("400", tsp.NotFailed.Text("retry: only a failed ticket can be retried"))
	unknown := frames("400", string(tsp.UnknownTicket))
	for _, tc := range []struct {
		name    string
		refusal [][]byte
		state   string
		op      func(c *Client) error
		want    error // nil: success
	}{
		{"cancel found cancelled", finished, "cancelled", func(c *Client) error { return c.Cancel(testCtx(t), ticket) }, nil},
		{"cancel found done", finished, "done", func(c *Client) error { return c.Cancel(testCtx(t), ticket) }, ErrFinished},
		{"retry found pending", notFailed, "pending", func(c *Client) error { return c.Retry(testCtx(t), ticket) }, nil},
		{"retry found failed", notFailed, "failed", func(c *Client) error { return c.Retry(testCtx(t), ticket) }, ErrNotFailed},
		{"purge found unknown", unknown, "", func(c *Client) error { return c.Purge(testCtx(t), ticket) }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := resendBroker(t, tc.refusal, tc.state)
			c := newClient(t, 300*time.Millisecond, 3, f.endpoint)
			err := tc.op(c)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("after a resend: %v, want %v", err, tc.want)
			}
			if n := len(f.requests()); n < 2 {
				t.Fatalf("%d requests reached the broker, want the first and its resend", n)
			}
		})
	}
	// Sent once, the refusal stands whatever the state.
	f := newFake(t, func(service string, _ [][]byte, _ int) [][]byte {
		if service == tsp.SvcStatus {
			return frames("200", "cancelled", "0", "svc", "2026-01-02T15:04:05Z", "2026-01-02T15:04:05Z", "")
		}
		return finished
	})
	c := newClient(t, time.Second, 3, f.endpoint)
	if err := c.Cancel(testCtx(t), ticket); !errors.Is(err, ErrFinished) {
		t.Fatalf("cancel sent once, refused finished: %v, want ErrFinished", err)
	}
	if n := len(f.requests()); n != 1 {
		t.Fatalf("cancel sent once made %d requests, want 1 (no lookup)", n)
	}
}

// A send answered "not ready" (a node taking over) or "not active" was
// not applied: the refusal of the send after it stands (found by a
// reviewer: every send counted, so a retry of a ticket that never failed,
// or a purge of one that never existed, succeeded during any failover).
func TestLifecycleRefusalAfterNotReadyStands(t *testing.T) {
	for _, first := range [][]byte{[]byte("not ready: taking over, retry"), []byte(string(tsp.NotActive) + ": passive")} {
		for _, tc := range []struct {
			name    string
			refusal [][]byte
			op      func(c *Client) error
			want    error
		}{
			{"retry", frames("400", tsp.NotFailed.Text("retry: only a failed ticket can be retried")), func(c *Client) error { return c.Retry(testCtx(t), ticket) }, ErrNotFailed},
			{"purge", frames("400", string(tsp.UnknownTicket)), func(c *Client) error { return c.Purge(testCtx(t), ticket) }, ErrUnknown},
			{"cancel", frames("400", tsp.Finished.Text("cancel: the ticket is finished already")), func(c *Client) error { return c.Cancel(testCtx(t), ticket) }, ErrFinished},
		} {
			t.Run(tc.name+" after "+string(first), func(t *testing.T) {
				f := newFake(t, func(service string, _ [][]byte, n int) [][]byte {
					if service == tsp.SvcStatus {
						return frames("200", "cancelled", "0", "svc", "2026-01-02T15:04:05Z", "2026-01-02T15:04:05Z", "")
					}
					if n == 1 {
						return [][]byte{[]byte("500"), first}
					}
					return tc.refusal
				})
				c := newClient(t, time.Second, 3, f.endpoint)
				if err := tc.op(c); !errors.Is(err, tc.want) {
					t.Fatalf("refused after a %q answer: %v, want %v", first, err, tc.want)
				}
			})
		}
	}
}
