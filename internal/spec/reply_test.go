package spec

import (
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

// guideIdle runs a worker as the Guide's mdwrkapi does while it waits for
// work (it has sent its REPLY and believes itself idle): it sends HEARTBEAT
// every interval and reads what the broker sends, for d. It returns the
// first command other than HEARTBEAT, nil when none came.
func (w *worker) guideIdle(interval, d time.Duration) [][]byte {
	w.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		w.cmd(0x04)
		if m := w.recv(min(interval, time.Until(deadline))); m != nil && !(len(m) == 3 && m[2][0] == 0x04) {
			return m
		}
	}
	return nil
}

// getRequest waits up to d for a REQUEST, answering the broker's
// heartbeats as an idle Guide worker would.
func (w *worker) getRequest(interval, d time.Duration) [][]byte {
	w.t.Helper()
	m := w.guideIdle(interval, d)
	if len(m) < 6 || m[2][0] != 0x02 {
		w.t.Fatalf("worker: want a REQUEST within %s, got %s", d, show(m))
	}
	return m
}

// TestReplyForAnotherClientDisconnectsWorker: 7/MDP says "the broker MUST
// respond to any valid but unexpected command by sending DISCONNECT". A
// well-formed REPLY whose client address is not the one of the request the
// worker holds was dropped as "stale", and nothing more happened: the
// worker, which believed it had answered, waited for work and heartbeat;
// the broker, which believed it still ran the job, took those heartbeats
// as a busy worker's and never expired it. The ticket stayed dispatched
// for good. Now the worker is sent DISCONNECT and its attempt fails.
// heldJob starts a broker (heartbeat hb, lease timeout 1s) and a raw
// worker of service holding the one ticket submitted: it returns the
// broker's endpoint and log, the worker, the ticket and its REQUEST.
func heldJob(t *testing.T, service string) (string, *harness.Process, *worker, string, [][]byte) {
	t.Helper()
	ep, br := startBroker(t, "--heartbeat", "200ms", "--lease-timeout", "1s", "--max-attempts", "10")
	w := newWorker(t, ep)
	w.cmd(0x01, service)
	rep := tspCall(t, ep, "titanic.request", service, "job")
	return ep, br, w, string(rep[1]), w.getRequest(hb, 5*time.Second)
}

// hb is the heartbeat of heldJob's broker.
const hb = 200 * time.Millisecond

func TestReplyForAnotherClientDisconnectsWorker(t *testing.T) {
	ep, br, w, ticket, req := heldJob(t, "wedge")
	if string(req[3]) == "ffffffffffffffffffffffffffffffff" {
		t.Fatal("the token is the one this test sends as wrong")
	}
	// A REPLY with one client address frame, an empty frame and a body:
	// valid, but for a client the worker does not hold.
	w.send([]byte{}, []byte("MDPW01"), []byte{0x03}, []byte("ffffffffffffffffffffffffffffffff"), []byte{}, []byte("x"))

	// Three seconds: five heartbeat expiries, three lease timeouts.
	m := w.guideIdle(hb, 3*time.Second)
	if m == nil || len(m) != 3 || m[2][0] != 0x05 {
		t.Errorf("worker got %s within 3s of its unexpected REPLY, want DISCONNECT (7/MDP)\nbroker log:\n%s", show(m), br.Tail())
	}
	waitNotDispatched(t, ep, ticket, 3*time.Second, "its only worker answered another client (lease timeout 1s)")
}

// waitNotDispatched waits up to d for ticket to be no longer dispatched
// (its attempt ended: pending again, or finished).
func waitNotDispatched(t *testing.T, ep, ticket string, d time.Duration, after string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := tspCall(t, ep, "titanic.status", ticket)
		if len(st) > 1 && string(st[1]) != "dispatched" {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("ticket %s still dispatched %s after %s: status %s", ticket, d, after, show(st))
			return
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// TestReplyOfManyFramesNotLost: 7/MDP puts no bound on the frames of a
// REPLY body. A worker's REPLY of more frames than the broker's frame
// limit (1024 with the envelope) is discarded by the broker's receive.
// Unlike a REPLY over the byte limit, the worker was neither disconnected
// nor was its attempt failed: it waited for work, heartbeating, and the
// broker took those heartbeats as a busy worker's, so the ticket stayed
// dispatched for good. Now it is disconnected and the attempt fails.
func TestReplyOfManyFramesNotLost(t *testing.T) {
	ep, br, w, ticket, req := heldJob(t, "many")
	frames := [][]byte{{}, []byte("MDPW01"), {0x03}, req[3], {}}
	for range 1100 {
		frames = append(frames, []byte("r"))
	}
	w.send(frames...)

	m := w.guideIdle(hb, 3*time.Second)
	if m == nil || len(m) != 3 || m[2][0] != 0x05 {
		t.Errorf("worker got %s within 3s of its REPLY of 1100 body frames, want DISCONNECT\nbroker log:\n%s", show(m), br.Tail())
	}
	waitNotDispatched(t, ep, ticket, 3*time.Second, "its worker sent a REPLY of 1100 body frames (lease timeout 1s)")
}

// TestReplyFromIdleWorkerDisconnects: a REPLY from a registered worker that
// holds no request is a valid but unexpected command, which 7/MDP says the
// broker MUST answer with DISCONNECT (it was dropped as stale, the worker
// left registered).
func TestReplyFromIdleWorkerDisconnects(t *testing.T) {
	// Heartbeats far apart: nothing expires during the test.
	ep, br := startBroker(t, "--heartbeat", "5s")
	w := newWorker(t, ep)
	w.cmd(0x01, "idle")
	// READY is not answered: mmi.service tells when it is registered.
	deadline := time.Now().Add(5 * time.Second)
	for string(tspCall(t, ep, "mmi.service", "idle")[0]) != "200" {
		if time.Now().After(deadline) {
			t.Fatalf("worker not registered within 5s\n%s", br.Tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.send([]byte{}, []byte("MDPW01"), []byte{0x03}, []byte("someone"), []byte{}, []byte("x"))
	if m := w.next(2 * time.Second); m == nil || len(m) != 3 || m[2][0] != 0x05 {
		t.Errorf("idle worker got %s within 2s of a REPLY for no request, want DISCONNECT (7/MDP)", show(m))
	}
}
