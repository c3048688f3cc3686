package sim

import (
	"sync"
	"sync/atomic"

	"github.com/titanicmq/titanic/store"
)

// History is what a run's clients, workers and lookups were told, in
// order: Seq numbers are taken from one counter, so an event with a lower
// Seq happened before one with a higher Seq. It is safe for concurrent
// use while the run records it; the checker reads it after.
type History struct {
	seq atomic.Int64
	mu  sync.Mutex

	// Acks are the acknowledged submits.
	Acks []Ack
	// Dispatches are the jobs workers were given.
	Dispatches []Dispatch
	// Replies are the answers workers sent, acknowledged or not.
	Replies []Reply
	// Lookups are the answers lookups got during the run.
	Lookups []Lookup
	// Final is the answer of every acknowledged ticket at the end.
	Final map[store.ID]Answer
	// Stores is, per node, every ticket its store holds at the end
	// (once the replicas have caught up).
	Stores map[string]map[store.ID]Stored
	// Stuck says what did not settle at the end (empty if all did).
	Stuck []string
	// Hung lists the replica calls that never returned.
	Hung []string
}

// Ack is an acknowledged submit.
type Ack struct {
	Seq    int64 // taken after the submit was acknowledged
	Ticket store.ID
	Key    string // idempotency key, if any
	Body   string
	Node   string
}

// Dispatch is a job handed to a worker: the ticket's attempt Attempt.
type Dispatch struct {
	Seq     int64
	Ticket  store.ID
	Attempt int
	Node    string
}

// Reply is a worker's answer to attempt Attempt.
type Reply struct {
	Seq     int64
	Ticket  store.ID
	Attempt int
	Reply   string
	Acked   bool // the store took it (the worker's reply was acknowledged)
	Node    string
}

// AnswerKind is how a lookup was answered.
type AnswerKind uint8

// Lookup answers, after titanic's codes.
const (
	Unknown  AnswerKind = iota + 1 // 400: no such ticket
	Pending                        // 300: not answered yet
	Done                           // 200: the reply
	Failed                         // 500 failed: the ticket failed
	NotReady                       // 500 not ready: the ticket may be held by the peer
	Refused                        // the node does not serve (lost leadership)
)

func (k AnswerKind) String() string {
	switch k {
	case Unknown:
		return "unknown"
	case Pending:
		return "pending"
	case Done:
		return "done"
	case Failed:
		return "failed"
	case NotReady:
		return "not ready"
	case Refused:
		return "refused"
	}
	return "answer(?)"
}

// Answer is what a lookup was told.
type Answer struct {
	Kind  AnswerKind
	Reply string // Done
	Node  string
}

// Lookup is one answered lookup. Seq is taken when the answer could no
// longer depend on later events: before the store is read for an answer
// from the store, and before leadership is confirmed for "unknown".
type Lookup struct {
	Seq    int64
	Ticket store.ID
	Answer
}

// Stored is a ticket as a node's store holds it at the end.
type Stored struct {
	State store.State
	Reply string
}

// next returns the next sequence number.
func (h *History) next() int64 { return h.seq.Add(1) }

func (h *History) ack(a Ack) {
	a.Seq = h.next()
	add(h, &h.Acks, a)
}

func (h *History) dispatch(d Dispatch) {
	d.Seq = h.next()
	add(h, &h.Dispatches, d)
}

func (h *History) reply(r Reply) {
	r.Seq = h.next()
	add(h, &h.Replies, r)
}

func (h *History) lookup(l Lookup) { add(h, &h.Lookups, l) }

// add appends v to one of h's lists.
func add[T any](h *History, list *[]T, v T) {
	h.mu.Lock()
	*list = append(*list, v)
	h.mu.Unlock()
}

// acked returns the i-th acknowledged ticket (i modulo their number) and
// whether there is any.
func (h *History) acked(i int) (Ack, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.Acks) == 0 {
		return Ack{}, false
	}
	return h.Acks[i%len(h.Acks)], true
}

func (h *History) hang(s string) { add(h, &h.Hung, s) }

func (h *History) stuck(s string) {
	h.mu.Lock()
	h.Stuck = append(h.Stuck, s)
	h.mu.Unlock()
}
