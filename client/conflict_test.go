package client_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
)

// A key reused with another body or service ends the submit with a
// *KeyConflictError naming the ticket that holds the key: at once, with
// no retry and no failover (another broker would make a second ticket for
// the key), on Submit as on SubmitAsync. The resend with the same service
// and body still gets the original ticket.
func TestKeyConflict(t *testing.T) {
	a, b := newCluster(t), newCluster(t)
	c, err := client.New(client.Config{Brokers: []string{a.ep, b.ep}, Timeout: patient, Retries: 3, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx := ctxFor(t, time.Minute)
	body := [][]byte{[]byte("ship"), []byte("order 7")}
	orig, err := c.Submit(ctx, "job", body, client.SubmitOptions{IdemKey: "order-7"})
	if err != nil {
		t.Fatal(err)
	}
	before := c.Stats()
	for _, tc := range []struct {
		name    string
		service string
		body    [][]byte
		detail  string
	}{
		{"other body", "job", [][]byte{[]byte("ship"), []byte("order 8")}, "another body"},
		{"other frames", "job", [][]byte{[]byte("shiporder 7")}, "another body"},
		{"other service", "mail", body, "another service"},
	} {
		tk, err := c.Submit(ctx, tc.service, tc.body, client.SubmitOptions{IdemKey: "order-7"})
		var kc *client.KeyConflictError
		if !errors.Is(err, client.ErrKeyConflict) || !errors.As(err, &kc) || tk != "" {
			t.Fatalf("%s: Submit = %q, %v; want ErrKeyConflict", tc.name, tk, err)
		}
		if kc.Key != "order-7" || kc.Ticket != orig || !strings.Contains(kc.Detail, tc.detail) {
			t.Fatalf("%s: %+v, want key order-7, ticket %s, detail naming %q", tc.name, kc, orig, tc.detail)
		}
		if !errors.Is(err, client.ErrRejected) || errors.Is(err, client.ErrServer) || errors.Is(err, client.ErrUnavailable) {
			t.Fatalf("%s: %v should be a rejection, not a transient or unavailable error", tc.name, err)
		}
	}
	if s := c.Stats(); s.Retries != before.Retries || s.Failovers != before.Failovers || s.Calls-before.Calls != 3 {
		t.Fatalf("stats %+v after %+v: want 3 calls, no retry, no failover", s, before)
	}
	if tk, err := c.Submit(ctx, "job", body, client.SubmitOptions{IdemKey: "order-7"}); err != nil || tk != orig {
		t.Fatalf("resend = %q, %v; want the original %s", tk, err, orig)
	}
	// Only one of the two nodes ever stored a ticket: the refusals did
	// not look for another broker.
	var home *client.Client
	stored := 0
	for _, cl := range []*cluster{a, b} {
		one, err := client.New(client.Config{Brokers: []string{cl.ep}, Timeout: patient, Retries: 3, Logger: quietLog})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { one.Close() })
		rows, err := one.List(ctx, client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if stored += len(rows); len(rows) > 0 {
			home = one
		}
	}
	if stored != 1 {
		t.Fatalf("%d tickets stored over both nodes, want 1", stored)
	}

	// Pipelined, on the node that holds the key: the conflict ends its
	// future; the resend beside it gets the original.
	bad, err := home.SubmitAsync(ctx, "job", [][]byte{[]byte("other")}, client.SubmitOptions{IdemKey: "order-7"})
	if err != nil {
		t.Fatal(err)
	}
	good, err := home.SubmitAsync(ctx, "job", body, client.SubmitOptions{IdemKey: "order-7"})
	if err != nil {
		t.Fatal(err)
	}
	var kc *client.KeyConflictError
	if tk, err := bad.Ticket(ctx); !errors.As(err, &kc) || kc.Ticket != orig || kc.Key != "order-7" || tk != "" {
		t.Fatalf("pipelined conflict = %q, %v; want a KeyConflictError naming %s", tk, err, orig)
	}
	if tk, err := good.Ticket(ctx); err != nil || tk != orig || !good.Duplicate() {
		t.Fatalf("pipelined resend = %q, %v (duplicate %v); want the original %s", tk, err, good.Duplicate(), orig)
	}
}
