package jepsen

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Problem is one violation (or one counted anomaly) the checker found.
type Problem struct {
	Ticket string
	Key    string
	Detail string
}

func (p Problem) String() string {
	var b strings.Builder
	if p.Ticket != "" {
		fmt.Fprintf(&b, "ticket %s ", p.Ticket)
	}
	if p.Key != "" {
		fmt.Fprintf(&b, "key %s ", p.Key)
	}
	b.WriteString(p.Detail)
	return b.String()
}

// Window is a split brain: an interval in which two or more nodes served
// at once (by their logs, less the time they were SIGSTOPped) and both
// acknowledged submits, extended to the cluster's next recovery, since
// what the two sides did lasts until then. Acked counts the
// acknowledgements inside it by node.
type Window struct {
	Start, End time.Time // End: extended to the next recovery
	Overlap    time.Time // end of the overlap itself
	Nodes      []string
	Acked      map[string]int
}

// Result is what Check finds in a history.
type Result struct {
	Faults       map[string]int // faults injected, by kind
	NotRecovered int            // recoveries that timed out
	Exits        map[string]int // node exits nobody asked for: "node: why"

	Acked        int            // distinct acknowledged tickets
	AckedBy      map[string]int // acknowledgements by the node that made them ("?": unknown)
	AckedInSplit map[string]int // of which inside a split brain
	Calls        map[string]int // client ops by "f type"

	SplitBrains []Window
	Overlaps    int // nodes serving at once, but not both acknowledging: not split brains
	// Forks are the intervals in which two nodes each held a branch of
	// their own (each its raft's only voter, by its log, without having
	// met the other's since), from the first branch's start to the next
	// recovery: both sides may have written, if not at the same moment
	// (one side's uncommitted tail applied when it went on alone), and
	// what each wrote meets the other's only in the merge.
	Forks []Window

	Lost          []Problem      // acknowledged, not answered with its own reply at the end
	Final400      int            // of which answered 400 at the end
	LostBy        map[string]int // lost, by the last answer at the end
	Answered400   []Problem      // acknowledged, answered 400 during the run
	TwoReplies    []Problem      // two different replies, outside a split brain
	TwoRepliesSB  []Problem      // ... inside one
	DupKeyed      []Problem      // a key with two tickets, outside a split brain
	DupKeyedSB    []Problem      // ... inside one
	TwoBodies     []Problem      // one ticket acknowledged for two bodies
	NotFromWorker []Problem      // a reply no worker made for that body

	Jobs     int // distinct bodies executed
	RunTwice int // bodies executed more than once
}

// Violations lists what breaks the invariants, one line per kind; empty
// when the history is valid. Split brains, jobs run twice and anomalies
// inside a split brain are reported, not violations.
func (r *Result) Violations() []string {
	var out []string
	add := func(name string, ps []Problem) {
		if len(ps) > 0 {
			out = append(out, fmt.Sprintf("%s: %d (first: %s)", name, len(ps), ps[0]))
		}
	}
	add("lost", r.Lost)
	add("answered 400 while acknowledged", r.Answered400)
	add("two different replies outside a split brain", r.TwoReplies)
	add("duplicate keyed tickets outside a split brain", r.DupKeyed)
	add("ticket acknowledged for two bodies", r.TwoBodies)
	add("reply no worker made", r.NotFromWorker)
	return out
}

// ack is an acknowledged ticket.
type ack struct {
	body, key, node string
	at              time.Time
}

