package sim

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/titanicmq/titanic/store"
)

// ViolationKind names a broken invariant.
type ViolationKind uint8

// Broken invariants.
const (
	// Lost: an acknowledged ticket is unknown at the end.
	Lost ViolationKind = iota + 1
	// Unanswered: an acknowledged ticket has no answer at the end
	// (pending, not ready, or no node serves).
	Unanswered
	// WrongReply: a ticket was answered with a reply no worker gave it.
	WrongReply
	// UnknownAfterAck: a lookup that began after a ticket was
	// acknowledged was told it is unknown.
	UnknownAfterAck
	// Diverged: at the end, the replicas' stores differ.
	Diverged
	// NotSettled: the run did not settle at the end (no single serving
	// node, a node that did not catch up or come back).
	NotSettled
	// Hung: a call into a running replica never returned.
	Hung
)

func (k ViolationKind) String() string {
	switch k {
	case Lost:
		return "LOST"
	case Unanswered:
		return "UNANSWERED"
	case WrongReply:
		return "WRONG REPLY"
	case UnknownAfterAck:
		return "UNKNOWN AFTER ACK"
	case Diverged:
		return "DIVERGED"
	case NotSettled:
		return "NOT SETTLED"
	case Hung:
		return "HUNG"
	}
	return "violation(?)"
}

// Violation is one broken invariant.
type Violation struct {
	Kind   ViolationKind
	Ticket store.ID // zero for NotSettled and Hung
	Detail string
}

func (v Violation) String() string {
	if v.Ticket.IsZero() {
		return v.Kind.String() + ": " + v.Detail
	}
	return fmt.Sprintf("%s: ticket %s: %s", v.Kind, v.Ticket, v.Detail)
}

// Report is the checker's verdict on a history.
type Report struct {
	Violations []Violation
	// Counts of what the history holds.
	Acked, Keyed, Dispatches, Lookups, Unknowns int
	// RunTwice counts the tickets whose job was given to workers more
	// than once (redelivery: allowed, reported).
	RunTwice int
	// AnsweredTwice counts the tickets for which replies of two attempts
	// were acknowledged (only two active nodes can do that: a split
	// brain; one of the two replies stands).
	AnsweredTwice int
	// Changed counts the tickets that a lookup saw answered with a reply
	// other than their final one.
	Changed int
}

// OK reports whether no invariant is broken.
func (r Report) OK() bool { return len(r.Violations) == 0 }

// Count returns the number of violations of the given kinds.
func (r Report) Count(kinds ...ViolationKind) int {
	n := 0
	for _, v := range r.Violations {
		if slices.Contains(kinds, v.Kind) {
			n++
		}
	}
	return n
}

// Losses counts the violations that mean acknowledged work is gone or
// held by one replica only.
func (r Report) Losses() int { return r.Count(Lost, UnknownAfterAck, Diverged) }

func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d acked (%d keyed), %d dispatches, %d lookups (%d unknown), run twice %d, answered twice %d, answer changed %d, %d violations",
		r.Acked, r.Keyed, r.Dispatches, r.Lookups, r.Unknowns, r.RunTwice, r.AnsweredTwice, r.Changed, len(r.Violations))
	const most = 12
	for i, v := range r.Violations {
		if i == most {
			fmt.Fprintf(&b, "\n  ... and %d more", len(r.Violations)-most)
			break
		}
		b.WriteString("\n  " + v.String())
	}
	return b.String()
}

// replyOf is the reply the simulated worker gives to attempt of a ticket
// whose body is body: it names both, so that a reply given to another
// ticket, or never given, is caught.
func replyOf(body string, attempt int) string { return body + "#" + strconv.Itoa(attempt) }

