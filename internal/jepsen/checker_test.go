package jepsen

import (
	"os"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// at is t0 plus ms milliseconds.
func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// hist builds hand-made histories.
type hist []Op

func (h *hist) add(ms int, op Op) *hist {
	op.Time = at(ms)
	op.Index = len(*h)
	*h = append(*h, op)
	return h
}

// keyed: a keyed submit of key (its body), acknowledged by node with
// ticket at ms.
func (h *hist) keyed(ms int, key, ticket, node string) *hist {
	h.add(ms-1, Op{Process: "c", Type: Invoke, F: FSubmit, Key: key, Body: key})
	return h.add(ms, Op{Process: "c", Type: OK, F: FSubmit, Key: key, Body: key, Ticket: ticket, Node: node})
}

// request: an unkeyed request of body, acknowledged by node with ticket.
func (h *hist) request(ms int, body, ticket, node string) *hist {
	h.add(ms-1, Op{Process: "r", Type: Invoke, F: FRequest, Body: body})
	return h.add(ms, Op{Process: "r", Type: OK, F: FRequest, Body: body, Ticket: ticket, Node: node})
}

// exec: a worker ran body and replied reply.
func (h *hist) exec(ms int, body, reply string) *hist {
	return h.add(ms, Op{Process: "w0", Type: OK, F: FExec, Body: body, Value: reply})
}

// look: a lookup of ticket answered code (and value).
func (h *hist) look(ms int, ticket, code, value string, final bool) *hist {
	return h.add(ms, Op{Process: "l", Type: OK, F: FLookup, Ticket: ticket, Code: code, Value: value, Node: "pa", Final: final})
}

func (h *hist) serve(from, to int, node string) *hist {
	return h.add(from, Op{Process: node, Type: OK, F: FServe, Node: node, End: at(to)})
}

func (h *hist) recovered(ms int) *hist {
	return h.add(ms, Op{Process: "nemesis", Type: OK, F: FRecovered})
}

// good is a valid history: a keyed and an unkeyed ticket, each executed
// and answered with its own reply during the run and at the end; a
// lookup before the reply saw 300.
func good() *hist {
	h := &hist{}
	h.add(0, Op{Process: "nemesis", Type: OK, F: FFault, Value: "kill", Node: "pa"})
	h.keyed(10, "k1", "T1", "pa")
	h.request(20, "u1.0", "T2", "pb")
	h.look(25, "T1", "300", "", false)
	h.exec(30, "k1", "k1|w0|1")
	h.exec(40, "u1.0", "u1.0|w0|2")
	h.look(50, "T1", "200", "k1|w0|1", false)
	h.look(900, "T1", "200", "k1|w0|1", true)
	h.look(910, "T2", "200", "u1.0|w0|2", true)
	return h
}

func TestCheckValid(t *testing.T) {
	r := Check(*good())
	if v := r.Violations(); len(v) != 0 {
		t.Fatalf("a valid history violates: %v", v)
	}
	if r.Acked != 2 || r.AckedBy["pa"] != 1 || r.AckedBy["pb"] != 1 {
		t.Errorf("acked %d by %v, want 2: pa 1, pb 1", r.Acked, r.AckedBy)
	}
	if r.Faults["kill"] != 1 || r.Jobs != 2 || r.RunTwice != 0 || len(r.SplitBrains) != 0 {
		t.Errorf("faults %v, jobs %d, run twice %d, split brains %d; want kill 1, 2, 0, 0", r.Faults, r.Jobs, r.RunTwice, len(r.SplitBrains))
	}
	// A job run twice whose second reply nobody recorded is counted, not
	// a violation (at-least-once).
	h := good().exec(60, "k1", "k1|w1|1")
	r = Check(*h)
	if v := r.Violations(); len(v) != 0 || r.RunTwice != 1 {
		t.Errorf("a job run twice: violations %v, run twice %d; want none, 1", v, r.RunTwice)
	}
	rep := Report(Meta{Scenario: "x", Seed: 7}, r)
	for _, want := range []string{"seed 7", "faults injected: 1 (kill 1)", "lost: 0", "verdict: PASS", "jobs run twice: 1 of 2"} {
		if !strings.Contains(rep, want) {
			t.Errorf("report lacks %q:\n%s", want, rep)
		}
	}
}

func TestCheckViolations(t *testing.T) {
	for _, c := range []struct {
		name  string
		build func() *hist
		want  string // a line of Violations starts with it
		check func(r *Result) bool
	}{
		{"not looked up at the end", func() *hist {
			return good().request(100, "u2.0", "T3", "pa").exec(110, "u2.0", "u2.0|w0|3")
		}, "lost: 1", func(r *Result) bool { return strings.Contains(r.Lost[0].Detail, "never looked up") }},
		{"answered 400 at the end", func() *hist {
			return good().request(100, "u2.0", "T3", "pa").look(920, "T3", "400", "unknown ticket", true)
		}, "lost: 1", func(r *Result) bool { return r.Final400 == 1 }},
		{"answered another body's reply at the end", func() *hist {
			return good().request(100, "u2.0", "T3", "pa").look(920, "T3", "200", "u1.0|w0|2", true)
		}, "lost: 1", nil},
		{"answered 500 at the end", func() *hist {
			return good().request(100, "u2.0", "T3", "pa").look(920, "T3", "500", "not active", true)
		}, "lost: 1", nil},
		{"400 during the run", func() *hist {
			return good().look(60, "T2", "400", "unknown ticket", false)
		}, "answered 400 while acknowledged: 1", func(r *Result) bool { return r.Final400 == 0 && len(r.Lost) == 0 }},
		{"two replies", func() *hist {
			return good().exec(70, "k1", "k1|w1|9").look(80, "T1", "200", "k1|w1|9", false)
		}, "two different replies outside a split brain: 1", nil},
		{"a key made two tickets", func() *hist {
			return good().keyed(100, "k1", "T9", "pb").look(930, "T9", "200", "k1|w0|1", true)
		}, "duplicate keyed tickets outside a split brain: 1", nil},
		{"a key's second ticket found at the end", func() *hist {
			// T9 was never acknowledged, but its reply is k1's.
			return good().exec(800, "k1", "k1|w2|5").look(930, "T9", "200", "k1|w2|5", true)
		}, "duplicate keyed tickets outside a split brain: 1", func(r *Result) bool { return r.RunTwice == 1 }},
		{"a reply no worker made", func() *hist {
			return good().look(60, "T1", "200", "k1|w9|99", false)
		}, "reply no worker made: 1", nil},
		{"one ticket for two bodies", func() *hist {
			return good().request(100, "u2.0", "T1", "pb")
		}, "ticket acknowledged for two bodies: 1", nil},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			r := Check(*c.build())
			v := r.Violations()
			found := false
			for _, line := range v {
				found = found || strings.HasPrefix(line, c.want)
			}
			if !found {
				t.Fatalf("violations %q, want one starting %q", v, c.want)
			}
			if c.check != nil && !c.check(r) {
				t.Errorf("result %+v fails the case's check", r)
			}
			if rep := Report(Meta{Scenario: "x"}, r); !strings.Contains(rep, "verdict: FAIL") {
				t.Errorf("report does not say FAIL:\n%s", rep)
			}
		})
	}
}

