package client

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// ListEach follows both ways a listing continues (a full page: after its
// last row; a scan stopped on the node's bound: after the cursor), ends
// on a short page without a cursor, and stops at fn's first error.
func TestListEachPages(t *testing.T) {
	tickets := []string{"t1", "t2", "t3", "t4", "t5"}
	var (
		mu     sync.Mutex
		afters []string // the After of each request, in order
	)
	f := newFake(t, func(service string, body [][]byte, _ int) [][]byte {
		if service != tsp.SvcList || len(body) != 4 {
			return frames("400", "unexpected")
		}
		after := string(body[2])
		mu.Lock()
		afters = append(afters, after)
		mu.Unlock()
		row := func(tk string) string { return fmt.Sprintf("%s svc failed 3", tk) }
		switch after {
		case "":
			return frames("200", row("t1"), row("t2")) // a full page
		case "t2":
			return frames("200", "more t3") // the scan's bound, nothing matched
		case "t3":
			return frames("200", row("t4"), row("t5"))
		case "t5":
			return frames("200") // the end
		}
		return frames("400", "bad cursor "+after)
	})
	c := newClient(t, time.Second, 1, f.endpoint)
	var got []string
	err := c.ListEach(testCtx(t), ListOptions{Service: "svc", State: "failed", Limit: 2}, func(r TicketInfo) error {
		got = append(got, r.Ticket)
		return nil
	})
	if err != nil || !slices.Equal(got, slices.Delete(slices.Clone(tickets), 2, 3)) {
		t.Fatalf("ListEach: %q, %v; want t1 t2 t4 t5 (t3 was the cursor, not a row)", got, err)
	}
	mu.Lock()
	if want := []string{"", "t2", "t3", "t5"}; !slices.Equal(afters, want) {
		t.Fatalf("requests after %q, want %q", afters, want)
	}
	mu.Unlock()
	stop := errors.New("enough")
	got = got[:0]
	err = c.ListEach(testCtx(t), ListOptions{Limit: 2}, func(r TicketInfo) error {
		got = append(got, r.Ticket)
		return stop
	})
	if !errors.Is(err, stop) || len(got) != 1 {
		t.Fatalf("ListEach with fn failing: %q, %v; want one row and fn's error", got, err)
	}
}
