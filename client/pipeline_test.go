package client

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// ticketOf is the ticket the fake brokers give a key: any broker gives
// the same one, as a replicated store does for a resent key.
func ticketOf(key []byte) string {
	sum := md5.Sum(key)
	return hex.EncodeToString(sum[:])
}

// keyedAnswer answers a titanic.submit request body [key | service |
// body...] as titanic does: 200, the ticket, new, and the key echoed.
func keyedAnswer(body [][]byte) [][]byte {
	return [][]byte{[]byte("200"), []byte(ticketOf(body[0])), []byte("new"), body[0]}
}

func newPipeClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// eventually waits (bounded) until cond holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// submitN starts n pipelined submits of "echo" with keys k0..k(n-1).
func submitN(t *testing.T, c *Client, n int) []*SubmitFuture {
	t.Helper()
	fs := make([]*SubmitFuture, n)
	for i := range fs {
		f, err := c.SubmitAsync(testCtx(t), "echo", frames(fmt.Sprint("body", i)), SubmitOptions{IdemKey: fmt.Sprint("k", i)})
		if err != nil {
			t.Fatalf("SubmitAsync %d: %v", i, err)
		}
		fs[i] = f
	}
	return fs
}

// checkTickets checks every future ended with its key's ticket.
func checkTickets(t *testing.T, fs []*SubmitFuture) {
	t.Helper()
	for i, f := range fs {
		got, err := f.Ticket(testCtx(t))
		if err != nil || got != ticketOf([]byte(f.Key())) {
			t.Fatalf("future %d (key %s) = %q, %v; want %s", i, f.Key(), got, err, ticketOf([]byte(f.Key())))
		}
	}
}

