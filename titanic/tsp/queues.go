package tsp

import "time"

// QueueStats is the answer of titanic.stats (one JSON frame), and of the
// HTTP API's /api/v1/queues: every service's queue.
type QueueStats struct {
	Time time.Time `json:"time"`
	// WindowSeconds is the window of the rates.
	WindowSeconds float64        `json:"window_seconds"`
	Services      []ServiceQueue `json:"services"`
}

// ServiceQueue is one service's line of QueueStats.
type ServiceQueue struct {
	Service string `json:"service"`
	// Pending tickets wait for a worker; Delayed ones (pending in the
	// store too) wait for their due time: a delay, a schedule or a
	// retry's backoff; InFlight ones were given to a worker whose reply
	// is not recorded yet (lookups say dispatched).
	Pending  int `json:"pending"`
	Delayed  int `json:"delayed"`
	InFlight int `json:"in_flight"`
	// Done and Failed are the finished tickets in the store (until closed
	// or deleted by retention).
	Done   int `json:"done"`
	Failed int `json:"failed"`
	// Workers registered for the service; Idle and Busy when known (the
	// broker's view), nil when not.
	Workers int  `json:"workers"`
	Idle    *int `json:"idle,omitempty"`
	Busy    *int `json:"busy,omitempty"`
	// SubmitRate is new tickets per second and ReplyRate recorded replies
	// per second, over the last WindowSeconds.
	SubmitRate float64 `json:"submits_per_sec"`
	ReplyRate  float64 `json:"replies_per_sec"`
	// Paused: the service's tickets are taken but not dispatched
	// (titanic.pause) until it is resumed; it is listed while paused,
	// with nothing else to show too.
	Paused bool `json:"paused"`
}
