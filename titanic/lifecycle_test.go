package titanic_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/nodetest"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/tsp"
	"github.com/titanicmq/titanic/worker"
)

// lifecycleNode runs a single node with a quiet, fast titanic service.
func lifecycleNode(t *testing.T, dir string) (*nodetest.Node, *client.Client) {
	t.Helper()
	return lifecycleNodeWith(t, dir, nil)
}

// lifecycleNodeWith is lifecycleNode with tune, if not nil, applied to the
// service's configuration.
func lifecycleNodeWith(t *testing.T, dir string, tune func(*titanic.Config)) (*nodetest.Node, *client.Client) {
	t.Helper()
	nc := nodetest.Config(dir)
	nc.Service = titanic.DefaultConfig()
	nc.Service.Logger = nodetest.Quiet
	if tune != nil {
		tune(&nc.Service)
	}
	nd := nodetest.Start(t, nc)
	c, err := client.New(client.Config{Brokers: []string{nd.Endpoint()}, Timeout: time.Second, Retries: 3, Logger: nodetest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return nd, c
}

func call(t *testing.T, c *client.Client, service string, body ...string) [][]byte {
	t.Helper()
	frames := make([][]byte, len(body))
	for i, b := range body {
		frames[i] = []byte(b)
	}
	rep, err := c.Request(context.Background(), service, frames)
	if err != nil {
		t.Fatalf("%s: %v", service, err)
	}
	return rep
}

// A paused service's tickets are taken but not dispatched, also after a
// restart (the pause is durable), and run once it is resumed; a cancelled
// pending ticket is never dispatched and answers as failed ("cancelled"),
// and a second cancel is refused.
func TestPauseResumeCancel(t *testing.T) {
	dir := t.TempDir()
	nd, c := lifecycleNode(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if r := call(t, c, tsp.SvcPause, "echo"); string(r[0]) != "200" {
		t.Fatalf("pause: %q", r)
	}
	keep, err := c.Submit(ctx, "echo", [][]byte{[]byte("keep")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	drop, err := c.Submit(ctx, "echo", [][]byte{[]byte("drop")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r := call(t, c, tsp.SvcCancel, drop); string(r[0]) != "200" {
		t.Fatalf("cancel: %q", r)
	}
	if r := call(t, c, tsp.SvcCancel, drop); string(r[0]) != "400" || !strings.Contains(string(r[1]), "finished") {
		t.Fatalf("second cancel: %q", r)
	}
	if _, err := c.Reply(ctx, drop, client.ReplyOptions{}); !errors.Is(err, client.ErrFailed) || !strings.Contains(err.Error(), "cancelled") {
		t.Fatalf("reply of a cancelled ticket: %v, want a failure saying cancelled", err)
	}

	// Restart: the pause holds.
	nd.Stop()
	nd, c = lifecycleNode(t, dir)
	runs := make(chan string, 4)
	w, err := worker.New(worker.Config{Brokers: []string{nd.Endpoint()}, Service: "echo", HeartbeatInterval: 100 * time.Millisecond, Logger: nodetest.Quiet},
		func(_ context.Context, req [][]byte) ([][]byte, error) { runs <- string(req[0]); return req, nil })
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	wdone := make(chan error, 1)
	go func() { wdone <- w.Run(wctx) }()
	defer func() { wcancel(); <-wdone }()
	// The worker is registered (MMI) and still nothing runs.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if r := call(t, c, "mmi.service", "echo"); string(r[0]) == "200" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("worker not registered within 10s")
		}
	}
	if st, err := c.Status(ctx, keep); err != nil || st.State != "pending" {
		t.Fatalf("paused ticket after a restart with a worker: %+v %v, want pending", st, err)
	}
	if r := call(t, c, tsp.SvcResume, "echo"); string(r[0]) != "200" {
		t.Fatalf("resume: %q", r)
	}
	if rep, err := c.Reply(ctx, keep, client.ReplyOptions{Wait: true}); err != nil || string(rep[0]) != "keep" {
		t.Fatalf("reply after resume: %q %v", rep, err)
	}
	if got := <-runs; got != "keep" {
		t.Fatalf("ran %q", got)
	}
	select {
	case got := <-runs:
		t.Fatalf("the cancelled ticket ran: %q", got)
	default:
	}
}

// A failed attempt is in titanic.attempts' answer, with its worker's error.
func TestAttemptsAnswer(t *testing.T) {
	nd, c := lifecycleNode(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := worker.New(worker.Config{Brokers: []string{nd.Endpoint()}, Service: "flaky", HeartbeatInterval: 100 * time.Millisecond, Logger: nodetest.Quiet},
		func(context.Context, [][]byte) ([][]byte, error) { return nil, errors.New("disk on fire") })
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	wdone := make(chan error, 1)
	go func() { wdone <- w.Run(wctx) }()
	defer func() { wcancel(); <-wdone }()
	ticket, err := c.Submit(ctx, "flaky", [][]byte{[]byte("x")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Reply(ctx, ticket, client.ReplyOptions{Wait: true}); !errors.Is(err, client.ErrFailed) {
		t.Fatalf("reply: %v, want failed", err)
	}
	r := call(t, c, tsp.SvcAttempts, ticket)
	var as []titanic.AttemptJSON
	if string(r[0]) != "200" || len(r) != 2 || json.Unmarshal(r[1], &as) != nil {
		t.Fatalf("attempts answer %q", r)
	}
	if len(as) == 0 || as[len(as)-1].Outcome != "failed" || !strings.Contains(as[len(as)-1].Error, "disk on fire") {
		t.Fatalf("attempts = %+v, want the last failed with the worker's error", as)
	}
	for _, a := range as[:len(as)-1] {
		if a.Outcome != "retried" || a.End.Before(a.Start) {
			t.Fatalf("attempt %+v", a)
		}
	}
}
