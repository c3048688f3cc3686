package client

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// oldBroker answers titanic.submit as titanic does and titanic.submit2 as
// a release without it does: 400 unknown titanic service, without a key.
func oldBroker(t *testing.T) *fakeBroker {
	return newFake(t, func(service string, body [][]byte, _ int) [][]byte {
		if service == tsp.SvcSubmit {
			return keyedAnswer(body)
		}
		return frames("400", fmt.Sprintf("unknown titanic service %q", service))
	})
}

// An older broker refuses a submit with options: ErrUnsupported, on
// Submit and on the pipeline (where the refusal carries no key, and
// plain submits in flight beside them are unaffected). A plain submit
// still goes as titanic.submit.
func TestSubmitOptionsOlderBroker(t *testing.T) {
	f := oldBroker(t)
	c := newPipeClient(t, Config{Brokers: []string{f.endpoint}, Timeout: 5 * time.Second})
	ctx := testCtx(t)
	if _, err := c.Submit(ctx, "echo", frames("b"), SubmitOptions{Delay: time.Minute}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Submit with a delay: %v, want ErrUnsupported", err)
	}
	tk, err := c.Submit(ctx, "echo", frames("b"), SubmitOptions{IdemKey: "k"})
	if err != nil || tk != ticketOf([]byte("k")) {
		t.Fatalf("plain Submit = %q, %v", tk, err)
	}
	reqs := f.requests()
	// ["" | MDPC01 | service | key | (options) | service | body]
	if r := reqs[0]; string(r[2]) != tsp.SvcSubmit2 || len(r) != 7 || string(r[4]) != "delay=1m0s" || string(r[5]) != "echo" {
		t.Fatalf("submit2 frames %q", r)
	}
	if r := reqs[1]; string(r[2]) != tsp.SvcSubmit || len(r) != 6 {
		t.Fatalf("plain submit frames %q", r)
	}
	var v2, plain []*SubmitFuture
	for i := range 20 {
		opt := SubmitOptions{IdemKey: fmt.Sprint("p", i)}
		if i%2 == 0 {
			opt.Priority = PriorityHigh
		}
		fu, err := c.SubmitAsync(ctx, "echo", frames("b"), opt)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			v2 = append(v2, fu)
		} else {
			plain = append(plain, fu)
		}
	}
	checkTickets(t, plain)
	for i, fu := range v2 {
		if _, err := fu.Ticket(ctx); !errors.Is(err, ErrUnsupported) {
			t.Fatalf("pipelined submit2 %d: %v, want ErrUnsupported", i, err)
		}
	}
}

// A cluster below version 3 answers the keyed refusal "not supported":
// ErrUnsupported, not a rejection of the request.
func TestSubmitOptionsClusterVersion(t *testing.T) {
	f := newFake(t, func(_ string, body [][]byte, _ int) [][]byte {
		return [][]byte{[]byte("400"), []byte("not supported: submit needs cluster version 3 and this cluster is at 2"), body[0]}
	})
	c := newPipeClient(t, Config{Brokers: []string{f.endpoint}, Timeout: 5 * time.Second})
	ctx := testCtx(t)
	_, err := c.Submit(ctx, "echo", frames("b"), SubmitOptions{TTL: time.Minute})
	if !errors.Is(err, ErrUnsupported) || errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "cluster version") {
		t.Fatalf("Submit: %v, want ErrUnsupported naming the cluster version", err)
	}
	fu, err := c.SubmitAsync(ctx, "echo", frames("b"), SubmitOptions{TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fu.Ticket(ctx); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("SubmitAsync: %v, want ErrUnsupported", err)
	}
}