// TestCheckSplitBrain: with pa and pb serving at once, two replies and a
// key's two tickets are counted inside the split brain, not violations;
// losses still are.
func TestCheckSplitBrain(t *testing.T) {
	split := func() *hist {
		h := good()
		h.serve(0, 1000, "pa").serve(500, 1500, "pb").recovered(2000)
		// During the overlap both acknowledged; pb ran k1 again and
		// acknowledged k1 as T9.
		h.request(600, "u5.0", "T5", "pa").exec(610, "u5.0", "u5.0|w0|5").look(2100, "T5", "200", "u5.0|w0|5", true)
		h.exec(700, "k1", "k1|w1|7").keyed(710, "k1", "T9", "pb")
		h.look(720, "T1", "200", "k1|w1|7", false)
		h.look(2100, "T9", "200", "k1|w1|7", true)
		return h
	}
	r := Check(*split())
	if v := r.Violations(); len(v) != 0 {
		t.Fatalf("inside a split brain: violations %v, want none", v)
	}
	if len(r.SplitBrains) != 1 || len(r.TwoRepliesSB) != 1 || len(r.DupKeyedSB) != 1 {
		t.Fatalf("split brains %d, two replies inside %d, duplicate keys inside %d; want 1, 1, 1", len(r.SplitBrains), len(r.TwoRepliesSB), len(r.DupKeyedSB))
	}
	w := r.SplitBrains[0]
	if !w.Start.Equal(at(500)) || !w.Overlap.Equal(at(1000)) || !w.End.Equal(at(2000)) || strings.Join(w.Nodes, "+") != "pa+pb" {
		t.Errorf("window %s-%s (overlap %s) %v, want 500-2000 (overlap 1000) pa+pb", stamp(w.Start), stamp(w.End), stamp(w.Overlap), w.Nodes)
	}
	if r.AckedInSplit["pb"] != 1 || w.Acked["pb"] != 1 || w.Acked["pa"] != 1 {
		t.Errorf("acks inside: %v, window %v; want pa 1, pb 1", r.AckedInSplit, w.Acked)
	}
	// A loss inside a split brain is still a loss.
	h := split().request(800, "u9.0", "T8", "pa")
	if v := Check(*h).Violations(); len(v) != 1 || !strings.HasPrefix(v[0], "lost: 1") {
		t.Errorf("a loss inside a split brain: violations %v, want lost: 1", v)
	}

	// The same overlap, but only pb acknowledged in it (pa's ack comes
	// after): no split brain counted, but two nodes did serve at once
	// (pa's acknowledgements may simply not have reached a client, as
	// with an isolated active), so the key's two tickets are reported,
	// not a violation.
	h = good()
	h.serve(0, 1000, "pa").serve(500, 1500, "pb").recovered(2000)
	h.exec(700, "k1", "k1|w1|7").keyed(710, "k1", "T9", "pb").look(2100, "T9", "200", "k1|w1|7", true)
	h.request(1100, "u5.0", "T5", "pa").exec(1110, "u5.0", "u5.0|w0|5").look(2100, "T5", "200", "u5.0|w0|5", true)
	if r := Check(*h); len(r.SplitBrains) != 0 || r.Overlaps != 1 || len(r.DupKeyed) != 0 || len(r.DupKeyedSB) != 1 {
		t.Errorf("one side acknowledging: %d split brains, %d overlaps, %d duplicate keys outside, %d inside; want 0, 1, 0, 1", len(r.SplitBrains), r.Overlaps, len(r.DupKeyed), len(r.DupKeyedSB))
	}

	// The same nodes, but pa was SIGSTOPped through pb's serving: no
	// split brain, and the anomalies are violations.
	h = split()
	h.add(450, Op{Process: "nemesis", Type: OK, F: FPause, Node: "pa", End: at(1200)})
	r = Check(*h)
	if len(r.SplitBrains) != 0 {
		t.Fatalf("a paused node served: %d split brains, want 0", len(r.SplitBrains))
	}
	if len(r.TwoReplies) != 1 || len(r.DupKeyed) != 1 {
		t.Errorf("two replies %d, duplicate keys %d outside a split brain; want 1, 1", len(r.TwoReplies), len(r.DupKeyed))
	}
}