// Check checks a history. It is a pure function of ops.
//
// The invariants: every acknowledged ticket (a 200 with a ticket to a
// submit or request) is answered at the end (a Final lookup) with a reply
// a worker made for that ticket's body; no acknowledged ticket is answered
// 400 during the run; outside a split brain no ticket has two different
// replies and no idempotency key has two tickets; no ticket is
// acknowledged for two bodies; every reply seen is one a worker made.
func Check(ops []Op) *Result {
	r := &Result{
		Faults: map[string]int{}, Exits: map[string]int{},
		AckedBy: map[string]int{}, AckedInSplit: map[string]int{}, Calls: map[string]int{},
		LostBy: map[string]int{},
	}
	var (
		acks      = map[string]ack{}             // ticket → first ack
		keyOf     = map[string]string{}          // keyed body → key
		keyTix    = map[string]map[string]bool{} // key → tickets
		keyAckAt  = map[string][]time.Time{}     // key → ack times
		replies   = map[string][]string{}        // ticket → distinct 200 replies, in order
		finals    = map[string][]Op{}            // ticket → final lookups answered
		tried     = map[string]bool{}            // ticket → a final lookup went unanswered
		made      = map[string][]time.Time{}     // reply → executions
		execs     = map[string]int{}             // body → executions
		bodyExecs = map[string][]time.Time{}     // body → execution times
		serves    []Op
		solos     []Op
		pauses    = map[string][]Op{}
		recovered []time.Time
		last      time.Time
	)
	for _, op := range ops {
		last = later(last, op.Time, op.End)
		switch op.F {
		case FSubmit, FRequest, FLookup:
			if op.Type != Invoke {
				r.Calls[string(op.F)+" "+op.Type.String()]++
			}
		}
		switch op.F {
		case FSubmit:
			if op.Key != "" && op.Body != "" {
				keyOf[op.Body] = op.Key
			}
		case FExec:
			made[op.Value] = append(made[op.Value], op.Time)
			execs[op.Body]++
			bodyExecs[op.Body] = append(bodyExecs[op.Body], op.Time)
		case FFault:
			r.Faults[op.Value]++
		case FRecovered:
			recovered = append(recovered, op.Time)
			if op.Type == Fail {
				r.NotRecovered++
			}
		case FServe:
			serves = append(serves, op)
		case FSolo:
			solos = append(solos, op)
		case FPause:
			pauses[op.Node] = append(pauses[op.Node], op)
		case FExit:
			r.Exits[op.Node+": "+op.Value]++
		}
	}
	var acked []Op
	for _, op := range ops {
		if (op.F == FSubmit || op.F == FRequest) && op.Type == OK && op.Ticket != "" {
			acked = append(acked, op)
		}
	}
	var overlaps []Window
	r.SplitBrains, r.Overlaps, overlaps = splitBrains(serves, pauses, recovered, last, acked)
	r.Forks = forks(solos, recovered, last)
	inSplit := func(t time.Time) *Window {
		for i := range r.SplitBrains {
			w := &r.SplitBrains[i]
			if !t.Before(w.Start) && !t.After(w.End) {
				return w
			}
		}
		return nil
	}
	// A key's two tickets and a ticket's two replies are documented
	// outcomes of two nodes serving at once, whether or not both
	// acknowledgements reached a client.
	inSplitOrOverlap := func(t time.Time) bool {
		if inSplit(t) != nil {
			return true
		}
		within := func(w Window) bool { return !t.Before(w.Start) && !t.After(w.End) }
		return slices.ContainsFunc(overlaps, within) || slices.ContainsFunc(r.Forks, within)
	}

	for _, op := range ops {
		switch {
		case (op.F == FSubmit || op.F == FRequest) && op.Type == OK && op.Ticket != "":
			node := cmp.Or(op.Node, "?")
			r.AckedBy[node]++
			if w := inSplit(op.Time); w != nil {
				r.AckedInSplit[node]++
				w.Acked[node]++
			}
			if op.Key != "" {
				addSet(keyTix, op.Key, op.Ticket)
				keyAckAt[op.Key] = append(keyAckAt[op.Key], op.Time)
			}
			prev, seen := acks[op.Ticket]
			if !seen {
				acks[op.Ticket] = ack{body: op.Body, key: op.Key, node: node, at: op.Time}
			} else if prev.body != op.Body {
				r.TwoBodies = append(r.TwoBodies, Problem{Ticket: op.Ticket,
					Detail: fmt.Sprintf("acknowledged for body %q at %s and for %q at %s", prev.body, stamp(prev.at), op.Body, stamp(op.Time))})
			}
		case op.F == FLookup && op.Type == Info && op.Final:
			tried[op.Ticket] = true
		case op.F == FLookup && op.Type == OK:
			if op.Final {
				finals[op.Ticket] = append(finals[op.Ticket], op)
			}
			if op.Code != "200" {
				continue
			}
			if !slices.Contains(replies[op.Ticket], op.Value) {
				replies[op.Ticket] = append(replies[op.Ticket], op.Value)
			}
			body, _, _ := strings.Cut(op.Value, "|")
			if key, ok := keyOf[body]; ok {
				addSet(keyTix, key, op.Ticket)
			}
		}
	}
	r.Acked = len(acks)

	// 400 to an acknowledged ticket during the run (after its ack: a
	// lookup of a ticket is only made once some client holds it).
	seen400 := map[string]bool{}
	for _, op := range ops {
		if op.F != FLookup || op.Type != OK || op.Code != "400" || op.Final {
			continue
		}
		a, ok := acks[op.Ticket]
		if !ok || op.Time.Before(a.at) || seen400[op.Ticket] {
			continue
		}
		seen400[op.Ticket] = true
		r.Answered400 = append(r.Answered400, Problem{Ticket: op.Ticket, Key: a.key,
			Detail: fmt.Sprintf("acknowledged by %s at %s, answered 400 by %s at %s", a.node, stamp(a.at), cmp.Or(op.Node, "?"), stamp(op.Time))})
	}

	// Lost: not answered at the end with a reply of its own body.
	for _, tk := range slices.Sorted(maps.Keys(acks)) {
		a := acks[tk]
		fs := finals[tk]
		good := slices.ContainsFunc(fs, func(op Op) bool {
			body, _, _ := strings.Cut(op.Value, "|")
			return op.Code == "200" && body == a.body
		})
		if good {
			continue
		}
		why, kind := "never looked up at the end", "not looked up"
		if tried[tk] {
			why, kind = "not answered at the end", "no answer"
		}
		if len(fs) > 0 {
			l := fs[len(fs)-1]
			kind = "answered " + l.Code
			switch l.Code {
			case "400":
				r.Final400++
			case "200":
				kind = "another reply"
			}
			why = fmt.Sprintf("answered %s %q by %s at the end", l.Code, l.Value, cmp.Or(l.Node, "?"))
		}
		r.LostBy[kind]++
		r.Lost = append(r.Lost, Problem{Ticket: tk, Key: a.key,
			Detail: fmt.Sprintf("acknowledged by %s at %s for %q: %s", a.node, stamp(a.at), a.body, why)})
	}

	// Replies: each made by a worker for that body, one per ticket.
	for _, tk := range slices.Sorted(maps.Keys(replies)) {
		rs := replies[tk]
		for _, v := range rs {
			if len(made[v]) == 0 {
				r.NotFromWorker = append(r.NotFromWorker, Problem{Ticket: tk, Detail: fmt.Sprintf("reply %q was made by no worker", v)})
			}
		}
		if len(rs) < 2 {
			continue
		}
		p := Problem{Ticket: tk, Detail: fmt.Sprintf("%d different replies: %q", len(rs), rs)}
		var times []time.Time
		if a, ok := acks[tk]; ok {
			times = append(times, a.at)
		}
		for _, v := range rs {
			times = append(times, made[v]...)
		}
		if slices.ContainsFunc(times, inSplitOrOverlap) {
			r.TwoRepliesSB = append(r.TwoRepliesSB, p)
		} else {
			r.TwoReplies = append(r.TwoReplies, p)
		}
	}

	// Keys: one ticket each.
	for _, key := range slices.Sorted(maps.Keys(keyTix)) {
		tix := keyTix[key]
		if len(tix) < 2 {
			continue
		}
		p := Problem{Key: key, Detail: fmt.Sprintf("%d tickets: %v", len(tix), slices.Sorted(maps.Keys(tix)))}
		times := slices.Clone(keyAckAt[key])
		for body, k := range keyOf {
			if k == key {
				times = append(times, bodyExecs[body]...)
			}
		}
		if slices.ContainsFunc(times, inSplitOrOverlap) {
			r.DupKeyedSB = append(r.DupKeyedSB, p)
		} else {
			r.DupKeyed = append(r.DupKeyed, p)
		}
	}

	r.Jobs = len(execs)
	for _, n := range execs {
		if n > 1 {
			r.RunTwice++
		}
	}
	return r
}

