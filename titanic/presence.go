package titanic

import (
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// Client presence: clients that identify themselves send
//
//	titanic.hello [client-id]   → 200   (at connect, then every interval)
//	titanic.bye   [client-id]   → 200   (when they close)
//
// and the service keeps who is connected: a client silent for
// PresenceTimeout is disconnected. Both transitions are published
// (notify: topic "client.<id>", state connected or disconnected), and
// titanic.clients lists them: 200 | "id connected-since last-seen"...
// Presence is per broker node and not replicated: it describes the
// connections of this node.

// presence is the table of identified clients.
type presence struct {
	mu      sync.Mutex
	clients map[string]*clientInfo
}

type clientInfo struct {
	since, seen time.Time
}

// MaxClientID bounds a client id.
const MaxClientID = 128

// maxPresent bounds the presence table.
const maxPresent = 100_000

// hello records titanic.hello (or, with bye, titanic.bye) of a client
// whose request body is body.
func (a *admission) hello(body [][]byte, bye bool) [][]byte {
	if len(body) != 1 || len(body[0]) == 0 || len(body[0]) > MaxClientID {
		return replyText(tsp.CodeUnknown, fmt.Sprintf("want one frame: a client id of 1 to %d bytes", MaxClientID))
	}
	id := string(body[0])
	now := a.cfg.Now()
	p := &a.present
	p.mu.Lock()
	if p.clients == nil {
		p.clients = make(map[string]*clientInfo)
	}
	c := p.clients[id]
	switch {
	case bye:
		delete(p.clients, id)
	case c != nil:
		c.seen = now
	case len(p.clients) >= maxPresent:
		p.mu.Unlock()
		return busyReply()
	default:
		p.clients[id] = &clientInfo{since: now, seen: now}
	}
	p.mu.Unlock()
	switch {
	case bye && c != nil:
		a.presenceEvent(id, "disconnected")
	case !bye && c == nil:
		a.presenceEvent(id, "connected")
	}
	return reply(tsp.CodeOK)
}

func (a *admission) presenceEvent(id, state string) {
	a.log.Debug("client "+state, "client", id)
	if a.cfg.Notifier != nil {
		a.cfg.Notifier.Publish(notifyEvent(id, state, a.cfg.Now()))
	}
}

// expirePresence disconnects clients silent for PresenceTimeout.
func (a *admission) expirePresence() {
	now := a.cfg.Now()
	var gone []string
	p := &a.present
	p.mu.Lock()
	for id, c := range p.clients {
		if now.Sub(c.seen) > a.cfg.PresenceTimeout {
			delete(p.clients, id)
			gone = append(gone, id)
		}
	}
	p.mu.Unlock()
	for _, id := range gone {
		a.presenceEvent(id, "disconnected")
	}
}

// ClientPresence is one connected client.
type ClientPresence struct {
	ID          string
	Since, Seen time.Time
}

// clients lists the connected clients, by id.
func (a *admission) clients() []ClientPresence {
	p := &a.present
	p.mu.Lock()
	out := make([]ClientPresence, 0, len(p.clients))
	for id, c := range p.clients {
		out = append(out, ClientPresence{ID: id, Since: c.since, Seen: c.seen})
	}
	p.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// listClients answers titanic.clients: one frame "ID SINCE SEEN" per
// client, the times in Unix milliseconds. The ID may hold spaces: a
// reader takes the last two fields as the times and the rest as the ID.
func (a *admission) listClients() [][]byte {
	cs := a.clients()
	out := make([][]byte, 0, len(cs)+1)
	out = append(out, []byte(tsp.CodeOK))
	for _, c := range cs {
		out = append(out, []byte(c.ID+" "+strconv.FormatInt(c.Since.UnixMilli(), 10)+" "+strconv.FormatInt(c.Seen.UnixMilli(), 10)))
	}
	return out
}