func TestSubtract(t *testing.T) {
	pause := func(from, to int) Op { return Op{Time: at(from), End: at(to)} }
	for _, c := range []struct {
		name   string
		pauses []Op
		want   [][2]int
	}{
		{"none", nil, [][2]int{{0, 100}}},
		{"inside", []Op{pause(20, 30)}, [][2]int{{0, 20}, {30, 100}}},
		{"over the start", []Op{pause(-10, 30)}, [][2]int{{30, 100}}},
		{"over the end", []Op{pause(80, 130)}, [][2]int{{0, 80}}},
		{"all", []Op{pause(-10, 130)}, nil},
		{"outside", []Op{pause(100, 130)}, [][2]int{{0, 100}}},
		{"open", []Op{{Time: at(50)}}, [][2]int{{0, 50}}},
		{"two", []Op{pause(10, 20), pause(40, 50)}, [][2]int{{0, 10}, {20, 40}, {50, 100}}},
	} {
		got := subtract(at(0), at(100), c.pauses)
		ok := len(got) == len(c.want)
		for i := 0; ok && i < len(got); i++ {
			ok = got[i][0].Equal(at(c.want[i][0])) && got[i][1].Equal(at(c.want[i][1]))
		}
		if !ok {
			t.Errorf("%s: got %v, want %v (ms)", c.name, got, c.want)
		}
	}
}

func TestLostBy(t *testing.T) {
	h := good().request(100, "u2.0", "T3", "pa").request(110, "u3.0", "T4", "pa")
	h.add(920, Op{Process: "final", Type: Info, F: FLookup, Ticket: "T3", Final: true, Err: "no answer"})
	h.look(930, "T4", "500", "not active", true)
	r := Check(*h)
	if len(r.Lost) != 2 || r.LostBy["no answer"] != 1 || r.LostBy["answered 500"] != 1 {
		t.Fatalf("lost %d by %v, want 2: no answer 1, answered 500 1", len(r.Lost), r.LostBy)
	}
}