// Answers come back in the reverse order of the requests: each future
// gets its own ticket, matched by the key the answer echoes.
func TestSubmitAsyncOutOfOrder(t *testing.T) {
	const n = 20
	f := newFake(t, func(string, [][]byte, int) [][]byte { return nil })
	c := newPipeClient(t, Config{Brokers: []string{f.endpoint}, Timeout: 10 * time.Second})
	fs := submitN(t, c, n)
	eventually(t, "all requests in flight at once", func() bool { return len(f.requests()) == n })
	reqs := f.requests()
	for i := n - 1; i >= 0; i-- {
		f.answerLater(i, tsp.SvcSubmit, keyedAnswer(reqs[i][3:]))
	}
	if err := c.Flush(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	checkTickets(t, fs)
	if s := c.Stats(); s.Retries != 0 || s.Calls != n {
		t.Fatalf("stats = %+v, want %d calls and no retry", s, n)
	}
}

// The broker loses the first answer to every key: each submit times out
// and is sent again with the same key, and ends with its ticket.
func TestSubmitAsyncTimeoutResendsSameKey(t *testing.T) {
	const n = 10
	seen := map[string]int{}
	f := newFake(t, func(_ string, body [][]byte, _ int) [][]byte {
		k := string(body[0])
		seen[k]++ // the fake's goroutine only
		if seen[k] == 1 {
			return nil
		}
		return keyedAnswer(body)
	})
	c := newPipeClient(t, Config{Brokers: []string{f.endpoint}, Timeout: 150 * time.Millisecond, Retries: 5})
	fs := submitN(t, c, n)
	checkTickets(t, fs)
	tries := map[string]int{}
	for _, r := range f.requests() {
		tries[string(r[3])]++
	}
	for i := range n {
		if k := fmt.Sprint("k", i); tries[k] != 2 {
			t.Fatalf("key %s sent %d times, want 2 (all tries: %v)", k, tries[k], tries)
		}
	}
	if s := c.Stats(); s.Retries == 0 {
		t.Fatalf("stats = %+v, want retries", s)
	}
}

// Mid-stream, the serving broker stops serving: it refuses ("not active")
// or goes silent. Every submit it did not take is sent to the other
// broker with its key; none is lost, none gets another key.
func TestSubmitAsyncFailoverMidStream(t *testing.T) {
	for _, how := range []string{"refuses", "silent"} {
		t.Run(how, func(t *testing.T) {
			const n, served = 60, 25
			first := newFake(t, func(service string, body [][]byte, k int) [][]byte {
				switch {
				case service == tsp.SvcRole:
					return tsp.EncodeRole(tsp.Role{Serving: k == 1})
				case k <= served:
					return keyedAnswer(body)
				case how == "refuses":
					return frames("500", "not active")
				}
				return nil
			})
			second := newFake(t, func(service string, body [][]byte, k int) [][]byte {
				if service == tsp.SvcRole {
					return tsp.EncodeRole(tsp.Role{Serving: k > 1})
				}
				return keyedAnswer(body)
			})
			// The first question finds the first broker serving, the
			// next ones the second.
			c := newPipeClient(t, Config{Brokers: []string{first.endpoint, second.endpoint}, Timeout: 300 * time.Millisecond, Retries: 3, MaxPending: 16})
			fs := submitN(t, c, n)
			checkTickets(t, fs)
			keys := map[string]bool{}
			for _, r := range append(first.requests(), second.requests()...) {
				keys[string(r[3])] = true
			}
			if len(keys) != n {
				t.Fatalf("%d distinct keys sent, want %d", len(keys), n)
			}
			if len(second.requests()) < n-served {
				t.Fatalf("second broker got %d submits, want at least %d", len(second.requests()), n-served)
			}
			if s := c.Stats(); s.Failovers == 0 {
				t.Fatalf("stats = %+v, want a failover", s)
			}
		})
	}
}

// With MaxPending submits unfinished, SubmitAsync blocks until one ends or
// its ctx does; nothing more is sent meanwhile.
func TestSubmitAsyncWindowFull(t *testing.T) {
	f := newFake(t, func(string, [][]byte, int) [][]byte { return nil })
	c := newPipeClient(t, Config{Brokers: []string{f.endpoint}, Timeout: 10 * time.Second, MaxPending: 4})
	fs := submitN(t, c, 4)
	ctx, cancel := context.WithTimeout(testCtx(t), 100*time.Millisecond)
	defer cancel()
	if _, err := c.SubmitAsync(ctx, "echo", frames("x"), SubmitOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SubmitAsync on a full window = %v, want context.DeadlineExceeded", err)
	}
	eventually(t, "4 requests", func() bool { return len(f.requests()) == 4 })
	blocked := make(chan *SubmitFuture)
	go func() {
		fut, err := c.SubmitAsync(testCtx(t), "echo", frames("y"), SubmitOptions{IdemKey: "k4"})
		if err != nil {
			t.Error(err)
		}
		blocked <- fut
	}()
	select {
	case <-blocked:
		t.Fatal("SubmitAsync returned with the window full")
	case <-time.After(50 * time.Millisecond):
	}
	if got := len(f.requests()); got != 4 {
		t.Fatalf("broker got %d requests with a window of 4", got)
	}
	reqs := f.requests()
	f.answerLater(2, tsp.SvcSubmit, keyedAnswer(reqs[2][3:]))
	fifth := <-blocked
	eventually(t, "the fifth request", func() bool { return len(f.requests()) == 5 })
	reqs = f.requests()
	for _, i := range []int{0, 1, 3, 4} {
		f.answerLater(i, tsp.SvcSubmit, keyedAnswer(reqs[i][3:]))
	}
	checkTickets(t, append(fs, fifth))
}

// A broker that does not echo keys ([200 | ticket | new]): the client
// notices when two are in flight, and goes on one at a time.
func TestSubmitAsyncLegacyBroker(t *testing.T) {
	f := newFake(t, func(_ string, body [][]byte, _ int) [][]byte {
		return frames("200", ticketOf(body[0]), "new")
	})
	c := newPipeClient(t, Config{Brokers: []string{f.endpoint}, Timeout: 5 * time.Second})
	fs := submitN(t, c, 30)
	checkTickets(t, fs)
}

// A keyed busy answer is retried after a pause; a keyed 400 ends the
// submit with ErrRejected; two submits with one key get one ticket.
func TestSubmitAsyncBusyRejectedAndSharedKey(t *testing.T) {
	busy := 0
	f := newFake(t, func(_ string, body [][]byte, _ int) [][]byte {
		switch string(body[0]) {
		case "bad":
			return [][]byte{[]byte("400"), []byte("body too large"), body[0]}
		case "busy":
			if busy++; busy < 3 {
				return [][]byte{[]byte("500"), []byte("busy, retry later"), body[0]}
			}
		}
		return keyedAnswer(body)
	})
	c := newPipeClient(t, Config{Brokers: []string{f.endpoint}, Timeout: 5 * time.Second})
	ctx := testCtx(t)
	var fs []*SubmitFuture
	for _, k := range []string{"busy", "bad", "same", "same"} {
		fut, err := c.SubmitAsync(ctx, "echo", frames("x"), SubmitOptions{IdemKey: k})
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, fut)
	}
	if _, err := fs[1].Ticket(ctx); !errors.Is(err, ErrRejected) {
		t.Fatalf("bad = %v, want ErrRejected", err)
	}
	checkTickets(t, []*SubmitFuture{fs[0], fs[2], fs[3]})
	if _, err := c.SubmitAsync(ctx, "echo", frames("x"), SubmitOptions{IdemKey: string(make([]byte, 200))}); !errors.Is(err, ErrRejected) {
		t.Fatalf("long key = %v, want ErrRejected", err)
	}
}

