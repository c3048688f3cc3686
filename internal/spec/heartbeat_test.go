package spec

import (
	"testing"
	"time"
)

// TestGuideWorkerHeartbeatCrossingRequestKeepsLease: the Guide's worker
// (mdwrkapi) sends HEARTBEAT only while it waits for work, and none while
// it runs a request; README promises such a worker keeps its job until
// --lease-timeout. When the worker's last idle HEARTBEAT crossed the
// REQUEST on the wire (the worker sent it before the REQUEST reached it),
// the broker took that heartbeat as "heartbeats while busy" and expired
// the worker after heartbeat x liveness: the job was taken away mid-run,
// the worker sent DISCONNECT and its REPLY refused. A HEARTBEAT counts as
// a busy one only a heartbeat interval after the REQUEST was sent.
func TestGuideWorkerHeartbeatCrossingRequestKeepsLease(t *testing.T) {
	// Expiry 3 x 200ms = 600ms; the lease timeout stays at 60s.
	ep, br := startBroker(t, "--heartbeat", "200ms", "--lease-timeout", "60s")
	w := newWorker(t, ep)
	w.cmd(0x01, "slow")

	rep := tspCall(t, ep, "titanic.request", "slow", "job")
	if string(rep[0]) != "200" {
		t.Fatalf("titanic.request: %s", show(rep))
	}
	ticket := string(rep[1])

	// The REQUEST is waiting in the worker's socket: the worker, which has
	// not read it yet, sends its idle heartbeat (as mdwrkapi does when its
	// poll times out just before the REQUEST arrives).
	var req [][]byte
	deadline := time.Now().Add(5 * time.Second)
	for req == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no REQUEST within 5s\n%s", br.Tail())
		}
		if !w.readable(time.Until(deadline)) {
			continue
		}
		// Heartbeats that came before the REQUEST are answered as the
		// Guide's worker does: by sending its own when due. The last one
		// crosses the REQUEST.
		w.cmd(0x04)
		m := w.recv(time.Second)
		if len(m) >= 6 && m[2][0] == 0x02 {
			req = m
		}
	}
	// The worker runs the job for 1.5s (well under the 60s lease) without
	// reading its socket or sending anything, as mdwrkapi does.
	time.Sleep(1500 * time.Millisecond) // the job's run time, not a synchronisation
	w.send([]byte{}, []byte("MDPW01"), []byte{0x03}, req[3], []byte{}, []byte("done"))

	// What waits in the worker's socket after its job (sent while it ran)
	// must not be a DISCONNECT: it still held its lease.
	if m := w.next(50 * time.Millisecond); len(m) == 3 && m[2][0] == 0x05 {
		t.Errorf("worker was sent DISCONNECT while it ran a 1.5s job under a 60s lease (its idle HEARTBEAT crossed the REQUEST)")
	}
	// And the reply is the ticket's.
	deadline = time.Now().Add(5 * time.Second)
	for {
		got := tspCall(t, ep, "titanic.reply", ticket)
		if string(got[0]) == "200" {
			if len(got) != 2 || string(got[1]) != "done" {
				t.Fatalf("titanic.reply = %s, want [200 done]", show(got))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("titanic.reply = %s 5s after the worker replied, want [200 done]\nbroker log:\n%s", show(got), br.Tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
