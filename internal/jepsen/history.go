package jepsen

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
)

// Type is what an Op records, as in Jepsen: the invocation of an
// operation, or how it completed (OK: it happened; Fail: it did not;
// Info: nobody knows, a timeout). Events that are not client operations
// (executions, faults, serving intervals) are recorded as OK.
type Type uint8

// The types of Op.
const (
	Invoke Type = iota
	OK
	Fail
	Info
)

func (t Type) String() string {
	switch t {
	case Invoke:
		return "invoke"
	case OK:
		return "ok"
	case Fail:
		return "fail"
	case Info:
		return "info"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// F is the function of an Op.
type F string

// The functions of Op.
const (
	// FSubmit is a keyed submit (titanic.submit, through the client
	// library or raw frames): Key and Body; OK carries the Ticket and,
	// when known, the Node that answered.
	FSubmit F = "submit"
	// FRequest is an unkeyed raw 9/TSP titanic.request: Body (one per
	// try); OK carries the Ticket and the Node.
	FRequest F = "request"
	// FLookup is a titanic.reply (or titanic.wait) of a Ticket: Code is
	// the TSP status answered, Value the reply (on 200), Node who answered.
	// Final marks the lookups of the final check.
	FLookup F = "lookup"
	// FExec is a worker running a job: Body, and Value the reply it made.
	FExec F = "exec"
	// FFault is the nemesis hurting Node (or the network): Value is the
	// fault kind.
	FFault F = "fault"
	// FHeal is the nemesis undoing a fault: Value is what it undid.
	FHeal F = "heal"
	// FRecovered marks the cluster whole and serving again after a fault
	// (Fail: it did not recover in time).
	FRecovered F = "recovered"
	// FServe is an interval, Time to End, in which Node served (by its own
	// log: "serving:" to "not serving" or its exit).
	FServe F = "serve"
	// FPause is an interval, Time to End, in which Node was SIGSTOPped:
	// whatever its log says, it served nothing then.
	FPause F = "pause"
	// FSolo is a node's raft changing between one voter and two, by its
	// own log: Value "alone" when it became (or started as) its raft's only
	// voter, so that what it writes from then on is its branch alone;
	// "joined" when its branch met its peer's again (it added the peer as
	// a voter, or was added to the peer's raft).
	FSolo F = "solo"
	// FExit is a node process that exited on its own (not killed by the
	// nemesis): Value is why, from its log.
	FExit F = "exit"
)

// Op is one entry of a History.
type Op struct {
	Index   int
	Time    time.Time
	End     time.Time // intervals (FServe, FPause)
	Process string    // who: a client, a worker, "nemesis", a node
	Type    Type
	F       F
	Key     string // idempotency key
	Body    string
	Ticket  string
	Node    string // the node that answered, or was hurt, or served
	Code    string // TSP status code of the answer
	Value   string // reply, fault kind, or other detail
	Final   bool   // a lookup of the final check
	Err     string
}

// String renders the op on one line, for history files and failure
// messages.
func (o Op) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s %s %s %s", o.Index, o.Time.Format("15:04:05.000"), o.Process, o.Type, o.F)
	add := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, " %s=%q", k, v)
		}
	}
	add("key", o.Key)
	add("body", o.Body)
	add("ticket", o.Ticket)
	add("node", o.Node)
	add("code", o.Code)
	add("value", o.Value)
	add("err", o.Err)
	if !o.End.IsZero() {
		add("end", o.End.Format("15:04:05.000"))
	}
	if o.Final {
		b.WriteString(" final")
	}
	return b.String()
}

// History records ops from any number of goroutines.
type History struct {
	mu  sync.Mutex
	ops []Op
}

// Add records op, stamping its Index and, when zero, its Time, and
// returns it.
func (h *History) Add(op Op) Op {
	if op.Time.IsZero() {
		op.Time = time.Now()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	op.Index = len(h.ops)
	h.ops = append(h.ops, op)
	return op
}

// Ops returns a copy of the ops recorded so far, in recording order.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ops)
}

// Write writes the history, one op per line.
func (h *History) Write(w io.Writer) error {
	bw := bufio.NewWriter(w)
	for _, op := range h.Ops() {
		if _, err := fmt.Fprintln(bw, op); err != nil {
			return fmt.Errorf("write history: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write history: %w", err)
	}
	return nil
}
