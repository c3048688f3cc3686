package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/nodetest"
)

// A titanic node whose limits.max_message_size is below a submit's body:
// the submit fails at once (not after every try), saying the broker
// closed the connection on a request of that size and naming the
// setting; a submit within the limit then works on the same client.
func TestCauseTooLargeNode(t *testing.T) {
	cfg := nodetest.Config(t.TempDir())
	cfg.Store.NoSync = true
	cfg.Broker.MaxMsgSize = 4096
	nd := nodetest.Start(t, cfg)
	const timeout = 2 * time.Second
	c, err := client.New(client.Config{Brokers: []string{nd.Endpoint()}, Timeout: timeout, Retries: 3, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	start := time.Now()
	_, err = c.Submit(ctx, "echo", [][]byte{make([]byte, 64<<10)}, client.SubmitOptions{})
	el := time.Since(start)
	var ue *client.UnavailableError
	if !errors.Is(err, client.ErrUnavailable) || !errors.As(err, &ue) {
		t.Fatalf("oversized submit: %v, want an *UnavailableError", err)
	}
	if len(ue.Causes) != 1 || ue.Causes[0].Cause != client.CauseTooLarge || ue.Causes[0].Largest != 64<<10 {
		t.Fatalf("causes %+v, want CauseTooLarge of a %d-byte frame", ue.Causes, 64<<10)
	}
	for _, want := range []string{nd.Endpoint(), "65536 bytes", "limits.max_message_size"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not name %q", err, want)
		}
	}
	if el > timeout {
		t.Errorf("gave up after %s, want before one try's %s", el, timeout)
	}
	if _, err := c.Submit(ctx, "echo", [][]byte{[]byte("small")}, client.SubmitOptions{}); err != nil {
		t.Fatalf("submit within the limit after the oversized one: %v", err)
	}
}
