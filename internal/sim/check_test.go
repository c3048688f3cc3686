package sim

import (
	"reflect"
	"testing"

	"github.com/titanicmq/titanic/store"
)

func id(b byte) store.ID { return store.ID{15: b} }

// good is a history that keeps every invariant: two tickets acknowledged,
// one answered by its second attempt after a redelivery, lookups before
// the ack (unknown) and after (pending, done), replicas alike.
func good() *History {
	return &History{
		Acks: []Ack{
			{Seq: 2, Ticket: id(1), Body: "a", Node: "primary"},
			{Seq: 3, Ticket: id(2), Key: "k", Body: "b", Node: "primary"},
		},
		Dispatches: []Dispatch{
			{Seq: 4, Ticket: id(1), Attempt: 1},
			{Seq: 5, Ticket: id(1), Attempt: 2},
			{Seq: 6, Ticket: id(2), Attempt: 1},
		},
		Replies: []Reply{
			{Seq: 7, Ticket: id(1), Attempt: 2, Reply: "a#2", Acked: true},
			{Seq: 8, Ticket: id(2), Attempt: 1, Reply: "b#1", Acked: true},
		},
		Lookups: []Lookup{
			{Seq: 1, Ticket: id(1), Answer: Answer{Kind: Unknown}},
			{Seq: 5, Ticket: id(2), Answer: Answer{Kind: Pending}},
			{Seq: 9, Ticket: id(1), Answer: Answer{Kind: Done, Reply: "a#2"}},
		},
		Final: map[store.ID]Answer{
			id(1): {Kind: Done, Reply: "a#2"},
			id(2): {Kind: Done, Reply: "b#1"},
		},
		Stores: map[string]map[store.ID]Stored{
			"primary": {id(1): {State: store.StateDone, Reply: "a#2"}, id(2): {State: store.StateDone, Reply: "b#1"}},
			"backup":  {id(1): {State: store.StateDone, Reply: "a#2"}, id(2): {State: store.StateDone, Reply: "b#1"}},
		},
	}
}

func TestCheckPasses(t *testing.T) {
	r := Check(good())
	if !r.OK() {
		t.Fatalf("a good history fails: %s", r)
	}
	want := Report{Acked: 2, Keyed: 1, Dispatches: 3, Lookups: 3, Unknowns: 1, RunTwice: 1}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("report %+v, want %+v", r, want)
	}
}

// Each broken invariant is reported, with its kind, and nothing else.
func TestCheckFails(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(h *History)
		want   ViolationKind
	}{
		{"lost", func(h *History) { h.Final[id(2)] = Answer{Kind: Unknown} }, Lost},
		{"no final answer", func(h *History) { delete(h.Final, id(2)) }, Unanswered},
		{"pending at the end", func(h *History) { h.Final[id(2)] = Answer{Kind: Pending} }, Unanswered},
		{"another ticket's reply", func(h *History) { h.Final[id(2)] = Answer{Kind: Done, Reply: "a#2"} }, WrongReply},
		{"a reply never given", func(h *History) { h.Final[id(2)] = Answer{Kind: Done, Reply: "b#2"} }, WrongReply},
		{"a wrong reply seen during the run", func(h *History) {
			h.Lookups = append(h.Lookups, Lookup{Seq: 10, Ticket: id(2), Answer: Answer{Kind: Done, Reply: "x"}})
		}, WrongReply},
		{"unknown after the ack", func(h *History) {
			h.Lookups = append(h.Lookups, Lookup{Seq: 4, Ticket: id(1), Answer: Answer{Kind: Unknown, Node: "backup"}})
		}, UnknownAfterAck},
		{"a replica lacks a ticket", func(h *History) { delete(h.Stores["backup"], id(1)) }, Diverged},
		{"a replica holds one more", func(h *History) { h.Stores["backup"][id(3)] = Stored{State: store.StatePending} }, Diverged},
		{"replicas answer differently", func(h *History) {
			h.Stores["backup"][id(1)] = Stored{State: store.StateDone, Reply: "a#1"}
		}, Diverged},
		{"not settled", func(h *History) { h.Stuck = []string{"0 nodes serve"} }, NotSettled},
		{"hung", func(h *History) { h.Hung = []string{"primary: Apply did not return"} }, Hung},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := good()
			tc.mutate(h)
			r := Check(h)
			if len(r.Violations) != 1 || r.Violations[0].Kind != tc.want {
				t.Fatalf("got %s, want one %s", r, tc.want)
			}
		})
	}
}

// Two acknowledged replies of one ticket (a split brain) and an answer seen
// that is not the final one are reported, not violations.
func TestCheckReportsTwice(t *testing.T) {
	h := good()
	h.Dispatches = append(h.Dispatches, Dispatch{Seq: 10, Ticket: id(2), Attempt: 2})
	h.Replies = append(h.Replies, Reply{Seq: 11, Ticket: id(2), Attempt: 2, Reply: "b#2", Acked: true})
	h.Lookups = append(h.Lookups, Lookup{Seq: 12, Ticket: id(2), Answer: Answer{Kind: Done, Reply: "b#2"}})
	r := Check(h)
	if !r.OK() || r.RunTwice != 2 || r.AnsweredTwice != 1 || r.Changed != 1 {
		t.Fatalf("report %s (run twice %d, answered twice %d, changed %d), want OK, 2, 1, 1", r, r.RunTwice, r.AnsweredTwice, r.Changed)
	}
}

// A seed replays its schedule; another seed makes another.
func TestScheduleReplays(t *testing.T) {
	for _, m := range []Mode{Pair, Group} {
		a, b := NewSchedule(m, 42, 0), NewSchedule(m, 42, 0)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: seed 42 gave two schedules:\n%s\n%s", m, a, b)
		}
		if c := NewSchedule(m, 43, 0); reflect.DeepEqual(a.Steps, c.Steps) {
			t.Fatalf("%s: seeds 42 and 43 gave the same faults", m)
		}
		faults := 0
		for _, st := range a.Steps {
			faults += len(st)
		}
		if len(a.Steps) < DefaultSteps || faults == 0 {
			t.Fatalf("%s: %d steps, %d faults", m, len(a.Steps), faults)
		}
	}
}

// Over many seeds the pair's schedules cut links both ways and one way,
// cut the raft link alone both ways and one way, crash and restart both
// nodes, and vote at both.
func TestScheduleCoverage(t *testing.T) {
	seen := map[string]bool{}
	for seed := range int64(200) {
		s := NewSchedule(Pair, seed, 0)
		for _, st := range s.Steps {
			cut, raftCut := map[[2]int]bool{}, map[[2]int]bool{}
			for _, a := range st {
				seen[a.String()] = true
				switch a.Kind {
				case Cut:
					cut[[2]int{a.From, a.To}] = true
				case CutRaft:
					raftCut[[2]int{a.From, a.To}] = true
				}
			}
			if len(cut) == 1 {
				seen["one way"] = true
			}
			if cut[[2]int{0, 1}] && cut[[2]int{1, 0}] {
				seen["both ways"] = true
			}
			if len(raftCut) == 1 {
				seen["raft one way"] = true
			}
			if len(raftCut) == 2 {
				seen["raft both ways"] = true
			}
		}
	}
	for _, want := range []string{"one way", "both ways", "crash 0", "crash 1", "restart 0", "restart 1", "vote 0", "vote 1", "heal 0->1", "heal 1->0",
		"raft one way", "raft both ways", "cut raft 0->1", "cut raft 1->0", "heal raft 0->1", "heal raft 1->0"} {
		if !seen[want] {
			t.Errorf("no schedule of 200 has %q", want)
		}
	}
}