func TestWholeness(t *testing.T) {
	names := []string{"a", "b", "c"}
	voters := []string{"a", "b", "c"}
	leader := status{ID: "a", State: "Leader", Term: 3, Commit: 10, Voters: voters}
	follow := func(id string, applied uint64) status {
		return status{ID: id, State: "Follower", Leader: "a", Term: 3, Applied: applied, Voters: voters}
	}
	none := []error{nil, nil, nil}
	for _, c := range []struct {
		name string
		sts  []status
		errs []error
		want string // error text, or "" for whole
	}{
		{"whole", []status{leader, follow("b", 10), follow("c", 12)}, none, ""},
		{"a node silent", []status{leader, follow("b", 10), {}}, []error{nil, nil, errTimeout}, "c: no answer"},
		{"no leader", []status{follow("a", 1), follow("b", 10), follow("c", 12)}, none, "no leader"},
		{"two leaders", []status{leader, {ID: "b", State: "Leader", Term: 3, Voters: voters}, follow("c", 12)}, none, "both lead"},
		{"a voter missing", []status{{ID: "a", State: "Leader", Voters: voters[:2]}, follow("b", 10), follow("c", 12)}, none, "has voters"},
		{"behind", []status{leader, follow("b", 9), follow("c", 12)}, none, "b applied 9 of 10"},
		{"follows another", []status{leader, {ID: "b", State: "Follower", Leader: "c"}, follow("c", 12)}, none, `b follows "c"`},
	} {
		var w wholeness
		i, err := w.check(names, c.sts, c.errs)
		switch {
		case c.want == "" && (err != nil || i != 0):
			t.Errorf("%s: leader %d, %v; want 0, whole", c.name, i, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
	}
}

func TestExitReason(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ log, want string }{
		{"time=x level=INFO msg=a\ntitanic broker: binary star: peer x: binarystar: dual actives: peer is active, aborting\n", "dual actives"},
		{"time=x level=ERROR msg=\"raft: failed to get log\"\npanic: log not found\n\ngoroutine 1 [running]:\n", "panic: log not found"},
		{"titanic broker: pair: store diverged from the replicated log\n", "store diverged"},
		{"time=x level=INFO msg=a\n", "exited without an error line"},
	} {
		path := dir + "/log"
		if err := os.WriteFile(path, []byte(c.log), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := exitReason(path); got != c.want {
			t.Errorf("exitReason(%q) = %q, want %q", c.log, got, c.want)
		}
	}
}

// A fork without two nodes serving at once: pa's last reply is in its
// uncommitted tail when it steps down; pb goes on alone and serves, runs
// the job again and answers it; then pa goes on alone from its own log
// (the tail applied) while pb's branch is still open. Two replies are a
// split brain's, reported, not a violation. Had pa met pb's branch first
// (pb's raft state moved aside and joined), the second reply would break
// the invariant.
func TestCheckFork(t *testing.T) {
	fork := func(paMeetsFirst bool) *hist {
		h := good()
		h.add(0, Op{Process: "pa", Type: OK, F: FSolo, Node: "pa", Value: "joined"})
		h.serve(0, 1000, "pa")
		h.request(900, "u7.0", "T7", "pa").exec(950, "u7.0", "u7.0|w1|2")
		h.add(1100, Op{Process: "pb", Type: OK, F: FSolo, Node: "pb", Value: "alone"})
		h.serve(1120, 1500, "pb")
		h.exec(1200, "u7.0", "u7.0|w1|3").look(1250, "T7", "200", "u7.0|w1|3", false)
		if paMeetsFirst {
			h.add(1600, Op{Process: "pb", Type: OK, F: FSolo, Node: "pb", Value: "joined"})
		}
		h.add(1900, Op{Process: "pa", Type: OK, F: FSolo, Node: "pa", Value: "alone"})
		h.serve(1920, 3000, "pa")
		h.add(2600, Op{Process: "pb", Type: OK, F: FSolo, Node: "pb", Value: "joined"})
		h.recovered(2700)
		h.look(3000, "T7", "200", "u7.0|w1|2", true)
		return h
	}
	r := Check(*fork(false))
	if v := r.Violations(); len(v) != 0 {
		t.Fatalf("inside a fork: violations %v, want none", v)
	}
	if len(r.SplitBrains) != 0 || len(r.Forks) != 1 || len(r.TwoRepliesSB) != 1 {
		t.Fatalf("split brains %d, forks %d, two replies inside %d; want 0, 1, 1", len(r.SplitBrains), len(r.Forks), len(r.TwoRepliesSB))
	}
	w := r.Forks[0]
	if !w.Start.Equal(at(1100)) || !w.Overlap.Equal(at(1900)) || !w.End.Equal(at(2700)) || strings.Join(w.Nodes, "+") != "pa+pb" {
		t.Errorf("fork %s-%s (second branch %s) %v, want 1100-2700 (second 1900) pa+pb", stamp(w.Start), stamp(w.End), stamp(w.Overlap), w.Nodes)
	}
	r = Check(*fork(true))
	if len(r.Forks) != 0 || len(r.TwoReplies) != 1 {
		t.Fatalf("pb's branch met before pa went alone: forks %d, two replies outside %d; want 0, 1", len(r.Forks), len(r.TwoReplies))
	}
}
