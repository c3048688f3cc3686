package spec

import (
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// guideWorker is the Guide's Majordomo worker API (mdwrkapi.c, and
// pebbe/zmq4's mdwrkapi.go), step for step: poll with the heartbeat as
// timeout, liveness 3, HEARTBEAT sent whenever heartbeat_at has passed
// (checked after each poll), and no heartbeat while the application
// handles a request.
type guideWorker struct {
	t           *testing.T
	ep, service string
	heartbeat   time.Duration
	sock        *sock
	heartbeatAt time.Time
	liveness    int
	replyTo     []byte
	// disconnects counts the DISCONNECTs received (each followed by a
	// reconnect, as the Guide's worker does).
	disconnects int
	// loopGap is the time the worker's loop takes from a poll's return
	// to its heartbeat check: microseconds in C on an idle host, a
	// millisecond or more for a worker in Python or on a busy host.
	loopGap time.Duration
}

func newGuideWorker(t *testing.T, ep, service string, heartbeat time.Duration) *guideWorker {
	g := &guideWorker{t: t, ep: ep, service: service, heartbeat: heartbeat}
	g.connect()
	return g
}

func (g *guideWorker) connect() {
	if g.sock != nil {
		g.sock.close()
	}
	g.sock = newSock(g.t, zmq.DEALER, g.ep)
	g.sock.send([]byte{}, []byte("MDPW01"), []byte{0x01}, []byte(g.service))
	g.liveness = 3
	g.heartbeatAt = time.Now().Add(g.heartbeat)
}

// recv sends reply (when not nil) and returns the next request's body,
// as mdwrk_recv does.
func (g *guideWorker) recv(reply [][]byte, within time.Duration) [][]byte {
	g.t.Helper()
	if reply != nil {
		g.sock.send(append([][]byte{{}, []byte("MDPW01"), {0x03}, g.replyTo, {}}, reply...)...)
	}
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if m := g.sock.recv(g.heartbeat); m != nil {
			g.liveness = 3
			if len(m) < 3 || len(m[0]) != 0 || string(m[1]) != "MDPW01" || len(m[2]) != 1 {
				g.t.Fatalf("guide worker: invalid message %s", show(m))
			}
			switch m[2][0] {
			case 0x02:
				g.replyTo = m[3]
				return m[5:]
			case 0x04:
			case 0x05:
				g.disconnects++
				g.connect()
			}
		} else if g.liveness--; g.liveness == 0 {
			time.Sleep(g.heartbeat) // reconnect delay
			g.connect()
		}
		if time.Now().After(g.heartbeatAt) {
			time.Sleep(g.loopGap) // models the worker's own work, not a synchronisation
			g.sock.send([]byte{}, []byte("MDPW01"), []byte{0x04})
			g.heartbeatAt = time.Now().Add(g.heartbeat)
		}
	}
	g.t.Fatalf("guide worker: no request within %s", within)
	return nil
}

// TestGuideWorkerBacklogOfLongJobs: the Guide's own worker, given a backlog
// of jobs that each run longer than the heartbeat expiry (but far under
// --lease-timeout), must complete each at its first attempt: README says a
// worker that does not heartbeat while busy, as the Guide's, keeps its job
// until the lease timeout. After a long job the Guide's worker finds the
// broker's heartbeats queued, and its heartbeat_at long past: it sends a
// HEARTBEAT right after its REPLY. The broker has meanwhile given it the
// next job; it took that HEARTBEAT for one sent while busy, and from then
// on judged it by the heartbeat expiry: that job was taken away mid-run
// (DISCONNECT), its reply refused and the ticket redelivered; the worker
// reconnected, and the same happened to every second job. (With the
// worker's loop taking a few microseconds on loopback, libzmq often sends
// the REPLY and the HEARTBEAT in one write and the broker reads both
// before it dispatches: the race is then won, which is why the loop here
// takes 5ms, as a Python worker or a loaded host does.)
func TestGuideWorkerBacklogOfLongJobs(t *testing.T) {
	const hb = 200 * time.Millisecond // expiry 600ms
	const jobs = 4
	ep, br := startBroker(t, "--heartbeat", "200ms", "--lease-timeout", "60s")
	var tickets []string
	for range jobs {
		rep := tspCall(t, ep, "titanic.request", "long", "job")
		tickets = append(tickets, string(rep[1]))
	}
	g := newGuideWorker(t, ep, "long", hb)
	g.loopGap = 5 * time.Millisecond
	var reply [][]byte
	for range jobs {
		req := g.recv(reply, 10*time.Second)
		time.Sleep(time.Second) // the job's run time: 5 heartbeat intervals, not a synchronisation
		reply = [][]byte{[]byte("done: " + string(req[0]))}
	}
	g.sock.send(append([][]byte{{}, []byte("MDPW01"), {0x03}, g.replyTo, {}}, reply...)...)
	// What the broker sent during the last job.
	for m := g.sock.recv(100 * time.Millisecond); m != nil; m = g.sock.recv(100 * time.Millisecond) {
		if len(m) == 3 && m[2][0] == 0x05 {
			g.disconnects++
		}
	}
	if g.disconnects > 0 {
		t.Errorf("the Guide's worker was sent DISCONNECT %d times while it ran %d jobs of 1s each under a 60s lease", g.disconnects, jobs)
	}
	for _, tk := range tickets {
		st := tspCall(t, ep, "titanic.status", tk)
		if len(st) < 3 || string(st[1]) != "done" || string(st[2]) != "1" {
			t.Errorf("ticket %s: status %s, want done at its first attempt", tk, show(st))
		}
	}
	if t.Failed() {
		t.Logf("broker log:\n%s", br.Tail())
	}
}
