package e2e

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/worker"
)

// TestWaitWokenByNotice: a client waiting on a ticket with a poll interval
// of a minute learns of its reply within a fraction of a second: it was
// woken by the broker's notification, not by polling.
func TestWaitWokenByNotice(t *testing.T) {
	ep, nep := harness.FreeEndpoint(t), harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), append([]string{"--notify-listen", nep}, fastBroker...)...)
	cl, err := client.New(client.Config{Brokers: []string{ep}, Timeout: time.Second, Retries: 5, Notify: []string{nep}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tk, err := cl.Submit(ctx, "slow", [][]byte{[]byte("x")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The worker answers 2 s from now, after Wait's early lookups.
	release := make(chan struct{})
	w, err := worker.New(worker.Config{Brokers: []string{ep}, Service: "slow", HeartbeatInterval: 200 * time.Millisecond},
		func(ctx context.Context, req [][]byte) ([][]byte, error) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return [][]byte{bytes.ToUpper(req[0])}, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go func() { _ = w.Run(wctx) }()
	answeredAt := make(chan time.Time, 1)
	go func() {
		time.Sleep(2 * time.Second) // the answer comes late on purpose
		answeredAt <- time.Now()
		close(release)
	}()
	rep, err := cl.Wait(ctx, tk, client.WaitOptions{PollInterval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	woke := time.Since(<-answeredAt)
	if string(rep[0]) != "X" {
		t.Fatalf("reply %q", rep)
	}
	if woke > 2*time.Second || cl.Stats().Notices == 0 {
		t.Fatalf("woken %s after the worker answered (notices %d): not by the notification", woke, cl.Stats().Notices)
	}
	t.Logf("woken %s after the worker answered", woke.Round(time.Millisecond))
}
