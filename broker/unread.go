package broker

import (
	"errors"
	"time"
)

// Clients that do not read their answers.
//
// A client whose pipe is full (the ROUTER's send high-water mark of
// answers queued, and the TCP buffers behind them) is not reading: every
// answer sent to it is dropped (SendDropped). Work done for it is wasted,
// and durable work is worse than wasted: a submit whose ticket never
// reaches the client is a ticket nobody will fetch, committed at the cost
// of every other client's commits. The broker remembers such clients and
// tells the handler (Request.Unread), which refuses their submits before
// they cost a commit. The refusal is sent as any answer is: once the
// client reads again its pipe has room, the refusal gets through, and the
// client is forgotten here, so its next request is served.

const (
	// maxUnread bounds the clients remembered: past it, more are not
	// tracked (their answers are dropped as before), so a flood of
	// connections cannot grow the set.
	maxUnread = 10_000
	// unreadAge is how long a client whose answers stopped failing (it
	// went away without a send to tell) is remembered: between one and
	// two ages.
	unreadAge = time.Minute
)

// unreadClients is the set of clients whose last answer could not be
// queued, in two generations so that forgetting costs no time per
// client: a failed send puts the client in cur, and every unreadAge old
// is dropped and cur becomes old.
type unreadClients struct {
	cur, old map[string]struct{}
	rotated  time.Time
	// Clients newly marked are logged at most every dropLogEvery.
	marked  uint64
	lastLog time.Time
}

// noteSend records the outcome of an answer to client id: a full pipe
// marks it, a delivered answer (or one to a client that is gone)
// forgets it.
func (s *state) noteSend(id string, err error) {
	u := &s.unread
	switch {
	case err == nil || errors.Is(err, errUnroutable):
		if len(u.cur)+len(u.old) > 0 {
			delete(u.cur, id)
			delete(u.old, id)
		}
	case errors.Is(err, errWouldBlock):
		if _, ok := u.cur[id]; ok {
			return
		}
		if u.cur == nil {
			u.cur = make(map[string]struct{})
		}
		if len(u.cur) >= maxUnread {
			return
		}
		if _, ok := u.old[id]; !ok {
			u.marked++
		}
		u.cur[id] = struct{}{}
	}
}

// isUnread reports whether client id did not take its last answer.
func (s *state) isUnread(id string) bool {
	u := &s.unread
	if len(u.cur)+len(u.old) == 0 {
		return false
	}
	_, cur := u.cur[id]
	_, old := u.old[id]
	return cur || old
}

// unreadTick ages the set and logs the clients newly marked.
func (s *state) unreadTick(now time.Time) {
	u := &s.unread
	if now.Sub(u.rotated) >= unreadAge {
		u.old, u.cur, u.rotated = u.cur, nil, now
	}
	if u.marked > 0 && now.Sub(u.lastLog) >= dropLogEvery {
		s.log.Warn("clients not reading their answers: their answers are dropped and their submits refused until they read",
			"clients", u.marked, "tracked", len(u.cur)+len(u.old))
		u.marked, u.lastLog = 0, now
	}
}