// Check holds a finished history against the invariants.
func Check(h *History) Report {
	var r Report
	bad := func(kind ViolationKind, id store.ID, format string, args ...any) {
		r.Violations = append(r.Violations, Violation{Kind: kind, Ticket: id, Detail: fmt.Sprintf(format, args...)})
	}
	for _, s := range h.Stuck {
		bad(NotSettled, store.ID{}, "%s", s)
	}
	for _, s := range h.Hung {
		bad(Hung, store.ID{}, "%s", s)
	}

	acks := map[store.ID]Ack{}
	for _, a := range h.Acks {
		if prev, ok := acks[a.Ticket]; ok && prev.Body != a.Body {
			bad(WrongReply, a.Ticket, "acknowledged for two bodies, %q and %q", prev.Body, a.Body)
		}
		if _, ok := acks[a.Ticket]; !ok || a.Seq < acks[a.Ticket].Seq {
			acks[a.Ticket] = a
		}
		if a.Key != "" {
			r.Keyed++
		}
	}
	r.Acked = len(acks)

	given := map[store.ID]map[string]bool{} // replies workers gave
	ackedReplies := map[store.ID]map[int]bool{}
	for _, rep := range h.Replies {
		if given[rep.Ticket] == nil {
			given[rep.Ticket] = map[string]bool{}
		}
		given[rep.Ticket][rep.Reply] = true
		if rep.Acked {
			if ackedReplies[rep.Ticket] == nil {
				ackedReplies[rep.Ticket] = map[int]bool{}
			}
			ackedReplies[rep.Ticket][rep.Attempt] = true
		}
	}
	for _, m := range ackedReplies {
		if len(m) > 1 {
			r.AnsweredTwice++
		}
	}
	jobs := map[store.ID]int{}
	for _, d := range h.Dispatches {
		jobs[d.Ticket]++
	}
	r.Dispatches = len(h.Dispatches)
	for _, n := range jobs {
		if n > 1 {
			r.RunTwice++
		}
	}
	// own reports whether reply is one a worker gave to ticket id (of
	// body, when the ticket was acknowledged).
	own := func(id store.ID, reply string) bool {
		if a, ok := acks[id]; ok && !strings.HasPrefix(reply, a.Body+"#") {
			return false
		}
		return given[id][reply]
	}

	seen := map[store.ID]map[string]bool{} // replies lookups were told
	for _, l := range h.Lookups {
		r.Lookups++
		switch l.Kind {
		case Unknown:
			r.Unknowns++
			if a, ok := acks[l.Ticket]; ok && a.Seq < l.Seq {
				bad(UnknownAfterAck, l.Ticket, "%s answered unknown (event %d) after the ticket was acknowledged by %s (event %d)", l.Node, l.Seq, a.Node, a.Seq)
			}
		case Done:
			if !own(l.Ticket, l.Reply) {
				bad(WrongReply, l.Ticket, "%s answered %q during the run, which no worker gave it", l.Node, l.Reply)
			}
			if seen[l.Ticket] == nil {
				seen[l.Ticket] = map[string]bool{}
			}
			seen[l.Ticket][l.Reply] = true
		}
	}

	for _, id := range slices.SortedFunc(maps.Keys(acks), cmpID) {
		a := acks[id]
		f, ok := h.Final[id]
		switch {
		case !ok:
			bad(Unanswered, id, "no final answer (acknowledged by %s, key %q)", a.Node, a.Key)
		case f.Kind == Unknown:
			bad(Lost, id, "%s answers unknown at the end (acknowledged by %s at event %d, key %q)", f.Node, a.Node, a.Seq, a.Key)
		case f.Kind != Done:
			bad(Unanswered, id, "%s answers %s at the end (acknowledged by %s, key %q)", f.Node, f.Kind, a.Node, a.Key)
		case !own(id, f.Reply):
			bad(WrongReply, id, "%s answers %q at the end, which no worker gave it (body %q)", f.Node, f.Reply, a.Body)
		default:
			for rep := range seen[id] {
				if rep != f.Reply {
					r.Changed++
					break
				}
			}
		}
	}

	nodes := slices.Sorted(maps.Keys(h.Stores))
	for i := 1; i < len(nodes); i++ {
		a, b := nodes[0], nodes[i]
		diverged(h.Stores[a], h.Stores[b], a, b, func(id store.ID, detail string) { bad(Diverged, id, "%s", detail) })
	}
	return r
}

// diverged reports every ticket that two stores hold differently.
func diverged(x, y map[store.ID]Stored, xn, yn string, report func(store.ID, string)) {
	ids := map[store.ID]bool{}
	for id := range x {
		ids[id] = true
	}
	for id := range y {
		ids[id] = true
	}
	for _, id := range slices.SortedFunc(maps.Keys(ids), cmpID) {
		a, aok := x[id]
		b, bok := y[id]
		switch {
		case aok && !bok:
			report(id, fmt.Sprintf("%s holds it (%s), %s does not", xn, a, yn))
		case !aok && bok:
			report(id, fmt.Sprintf("%s holds it (%s), %s does not", yn, b, xn))
		case a != b:
			report(id, fmt.Sprintf("%s holds %s, %s holds %s", xn, a, yn, b))
		}
	}
}

func (s Stored) String() string {
	if s.State == store.StateDone {
		return fmt.Sprintf("done %q", s.Reply)
	}
	return s.State.String()
}

func cmpID(a, b store.ID) int { return strings.Compare(string(a[:]), string(b[:])) }
