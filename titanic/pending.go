package titanic

import (
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// Pending answers from memory. Most titanic.reply polls of a busy queue
// ask about tickets still being worked on, and get 300. The dispatcher
// knows those tickets (its entries), so on a single node the broker loop
// answers them itself, with the text the store path would give after its
// overlay ("dispatched" while a worker holds the ticket, else the state
// the store records), and spares them the reader hop and the store read.
//
// An answer must never go backwards: once a lookup answered 200, a final
// 500 or 400 (closed), no later one may answer 300. The store shows an
// op's outcome to the readers as soon as its commit is durable, but the
// dispatcher learns of it only in the op's completion, a moment later.
// So every op that may finish or delete a ticket is counted on its
// ticket from before the store sees it until after its completion ran
// (dispatcher.finishing: marked by the committer at hand-over, or by
// Merge before its Apply), and the memory answers only for a ticket with
// none counted. Anything it cannot vouch for (not in memory, a verdict in
// flight, a stored state it does not know) is looked up in the store as
// before.
//
// Replicated modes (a leader is set) always read the store: a 300 there
// may be stale on a deposed leader and waits for a leadership
// confirmation, after which the store is read anyway (confirm.go), so an
// answer from memory would save nothing.

// mayFinish reports whether an op of kind may finish or delete its ticket.
func mayFinish(kind store.OpKind) bool {
	switch kind {
	case store.OpReply, store.OpFail, store.OpCancel, store.OpClose, store.OpPurge:
		return true
	}
	return false
}

// finishBegins counts an op that may finish or delete id, before the store
// sees it; finishEnds counts it out once its completion ran (and, with it,
// the dispatcher forgot the ticket if the op finished it). The counts are
// by ticket, not on the entry: a ticket on disk may be read into memory
// while its close commits, and a reset (this node stops or starts
// serving) drops the entries but not the ops in flight.
func (d *dispatcher) finishBegins(id store.ID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.finishing == nil {
		d.finishing = make(map[store.ID]int32)
	}
	d.finishing[id]++
}

// finishEnds counts out an op finishBegins counted, once its completion
// ran. failed: the op's batch failed. Its outcome is then in doubt: a commit
// whose last fdatasync failed after bbolt wrote its meta page is visible
// to the readers (and the store stops writing), so a final state may
// show in the store while the dispatcher keeps the ticket, its verdict
// held for another try. Memory no longer answers for such a ticket
// until an op that may finish it commits.
func (d *dispatcher) finishEnds(id store.ID, failed bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.finishing[id]--; d.finishing[id] <= 0 {
		delete(d.finishing, id)
	}
	switch {
	case failed:
		if d.doubt == nil {
			d.doubt = make(map[store.ID]struct{})
		}
		d.doubt[id] = struct{}{}
	case d.doubt != nil:
		delete(d.doubt, id)
	}
}

// unfinishedState returns the state a titanic.reply of id would read from
// the store, after the overlay, when memory alone can tell it (see
// above): the dispatcher holds id, no op that could finish or delete it
// is in flight, no verdict of its (a worker's reply, a failure) is
// committing, and the state the store records is known.
func (d *dispatcher) unfinishedState(id store.ID) (store.State, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, doubt := d.doubt[id]; doubt || d.finishing[id] > 0 {
		return 0, false
	}
	e, ok := d.entries[id]
	switch {
	case !ok || e.replied || e.failing:
		return 0, false
	case e.leased:
		// The overlay's answer, whether or not the dispatch mark is
		// durable yet.
		return store.StateDispatched, true
	case e.stored == 0:
		return 0, false
	}
	return e.stored, true
}

// fromMemory answers a titanic.reply (body: [ticket]) of an unfinished
// ticket from the dispatcher's state, on the caller's goroutine; ok is
// false when the store must be read (see above).
func (l *lookups) fromMemory(body [][]byte) (out [][]byte, ok bool) {
	if l.leader != nil || l.unfinished == nil || len(body) != 1 {
		return nil, false
	}
	id, err := store.ParseID(string(body[0]))
	if err != nil {
		return nil, false
	}
	st, ok := l.unfinished(id)
	if !ok {
		return nil, false
	}
	l.stats.lookups.Add(1)
	return replyText(tsp.CodePending, st.String()), true
}
