package titanic

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// Self-defence. A client (one connection: one ROUTER identity) may have at
// most PerClientInflight requests waiting for an answer and may submit at
// most SubmitRate tickets per second (bursts of as many); beyond either it
// gets "500 busy, retry later" at once instead of being queued. Bodies are
// bounded by MaxBody (400: resending cannot help). While the data file
// holds Quota bytes or more, submits are refused with 500 and everything
// else (lookups, replies, closes, which free space) goes on. A client
// that does not read its answers (the broker's Request.Unread) has its
// submits refused with busy: their tickets would be committed for nobody.

// clientState is what the limits track per client.
type clientState struct {
	inflight int
	tokens   float64
	refilled time.Time
}

// limiter tracks per-client in-flight requests and submit tokens.
type limiter struct {
	mu      sync.Mutex
	clients map[broker.Client]*clientState
	// The refusals, built once: a flood is refused tens of thousands of
	// times a second, and formatting each would cost the broker loop
	// allocations (and the garbage collector) for the same frames. The
	// frames are shared: nothing writes into an answer, and an appended
	// key gets a new slice (their capacity ends at their length).
	refuseInflight, refuseRate, refuseUnread [][]byte
}

// init makes the map and the refusals on first use; l.mu is held.
func (l *limiter) init(cfg Config) {
	if l.clients != nil {
		return
	}
	l.clients = make(map[broker.Client]*clientState)
	// The inflight count refused is always the limit: admit is the only
	// way up and refuses at it.
	l.refuseInflight = slices.Clip(replyText(tsp.CodeError, tsp.Busy.Text(fmt.Sprintf("%d requests in flight", cfg.PerClientInflight))))
	l.refuseRate = slices.Clip(replyText(tsp.CodeError, tsp.Busy.Text(fmt.Sprintf("over %g submits/s", cfg.SubmitRate))))
	l.refuseUnread = slices.Clip(replyText(tsp.CodeError, tsp.Busy.Text(unreadRefusal)))
}

// unreadRefusal is the text refusing a submit from a client that does not
// read its answers.
const unreadRefusal = "answers not read"

// refuseUnread refuses a submit from a client whose answers the broker
// cannot queue (broker.Request.Unread: its pipe is full). Its ticket would
// be committed, at the cost of every other client's commits, and its
// answer dropped: a ticket nobody knows of. The refusal reaches the client
// once it reads again, and its next submit is served. It returns nil for
// any other client.
func (a *admission) refuseUnread(unread bool) [][]byte {
	if !unread {
		return nil
	}
	a.stats.busy.Add(1)
	l := &a.limits
	l.mu.Lock()
	defer l.mu.Unlock()
	l.init(a.cfg)
	return l.refuseUnread
}

// maxTrackedClients bounds the limiter's map; past it new clients are
// refused until idle ones are pruned (a flood of connections).
const maxTrackedClients = 100_000

// admit counts a request of c that will be answered later; submit also
// takes a token. It returns the refusal, or nil.
func (a *admission) admit(c broker.Client, submit bool) [][]byte {
	l := &a.limits
	// The clock is read only when a bucket needs it: without a rate, a
	// known client's submit reads none (a clock read per submit showed in
	// the pipelined benchmark's profile).
	rated := submit && a.cfg.SubmitRate > 0
	var now time.Time
	l.mu.Lock()
	defer l.mu.Unlock()
	l.init(a.cfg)
	st := l.clients[c]
	if st == nil || rated {
		now = a.cfg.Now()
	}
	if st == nil {
		if len(l.clients) >= maxTrackedClients {
			a.stats.busy.Add(1)
			return busyReply()
		}
		st = &clientState{tokens: a.burst(), refilled: now}
		l.clients[c] = st
	}
	if a.cfg.PerClientInflight > 0 && st.inflight >= a.cfg.PerClientInflight {
		a.stats.busy.Add(1)
		return l.refuseInflight
	}
	if rated {
		st.tokens = min(a.burst(), st.tokens+now.Sub(st.refilled).Seconds()*a.cfg.SubmitRate)
		st.refilled = now
		if st.tokens < 1 {
			a.stats.busy.Add(1)
			return l.refuseRate
		}
		st.tokens--
	}
	st.inflight++
	return nil
}

func (a *admission) burst() float64 {
	if a.cfg.SubmitBurst > 0 {
		return float64(a.cfg.SubmitBurst)
	}
	return max(1, a.cfg.SubmitRate)
}

// release undoes admit for a request that was answered at once.
func (a *admission) release(c broker.Client) {
	l := &a.limits
	l.mu.Lock()
	if st := l.clients[c]; st != nil && st.inflight > 0 {
		st.inflight--
	}
	l.mu.Unlock()
}

// pruneClients forgets clients with nothing in flight whose submit bucket
// has refilled, so that the map follows the active clients.
func (a *admission) pruneClients() {
	l := &a.limits
	now := a.cfg.Now()
	full := time.Duration(float64(time.Second) * a.burst() / max(a.cfg.SubmitRate, 1))
	l.mu.Lock()
	for c, st := range l.clients {
		if st.inflight == 0 && now.Sub(st.refilled) >= full {
			delete(l.clients, c)
		}
	}
	l.mu.Unlock()
}

// refreshUsage records the store's used bytes for the quota check.
func (a *admission) refreshUsage() {
	if a.cfg.Quota <= 0 {
		return
	}
	if us, err := a.usage.Usage(); err == nil {
		a.used.Store(us.Used())
	}
}

// overQuota reports the refusal of a submit while the store is full,
// counting it.
func (a *admission) overQuota() [][]byte {
	why := a.quotaShort()
	if why == "" {
		return nil
	}
	a.stats.busy.Add(1)
	return replyText(tsp.CodeError, why)
}

// quotaShort says why the store is over its quota, or "".
func (a *admission) quotaShort() string {
	if a.cfg.Quota > 0 && a.used.Load() >= a.cfg.Quota {
		return fmt.Sprintf("store full: %d of %d bytes used; retry later", a.used.Load(), a.cfg.Quota)
	}
	return ""
}
