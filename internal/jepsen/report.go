package jepsen

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Meta is what a report says about the run besides the checker's result.
type Meta struct {
	Scenario string
	Seed     uint64
	Replay   string // how to run it again
	Duration time.Duration
	Notes    []string // what the driver saw: a recovery that timed out, an early end
}

// maxExamples bounds the problems listed per kind.
const maxExamples = 10

// Report renders the result as the text the test logs and writes to
// $TITANIC_ARTIFACTS/jepsen-<scenario>.txt.
func Report(m Meta, r *Result) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("jepsen %s: seed %d, %s", m.Scenario, m.Seed, m.Duration.Round(time.Second))
	if m.Replay != "" {
		p("replay: %s", m.Replay)
	}
	total := 0
	for _, n := range r.Faults {
		total += n
	}
	p("faults injected: %d (%s)", total, counts(r.Faults))
	if r.NotRecovered > 0 {
		p("recoveries that timed out: %d", r.NotRecovered)
	}
	if len(r.Exits) > 0 {
		p("node exits nobody asked for: %s", counts(r.Exits))
	}
	for _, n := range m.Notes {
		p("note: %s", n)
	}
	acked := 0
	for _, n := range r.AckedBy {
		acked += n
	}
	p("tickets acknowledged: %d distinct, %d acks by node: %s", r.Acked, acked, counts(r.AckedBy))
	p("client ops: %s", counts(r.Calls))
	p("split brains (two nodes serving and acknowledging at once): %d; serving overlaps without acks on both sides: %d", len(r.SplitBrains), r.Overlaps)
	for i, w := range r.SplitBrains {
		p("  %d: %s-%s (overlap until %s), nodes %s; acks inside: %s", i+1, stamp(w.Start), stamp(w.End), stamp(w.Overlap),
			strings.Join(w.Nodes, "+"), counts(w.Acked))
	}
	p("forks (two nodes each alone in its raft, their branches merged on heal): %d", len(r.Forks))
	for i, w := range r.Forks {
		p("  %d: %s-%s (second branch from %s), nodes %s", i+1, stamp(w.Start), stamp(w.End), stamp(w.Overlap), strings.Join(w.Nodes, "+"))
	}
	if len(r.Lost) > 0 {
		p("lost: %d (%s)", len(r.Lost), counts(r.LostBy))
	} else {
		p("lost: 0")
	}
	p("answered 400 while acknowledged: %d during the run, %d at the end", len(r.Answered400), r.Final400)
	p("two different replies: %d outside split brains, %d inside", len(r.TwoReplies), len(r.TwoRepliesSB))
	p("duplicate keyed tickets: %d outside split brains, %d inside (or where two nodes served at once)", len(r.DupKeyed), len(r.DupKeyedSB))
	p("jobs run twice: %d of %d jobs", r.RunTwice, r.Jobs)
	p("replies no worker made: %d; tickets acknowledged for two bodies: %d", len(r.NotFromWorker), len(r.TwoBodies))
	v := r.Violations()
	if len(v) == 0 {
		p("verdict: PASS")
	} else {
		p("verdict: FAIL")
		for _, line := range v {
			p("  %s", line)
		}
	}
	for _, k := range []struct {
		name string
		ps   []Problem
	}{
		{"lost", r.Lost}, {"answered 400 while acknowledged", r.Answered400},
		{"two different replies outside a split brain", r.TwoReplies}, {"two different replies inside a split brain", r.TwoRepliesSB},
		{"duplicate keyed tickets outside a split brain", r.DupKeyed}, {"duplicate keyed tickets inside a split brain", r.DupKeyedSB},
		{"reply no worker made", r.NotFromWorker}, {"ticket acknowledged for two bodies", r.TwoBodies},
	} {
		if len(k.ps) == 0 {
			continue
		}
		p("%s (%d, first %d):", k.name, len(k.ps), min(len(k.ps), maxExamples))
		for _, pr := range k.ps[:min(len(k.ps), maxExamples)] {
			p("  %s", pr)
		}
	}
	return b.String()
}

// counts renders a map of counts as "a 1, b 2", sorted by key.
func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
