package titanic

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// titanic.wait [ticket | timeout-ms] is titanic.reply that waits: when the
// ticket is not answered yet, the request is parked until its reply is
// recorded or it fails (then answered as titanic.reply would be), or until
// the timeout (then 300). It spares clients that wait for a reply the
// polling; a parked request costs a map entry, and MaxWaiters bounds them
// (beyond it titanic.wait answers at once, like titanic.reply).

// waiter is a parked titanic.wait.
type waiter struct {
	req      broker.Request
	deadline time.Time
	done     bool // answered; guarded by waiters.mu
}

// waiters are the parked titanic.wait requests by ticket.
type waiters struct {
	mu sync.Mutex
	by map[store.ID][]*waiter
	n  int
}

// MaxWaitTimeout bounds the timeout a titanic.wait may ask for.
const MaxWaitTimeout = 60 * time.Second

func parseWait(body [][]byte) (store.ID, time.Duration, error) {
	if len(body) != 2 {
		return store.ID{}, 0, badRequest("titanic.wait wants [ticket | timeout-ms], got %d frames", len(body))
	}
	id, err := parseTicket(body[:1])
	if err != nil {
		return id, 0, err
	}
	ms, err := strconv.Atoi(string(body[1]))
	if err != nil || ms < 0 {
		return id, 0, badRequest("timeout %q is not a number of milliseconds", body[1])
	}
	return id, min(time.Duration(ms)*time.Millisecond, MaxWaitTimeout), nil
}

// wait parks a titanic.wait, then looks the ticket up: parking first means
// a reply recorded during the lookup is not missed.
func (l *lookups) wait(req broker.Request) [][]byte {
	id, timeout, err := parseWait(req.Body)
	if err != nil {
		l.stats.badRequests.Add(1)
		return replyText(tsp.CodeUnknown, err.Error())
	}
	lookup := waitLookup(req)
	if timeout > 0 {
		w := &waiter{req: req, deadline: l.cfg.Now().Add(timeout)}
		l.waits.mu.Lock()
		if l.waits.n < l.cfg.MaxWaiters {
			if l.waits.by == nil {
				l.waits.by = make(map[store.ID][]*waiter)
			}
			l.waits.by[id] = append(l.waits.by[id], w)
			l.waits.n++
			l.waits.mu.Unlock()
			return l.lookupFor(lookup, w)
		}
		l.waits.mu.Unlock()
	}
	return l.lookupFor(lookup, nil)
}

// waitLookup is the titanic.reply-like lookup of titanic.wait req: its
// ticket frame, answered as titanic.wait.
func waitLookup(req broker.Request) broker.Request {
	return broker.Request{Client: req.Client, Service: req.Service, Body: req.Body[:1]}
}

// lookupFor queues a titanic.reply lookup answering req; with w, a
// not-final answer leaves w parked instead of being sent. An unfinished
// ticket memory vouches for is answered at once (pending.go): a 300,
// which leaves w parked.
func (l *lookups) lookupFor(req broker.Request, w *waiter) [][]byte {
	if out, ok := l.fromMemory(req.Body); ok {
		if w != nil {
			return nil
		}
		return out
	}
	select {
	case l.reads <- readReq{req: req, w: w}:
		return nil
	default:
		l.stats.busy.Add(1)
		if w != nil {
			l.unpark(w)
		}
		return busyReply()
	}
}

// answerWait sends the answer of a parked request's lookup: a final one
// (200, 400, 500) ends the wait; 300 keeps it parked.
func (l *lookups) answerWait(w *waiter, out [][]byte) {
	if len(out) > 0 && string(out[0]) == tsp.CodePending {
		return
	}
	if l.unpark(w) {
		l.answer(w.req.Client, w.req.Service, out)
	}
}

// unpark removes w; it reports false when w was answered already.
func (l *lookups) unpark(w *waiter) bool {
	l.waits.mu.Lock()
	defer l.waits.mu.Unlock()
	if w.done {
		return false
	}
	w.done = true
	l.waits.n--
	id, _ := store.ParseID(string(w.req.Body[0]))
	ws := l.waits.by[id]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(l.waits.by, id)
	} else {
		l.waits.by[id] = ws
	}
	return true
}

// notify wakes the requests parked on id: its reply was recorded or it
// failed. Each gets a fresh lookup, so the answer is what the store holds.
func (l *lookups) notify(id store.ID) {
	l.waits.mu.Lock()
	ws := append([]*waiter(nil), l.waits.by[id]...)
	l.waits.mu.Unlock()
	for _, w := range ws {
		lookup := waitLookup(w.req)
		select {
		case l.reads <- readReq{req: lookup, w: w}:
		default:
			// Readers are swamped: the waiter's timeout answers 300 and
			// the client asks again.
		}
	}
}

// expireWaits answers 300 to parked requests past their deadline, and (with
// all) to every parked request: the node stops serving.
func (l *lookups) expireWaits(all bool) {
	now := l.cfg.Now()
	var due []*waiter
	l.waits.mu.Lock()
	for id, ws := range l.waits.by {
		keep := ws[:0]
		for _, w := range ws {
			if all || !now.Before(w.deadline) {
				w.done = true
				l.waits.n--
				due = append(due, w)
				continue
			}
			keep = append(keep, w)
		}
		if len(keep) == 0 {
			delete(l.waits.by, id)
		} else {
			l.waits.by[id] = keep
		}
	}
	l.waits.mu.Unlock()
	for _, w := range due {
		if all {
			l.answer(w.req.Client, w.req.Service, replyText(tsp.CodeError, string(tsp.NotActive)))
			continue
		}
		if l.leader != nil {
			// "Still pending" could be stale too (confirm.go): the
			// expired wait gets a last lookup, after a confirmation.
			l.confirmLater(readReq{req: waitLookup(w.req)})
			continue
		}
		l.answer(w.req.Client, w.req.Service, replyText(tsp.CodePending, "pending"))
	}
}

// waitLoop expires parked requests.
func (l *lookups) waitLoop(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.expireWaits(true)
			return
		case <-t.C:
			l.expireWaits(false)
		}
	}
}
