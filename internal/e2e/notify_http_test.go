package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/worker"
)

// TestWaitWokenByCancelNotice: README says client.Wait is woken by the
// notifications. A ticket cancelled while a Wait (PollInterval a minute)
// waits for it must end the Wait at once, as a close or a reply does;
// the broker publishes "cancelled", but Wait ignores it (tsp.Event.Final
// does not count it), so the Wait sleeps until its next slow poll.
func TestWaitWokenByCancelNotice(t *testing.T) {
	ep, nep := harness.FreeEndpoint(t), harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), append([]string{"--notify-listen", nep}, fastBroker...)...)
	cl, err := client.New(client.Config{Brokers: []string{ep}, Timeout: time.Second, Retries: 5, Notify: []string{nep}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tk, err := cl.Submit(ctx, "nobody-serves", [][]byte{[]byte("x")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cancelledAt := make(chan time.Time, 1)
	go func() {
		time.Sleep(3 * time.Second) // late on purpose: after Wait's early lookups
		cancelledAt <- time.Now()
		if err := cl.Cancel(context.Background(), tk); err != nil {
			t.Errorf("cancel: %v", err)
		}
	}()
	_, err = cl.Wait(ctx, tk, client.WaitOptions{PollInterval: time.Minute})
	woke := time.Since(<-cancelledAt)
	var fe *client.FailedError
	if !errors.As(err, &fe) || !fe.Cancelled {
		t.Fatalf("Wait on a cancelled ticket: %v, want a FailedError with Cancelled", err)
	}
	if woke > 2*time.Second {
		t.Fatalf("Wait returned %s after the ticket was cancelled: not woken by the \"cancelled\" notification (notices %d)",
			woke.Round(time.Millisecond), cl.Stats().Notices)
	}
}

// subscribe returns a SUB socket of the notification endpoint nep on
// topic, reading with a short timeout; it is closed when the test ends.
func subscribe(t *testing.T, nep, topic string) *zmq.Socket {
	t.Helper()
	sub, err := zmq.NewSocket(zmq.SUB)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	_ = sub.SetLinger(0)
	_ = sub.SetRcvtimeo(200 * time.Millisecond)
	if err := sub.SetSubscribe(topic); err != nil {
		t.Fatal(err)
	}
	if err := sub.Connect(nep); err != nil {
		t.Fatal(err)
	}
	return sub
}

// TestNotifyPublishesRedeliveryBackToPending: README: "--notify-listen
// publishes every ticket state change". A ticket whose first attempt fails
// goes back to pending (status says so) before its second dispatch, but no
// "pending" is published between the two "dispatched".
func TestNotifyPublishesRedeliveryBackToPending(t *testing.T) {
	ep, nep := harness.FreeEndpoint(t), harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), append([]string{"--notify-listen", nep, "--backoff-base", "300ms"}, fastBroker...)...)
	sub := subscribe(t, nep, "ticket.")
	cl := newClient(t, ep)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The subscription reaches the publisher a moment after connecting:
	// submit probe tickets until one's notice arrives.
	for ready := false; !ready; {
		if ctx.Err() != nil {
			t.Fatal("no notification arrived")
		}
		if _, err := cl.Submit(ctx, "probe", [][]byte{[]byte("p")}, client.SubmitOptions{}); err != nil {
			t.Fatal(err)
		}
		if msg, err := sub.RecvMessage(0); err == nil && len(msg) == 5 {
			ready = true
		}
	}
	tk, err := cl.Submit(ctx, "flaky", [][]byte{[]byte("x")}, client.SubmitOptions{MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{Brokers: []string{ep}, Service: "flaky", HeartbeatInterval: 200 * time.Millisecond},
		func(ctx context.Context, req [][]byte) ([][]byte, error) {
			return nil, fmt.Errorf("boom")
		})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go func() { _ = w.Run(wctx) }()
	var states []string
	for ctx.Err() == nil {
		msg, err := sub.RecvMessage(0)
		if err != nil || len(msg) < 5 || msg[0] != "ticket."+tk {
			continue
		}
		states = append(states, msg[2])
		if msg[2] == "failed" {
			break
		}
	}
	got := strings.Join(states, " ")
	if got != "pending dispatched pending dispatched failed" {
		t.Fatalf("ticket %s's notifications: %q, want \"pending dispatched pending dispatched failed\" (the failed first attempt puts it back to pending)", tk, got)
	}
}

// Found by an outside-in tester of the HTTP API, notifications and the
// client; each test failed before its fix.
//
// TestNotifyStalledSubscribersBoundBrokerMemory: README: PUB may drop
// for slow subscribers; a subscriber that does not read must not cost the
// broker more than a little. The notification endpoint takes anyone
// (no CURVE) and queued up to 100,000 messages (SetSndhwm) per
// subscriber, now 1,000: 16 subscribers that never read take the broker from ~70 MiB
// (60,000 submits, no subscriber) to ~470 MiB, ~25 MiB each, so that the
// hostile test's 2,000 connections, made on this endpoint, would take ~50 GB.
func TestNotifyStalledSubscribersBoundBrokerMemory(t *testing.T) {
	ep, nep := harness.FreeEndpoint(t), harness.FreeEndpoint(t)
	b := harness.Broker(t, "broker", ep, t.TempDir(), "--notify-listen", nep)
	const subs = 16
	ready := make([]*zmq.Socket, 0, subs)
	for range subs {
		s, err := zmq.NewSocket(zmq.SUB)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		_ = s.SetLinger(0)
		_ = s.SetRcvhwm(1)
		_ = s.SetRcvbuf(4096)
		_ = s.SetRcvtimeo(200 * time.Millisecond)
		if err := s.SetSubscribe(""); err != nil {
			t.Fatal(err)
		}
		if err := s.Connect(nep); err != nil {
			t.Fatal(err)
		}
		ready = append(ready, s)
	}
	cl := newClient(t, ep)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Every subscription has reached the publisher once each subscriber
	// got one notice; from then on none of them reads.
	for _, s := range ready {
		for got := false; !got; {
			if ctx.Err() != nil {
				t.Fatal("subscribers got no notice")
			}
			if _, err := cl.Submit(ctx, "probe", [][]byte{[]byte("p")}, client.SubmitOptions{}); err != nil {
				t.Fatal(err)
			}
			_, err := s.RecvMessage(0)
			got = err == nil
		}
	}
	for range 20000 {
		if _, err := cl.SubmitAsync(ctx, "s", [][]byte{[]byte("x")}, client.SubmitOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// The publisher sends the last events a moment after their commits:
	// the peak (VmHWM only grows) is read over the next 5 s.
	hwm, err := harness.ProcStatus(b.PID(), "VmHWM")
	if err != nil {
		t.Skip(err)
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		h, _ := harness.ProcStatus(b.PID(), "VmHWM")
		hwm = max(hwm, h)
	}
	if hwm > 120<<20 {
		t.Fatalf("broker peak RSS %d MiB with %d subscribers that do not read (about 60 MiB with none): each one queues notifications in the broker", hwm>>20, subs)
	}
}

// TestBrokerNotReadyWhenNotifyCannotBind: a broker whose --notify-listen
// port is taken stops (exit 1), as one whose --http-listen cannot bind
// does; but it logs "broker ready" (and takes clients) first, so that a
// supervisor or script waiting for that line believes it is up. The HTTP
// listener is bound before the ready line; the notification socket after.
func TestBrokerNotReadyWhenNotifyCannotBind(t *testing.T) {
	ep, nep := harness.FreeEndpoint(t), harness.FreeEndpoint(t)
	taken, err := zmq.NewSocket(zmq.PUB)
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_ = taken.SetLinger(0)
	if err := taken.Bind(nep); err != nil {
		t.Fatal(err)
	}
	// The ready line and the bind race: a few starts show it.
	for range 20 {
		out, code := runBroker(t, nil, "--listen", ep, "--data", t.TempDir(), "--http-listen", "", "--notify-listen", nep)
		if code == 0 || !strings.Contains(out, "notify: bind") {
			t.Fatalf("broker with its notification port taken: exit %d\n%s", code, out)
		}
		if strings.Contains(out, "broker ready") {
			t.Fatalf("the broker said it was ready, then stopped for its notification port:\n%s", out)
		}
	}
}

// TestClientAttemptsOfUnknownTicket: every ticket call of the Go client
// (Reply, Status, Cancel, Retry, Purge) answers ErrUnknown for a ticket
// the broker does not know, and so does the HTTP API's
// /tickets/{id}/attempts (404, "as every ticket endpoint"); but
// Client.Attempts answers an empty history and no error, so that a typo'd
// ticket looks like one that never failed.
func TestClientAttemptsOfUnknownTicket(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), fastBroker...)
	cl := newClient(t, ep)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const unknown = "00000000000000000000000000000001"
	if err := cl.Cancel(ctx, unknown); !errors.Is(err, client.ErrUnknown) {
		t.Fatalf("Cancel of an unknown ticket: %v, want ErrUnknown", err)
	}
	as, err := cl.Attempts(ctx, unknown)
	if !errors.Is(err, client.ErrUnknown) {
		t.Fatalf("Attempts of an unknown ticket: %v, %v; want ErrUnknown", as, err)
	}
}

// TestNotifyCloseOnServiceTopic: README: --notify-listen "publishes every
// ticket state change (topics ticket.<id>, service.<name>)". A subscriber
// of service.<name> (the dashboard-like consumer of one service) sees its
// tickets' pending, dispatched, done, failed and cancelled, but never
// their close (DELETE, titanic.close, purge): the "closed" event is
// published with no service, so on the ticket topic only.
func TestNotifyCloseOnServiceTopic(t *testing.T) {
	ep, nep := harness.FreeEndpoint(t), harness.FreeEndpoint(t)
	harness.Broker(t, "broker", ep, t.TempDir(), append([]string{"--notify-listen", nep}, fastBroker...)...)
	sub := subscribe(t, nep, "service.closing")
	cl := newClient(t, ep)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Submit until the subscription is in place (a notice arrives).
	var tk string
	for tk == "" {
		if ctx.Err() != nil {
			t.Fatal("no notification arrived")
		}
		id, err := cl.Submit(ctx, "closing", [][]byte{[]byte("x")}, client.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if msg, err := sub.RecvMessage(0); err == nil && len(msg) >= 5 && msg[1] == id && msg[2] == "pending" {
			tk = id
		}
	}
	if err := cl.CloseTicket(ctx, tk); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		msg, err := sub.RecvMessage(0)
		if err == nil && len(msg) >= 5 && msg[1] == tk && msg[2] == "closed" {
			return
		}
	}
	t.Fatalf("no \"closed\" event for ticket %s on topic service.closing within 5s of its close", tk)
}

// TestHTTPSubmitRefusesTrailingJSON: the submit takes one JSON object (400
// for malformed JSON), but only the first JSON value of the request is
// read: a body of two objects (or an object and garbage) is answered 201
// for the first, and the rest is dropped without a word.
func TestHTTPSubmitRefusesTrailingJSON(t *testing.T) {
	ep, addr := harness.FreeEndpoint(t), harness.FreeAddr(t)
	harness.Broker(t, "broker", ep, t.TempDir(), append([]string{"--http-listen", addr}, fastBroker...)...)
	for _, body := range []string{
		`{"service": "a", "body": "1"}{"service": "b", "body": "2"}`,
		`{"service": "a", "body": "1"} trailing garbage`,
	} {
		req, _ := http.NewRequest("POST", "http://"+addr+"/api/v1/tickets", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest {
			t.Errorf("POST /api/v1/tickets %s: %d %s, want 400 (not one JSON object)", body, res.StatusCode, out)
		}
	}
}