// splitBrains finds the intervals in which two nodes served at once and
// both acknowledged something: serving intervals less pauses, overlapped
// pairwise, kept when both nodes have an ack in the overlap, merged, each
// extended to the first recovery after it (or to last). It also returns
// how many overlaps it dropped for want of acks on both sides (a deposed
// leader that logs "not serving" a moment after its successor serves).
func splitBrains(serves []Op, pauses map[string][]Op, recovered []time.Time, last time.Time, acks []Op) ([]Window, int, []Window) {
	type span struct {
		node       string
		start, end time.Time
	}
	var spans []span
	for _, s := range serves {
		end := s.End
		if end.IsZero() {
			end = last
		}
		for _, piece := range subtract(s.Time, end, pauses[s.Node]) {
			spans = append(spans, span{s.Node, piece[0], piece[1]})
		}
	}
	ackedIn := func(node string, start, end time.Time) bool {
		return slices.ContainsFunc(acks, func(op Op) bool {
			return op.Node == node && !op.Time.Before(start) && !op.Time.After(end)
		})
	}
	var ws, droppedWins []Window
	dropped := 0
	for i, a := range spans {
		for _, b := range spans[i+1:] {
			if a.node == b.node {
				continue
			}
			start, end := later(a.start, b.start), earlier(a.end, b.end)
			if !end.After(start) {
				continue
			}
			if !ackedIn(a.node, start, end) || !ackedIn(b.node, start, end) {
				dropped++
				droppedWins = append(droppedWins, Window{Start: start, Overlap: end, Nodes: []string{a.node, b.node}})
				continue
			}
			ws = append(ws, Window{Start: start, Overlap: end, Nodes: []string{a.node, b.node}})
		}
	}
	slices.SortFunc(ws, func(a, b Window) int { return a.Start.Compare(b.Start) })
	slices.SortFunc(recovered, func(a, b time.Time) int { return a.Compare(b) })
	var out []Window
	for _, w := range ws {
		w.End = last
		for _, t := range recovered {
			if !t.Before(w.Overlap) {
				w.End = t
				break
			}
		}
		if n := len(out); n > 0 && !w.Start.After(out[n-1].End) {
			m := &out[n-1]
			m.Overlap = later(m.Overlap, w.Overlap)
			m.End = later(m.End, w.End)
			for _, node := range w.Nodes {
				if !slices.Contains(m.Nodes, node) {
					m.Nodes = append(m.Nodes, node)
				}
			}
			continue
		}
		w.Acked = map[string]int{}
		out = append(out, w)
	}
	for i := range out {
		slices.Sort(out[i].Nodes)
	}
	// The overlaps without acks on both sides, each extended to the first
	// recovery after it, as the split brains are: a node that served
	// alone while its acknowledgements could not reach any client (an
	// isolated active) still made tickets the other side then made again
	// for the same key.
	for i := range droppedWins {
		w := &droppedWins[i]
		w.End = last
		for _, t := range recovered {
			if !t.Before(w.Overlap) {
				w.End = t
				break
			}
		}
	}
	return out, dropped, droppedWins
}

