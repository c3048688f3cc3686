package tsp

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Notifications: a broker publishes ticket state changes and client
// presence on a ZeroMQ PUB socket (package titanic/notify), so that
// clients waiting for a ticket are told at once instead of polling. Each
// event is sent once per topic it belongs to, as frames
//
//	[topic | ticket | state | service | unix-nanos]
//
// with topics "ticket.<ticket>", "service.<service>" and, for presence
// events, "client.<id>" (state "connected" or "disconnected", no ticket).
// Subscribers filter on the topic prefix (ZeroMQ SUB subscriptions).

// Topic prefixes of notifications.
const (
	TicketTopic  = "ticket."
	ServiceTopic = "service."
	ClientTopic  = "client."
)

// EventVersion is the notification format's version (`titanic version`
// prints it). A later version only appends frames, which ParseEvent
// ignores, so that subscribers of every release read every publisher's
// events.
const EventVersion = 1

// Event is one state change.
type Event struct {
	Ticket  string
	State   string // pending, dispatched, done, failed, closed; connected, disconnected
	Service string
	Client  string
	Time    time.Time
}

// Final reports whether the event ends a wait for its ticket: answered,
// failed for good, cancelled, or closed.
func (ev Event) Final() bool {
	return ev.State == "done" || ev.State == "failed" || ev.State == "cancelled" || ev.State == "closed"
}

// Topics are the topics ev is published on, one message each.
func (ev Event) Topics() []string {
	var out []string
	if ev.Ticket != "" {
		out = append(out, TicketTopic+ev.Ticket)
	}
	if ev.Service != "" {
		out = append(out, ServiceTopic+ev.Service)
	}
	if ev.Client != "" {
		out = append(out, ClientTopic+ev.Client)
	}
	return out
}

// Frames are the frames of ev's message on topic.
func (ev Event) Frames(topic string) []string {
	return []string{topic, ev.Ticket, ev.State, ev.Service, strconv.FormatInt(ev.Time.UnixNano(), 10)}
}

// ParseEvent decodes a notification's frames; frames after the fifth (a
// later version's) are ignored.
func ParseEvent(frames []string) (Event, error) {
	if len(frames) < 5 {
		return Event{}, fmt.Errorf("notification of %d frames, want 5", len(frames))
	}
	ns, err := strconv.ParseInt(frames[4], 10, 64)
	if err != nil {
		return Event{}, fmt.Errorf("notification time %q: %w", frames[4], err)
	}
	ev := Event{Ticket: frames[1], State: frames[2], Service: frames[3], Time: time.Unix(0, ns)}
	if c, ok := strings.CutPrefix(frames[0], ClientTopic); ok {
		ev.Client = c
	}
	return ev, nil
}