// Close ends every unfinished submit with ErrClosed, and refuses new ones.
func TestSubmitAsyncClose(t *testing.T) {
	f := newFake(t, func(string, [][]byte, int) [][]byte { return nil })
	c := newPipeClient(t, Config{Brokers: []string{f.endpoint}, Timeout: 10 * time.Second})
	fs := submitN(t, c, 5)
	c.Close()
	for i, fut := range fs {
		if _, err := fut.Ticket(testCtx(t)); !errors.Is(err, ErrClosed) {
			t.Fatalf("future %d = %v, want ErrClosed", i, err)
		}
	}
	if _, err := c.SubmitAsync(testCtx(t), "echo", frames("x"), SubmitOptions{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("SubmitAsync after Close = %v", err)
	}
	if err := c.Flush(testCtx(t)); err != nil {
		t.Fatalf("Flush after Close = %v", err)
	}
}

// Two pipelined submits share a key, and the first gives up (the broker
// is silent): the second, held until then, is sent and ends too (here
// with its own give-up), and Flush returns. It was lost when the first
// ended inside the loop that rebuilt the queue.
func TestHeldSubmitSentAfterFirstGivesUp(t *testing.T) {
	f := newFake(t, func(string, [][]byte, int) [][]byte { return nil })
	c := newPipeClient(t, Config{Brokers: []string{f.endpoint}, Timeout: 100 * time.Millisecond, Retries: 2})
	ctx := testCtx(t)
	a, err := c.SubmitAsync(ctx, "echo", frames("x"), SubmitOptions{IdemKey: "K"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.SubmitAsync(ctx, "echo", frames("x"), SubmitOptions{IdemKey: "K"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Ticket(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("first = %v, want ErrUnavailable", err)
	}
	sentA := len(f.requests())
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := b.Ticket(wctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("second submit with the key = %v, want ErrUnavailable after its own tries", err)
	}
	if n := len(f.requests()); n <= sentA {
		t.Fatalf("the second submit was never sent (%d requests, %d before it)", n, sentA)
	}
	if err := c.Flush(wctx); err != nil {
		t.Fatalf("Flush = %v", err)
	}
}

// A draining broker: k0 was taken before the drain, and its answer (200,
// keyed) comes right after the gate refused k1 ("not active", no key).
// k0 ends with its ticket, not with a give-up after its resends were
// refused: the socket is read until every submit in flight there was
// answered or refused.
func TestRefusalKeepsLaterAnswers(t *testing.T) {
	var f *fakeBroker
	f = newFake(t, func(service string, body [][]byte, n int) [][]byte {
		switch n {
		case 1:
			return nil // k0: being committed
		case 2:
			f.answerLater(0, tsp.SvcSubmit, keyedAnswer([][]byte{[]byte("k0")}))
			return frames("500", "not active")
		}
		return frames("500", "not active")
	})
	c := newPipeClient(t, Config{Brokers: []string{f.endpoint}, Timeout: 200 * time.Millisecond, Retries: 3})
	fs := submitN(t, c, 2)
	got, err := fs[0].Ticket(testCtx(t))
	if err != nil || got != ticketOf([]byte("k0")) {
		t.Fatalf("k0, acknowledged by the broker, ended with %q, %v", got, err)
	}
	// k1 is refused until its tries are spent, and says why.
	_, err = fs[1].Ticket(testCtx(t))
	var ue *UnavailableError
	if !errors.As(err, &ue) || !ue.NoActive {
		t.Fatalf("k1 = %v, want ErrUnavailable saying no broker was active", err)
	}
}