// forks finds the intervals in which two nodes held branches of their own
// (see Result.Forks): a node going alone while another's branch, started
// earlier, has not met its peer's since. A node's branch outlives its
// process (it is on its disk), so a kill does not end it; meeting the
// peer does. Each window runs from the older branch's start to the first
// recovery after the younger's.
func forks(solos []Op, recovered []time.Time, last time.Time) []Window {
	solos = slices.Clone(solos)
	slices.SortStableFunc(solos, func(a, b Op) int { return a.Time.Compare(b.Time) })
	recovered = slices.Clone(recovered)
	slices.SortFunc(recovered, func(a, b time.Time) int { return a.Compare(b) })
	branch := map[string]time.Time{} // node → when its open branch started
	var out []Window
	for _, op := range solos {
		if op.Value != "alone" {
			delete(branch, op.Node)
			continue
		}
		for _, other := range slices.Sorted(maps.Keys(branch)) {
			if other == op.Node {
				continue
			}
			w := Window{Start: branch[other], Overlap: op.Time, End: last, Nodes: []string{other, op.Node}}
			for _, t := range recovered {
				if !t.Before(op.Time) {
					w.End = t
					break
				}
			}
			slices.Sort(w.Nodes)
			if n := len(out); n > 0 && !w.Start.After(out[n-1].End) {
				m := &out[n-1]
				m.Overlap, m.End = later(m.Overlap, w.Overlap), later(m.End, w.End)
				for _, node := range w.Nodes {
					if !slices.Contains(m.Nodes, node) {
						m.Nodes = append(m.Nodes, node)
					}
				}
				slices.Sort(m.Nodes)
				continue
			}
			out = append(out, w)
		}
		if _, open := branch[op.Node]; !open {
			branch[op.Node] = op.Time
		}
	}
	return out
}

// subtract returns [start, end) less the pauses' intervals.
func subtract(start, end time.Time, pauses []Op) [][2]time.Time {
	pieces := [][2]time.Time{{start, end}}
	for _, p := range pauses {
		pend := p.End
		if pend.IsZero() {
			pend = end
		}
		var next [][2]time.Time
		for _, pc := range pieces {
			if !p.Time.Before(pc[1]) || !pend.After(pc[0]) {
				next = append(next, pc)
				continue
			}
			if p.Time.After(pc[0]) {
				next = append(next, [2]time.Time{pc[0], p.Time})
			}
			if pend.Before(pc[1]) {
				next = append(next, [2]time.Time{pend, pc[1]})
			}
		}
		pieces = next
	}
	return pieces
}

func addSet(m map[string]map[string]bool, k, v string) {
	if m[k] == nil {
		m[k] = map[string]bool{}
	}
	m[k][v] = true
}

func later(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t.After(out) {
			out = t
		}
	}
	return out
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func stamp(t time.Time) string { return t.Format("15:04:05.000") }
