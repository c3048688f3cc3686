package broker

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// peerFixture is a state peered with one peer, B, whose messages the test
// hands in directly: what the state sends (to B's cloud front, and to
// origins) is recorded.
type peerFixture struct {
	*fixture
	now time.Time
}

func newPeerFixture(t *testing.T) *peerFixture {
	t.Helper()
	f := newFixture(t, true)
	pc := PeeringConfig{Name: "A", Peers: []Peer{{Name: "B"}}, StateEvery: time.Second, Liveness: 3, LeaseTimeout: time.Second}
	f.s.peering = newPeering(pc)
	f.s.peering.sendPeer, f.s.peering.sendOrigin = f.rec.send, f.rec.send
	f.s.peering.publish = func([][]byte) error { return nil }
	return &peerFixture{fixture: f, now: t0}
}

// state hands in B's state: spare capacity of echo, and jobs of A's it
// holds.
func (f *peerFixture) state(spare, held int) {
	msg := frames("TPEER01", "STATE", "B", "runB", "echo", strconv.Itoa(spare))
	if held > 0 {
		msg = append(msg, frames("", "A", "echo", strconv.Itoa(held))...)
	}
	f.s.peerStateMsg(f.now, msg)
}

// requests returns the tokens of the REQUESTs sent to B since the last
// call.
func (f *peerFixture) requests() []string {
	var toks []string
	for _, m := range f.rec.take() {
		if m.to == "B" && len(m.frames) >= 5 && string(m.frames[2]) == "REQUEST" {
			toks = append(toks, string(m.frames[3]))
		}
	}
	return toks
}

// A peer's FAIL reason is stored with the ticket: it is bounded as a
// worker's is.
func TestPeerFailReasonTruncated(t *testing.T) {
	f := newPeerFixture(t)
	f.src.add("echo", "T1", "job")
	f.state(1, 0)
	toks := f.requests()
	if len(toks) != 1 {
		t.Fatalf("requests sent to B: %q; want one", toks)
	}
	f.s.peerAnswer(f.now, "B", frames("", "TPEER01", "FAIL", toks[0], strings.Repeat("r", 100000)))
	if len(f.src.failed) != 1 {
		t.Fatalf("failed: %q", f.src.failed)
	}
	if n := len(f.src.failed[0]); n > maxReason+100 {
		t.Fatalf("B's 100000-byte FAIL reason handed to the Source as %d bytes; want at most about %d", n, maxReason)
	}
}

// A peer that advertises capacity and counts none of the jobs it is sent
// (it drops them, or its cloud link delivers nothing) is not booked again
// for a while once their leases run out, then one job at a time until
// its state counts one; with that, it is booked as before.
func TestPeerCountingNoJobsBenched(t *testing.T) {
	f := newPeerFixture(t)
	for i := range 5 {
		f.src.add("echo", fmt.Sprintf("T%d", i), "job")
	}
	f.state(1000000, 0)
	if toks := f.requests(); len(toks) != 5 {
		t.Fatalf("B advertising spare capacity was sent %d jobs, want 5", len(toks))
	}
	// The leases (1 s) run out: the jobs come back.
	f.now = f.now.Add(1100 * time.Millisecond)
	f.s.tick(f.now)
	if len(f.src.failed) != 5 {
		t.Fatalf("failed after the lease: %q", f.src.failed)
	}
	for i := range 5 {
		f.src.add("echo", fmt.Sprintf("T%d", i), "job")
	}
	f.now = f.now.Add(100 * time.Millisecond)
	f.state(1000000, 0)
	if toks := f.requests(); len(toks) != 0 {
		t.Fatalf("B, which counted none of the 5 jobs it was sent within their lease, was sent %d more at once", len(toks))
	}
	// Past the bench (one lease): one job, not the five.
	f.now = f.now.Add(time.Second)
	f.state(1000000, 0)
	if toks := f.requests(); len(toks) != 1 {
		t.Fatalf("after its bench, B was sent %d jobs; want 1 until it counts one", len(toks))
	}
	f.state(1000000, 0)
	if toks := f.requests(); len(toks) != 0 {
		t.Fatalf("B, which has not counted its one job, was sent %d more", len(toks))
	}
	// B counts it: trusted again, the rest go.
	f.state(1000000, 1)
	if toks := f.requests(); len(toks) != 4 {
		t.Fatalf("once B counted its job, it was sent %d jobs; want the 4 left", len(toks))
	}
}

// A peer's reply for a job whose peer lease was given up (B lost, or the
// lease expired) is handed to the Source with that lease, which records
// it if it is the first; for a peer lease timeout only, after which it is
// stale.
func TestLatePeerReplyHandedOn(t *testing.T) {
	f := newPeerFixture(t)
	f.s.peering.cfg.LeaseTimeout = 10 * time.Second // longer than B's liveness
	f.src.add("echo", "T1", "job")
	f.src.add("echo", "T2", "job")
	f.state(2, 0)
	toks := f.requests()
	if len(toks) != 2 {
		t.Fatalf("requests sent to B: %q; want two", toks)
	}
	f.state(2, 2) // B holds both
	// B goes silent for its liveness (3 s): lost, its jobs fail back.
	f.now = f.now.Add(3500 * time.Millisecond)
	f.s.tick(f.now)
	if len(f.src.failed) != 2 || !strings.Contains(f.src.failed[0], "lost") {
		t.Fatalf("failed after B's loss: %q", f.src.failed)
	}
	// B comes back and answers the first: handed on.
	f.now = f.now.Add(100 * time.Millisecond)
	f.s.peerAnswer(f.now, "B", frames("", "TPEER01", "REPLY", toks[0], "late"))
	if len(f.src.completed) != 1 || !strings.HasSuffix(f.src.completed[0], " T1 late") {
		t.Fatalf("completed after B's late reply: %q; want T1's reply handed on", f.src.completed)
	}
	// Once the peer lease timeout has passed, the second's is stale.
	f.now = f.now.Add(10 * time.Second)
	f.s.tick(f.now)
	f.s.peerAnswer(f.now, "B", frames("", "TPEER01", "REPLY", toks[1], "too late"))
	if len(f.src.completed) != 1 {
		t.Fatalf("completed: %q; want B's reply a peer lease timeout after its loss dropped", f.src.completed)
	}
	if st := f.s.snapshot(); st.LatePeerReplies != 1 || st.StaleReplies != 1 {
		t.Fatalf("late peer replies %d, stale replies %d; want 1 and 1", st.LatePeerReplies, st.StaleReplies)
	}
}
