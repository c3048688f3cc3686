package main

import (
	"strings"
	"testing"

	"github.com/titanicmq/titanic/client"
)

// A done ticket whose first attempt failed shows that failure as an
// earlier attempt's, not as the reason of its state; a failed ticket's
// reason is its state's.
func TestStatusReasonLabel(t *testing.T) {
	for _, tc := range []struct {
		state, want, not string
	}{
		{"done", "last failed attempt: lease timeout", "reason:"},
		{"pending", "last failed attempt: lease timeout", "reason:"},
		{"failed", "reason:   lease timeout", "last failed attempt"},
		{"cancelled", "reason:   lease timeout", "last failed attempt"},
	} {
		var b strings.Builder
		printStatus(&b, "t", client.Status{State: tc.state, Reason: "lease timeout", Attempts: 2})
		if out := b.String(); !strings.Contains(out, tc.want) || strings.Contains(out, tc.not) {
			t.Errorf("%s:\n%s\nwant %q, not %q", tc.state, out, tc.want, tc.not)
		}
	}
}
