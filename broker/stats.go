package broker

import (
	"encoding/hex"
	"slices"
	"strconv"
)

// Stats is a snapshot of the broker, taken on its loop goroutine.
type Stats struct {
	// Peers is what this broker knows of its peers (peering only).
	Peers []PeerStats
	// Services lists every service the broker knows of (one with
	// registered workers or queued plain requests), sorted by name.
	Services []ServiceStats
	// Workers is the number of registered workers.
	Workers int
	// Leases is the number of durable jobs held by workers (dispatched and
	// not yet answered, or answered and not yet released).
	Leases int
	Counters
}

// Service returns the stats of the named service, and false when the broker
// does not know it.
func (s Stats) Service(name string) (ServiceStats, bool) {
	i, ok := slices.BinarySearchFunc(s.Services, name, func(v ServiceStats, n string) int {
		switch {
		case v.Name < n:
			return -1
		case v.Name > n:
			return 1
		}
		return 0
	})
	if !ok {
		return ServiceStats{Name: name}, false
	}
	return s.Services[i], true
}

// ServiceStats describes one service.
type ServiceStats struct {
	Name string
	// Workers registered; Idle of them are waiting for work and Busy hold
	// a request, a durable job, or a reply not yet released.
	Workers, Idle, Busy int
	// Queued plain (in-memory) requests waiting for a worker.
	Queued int
}

// Counters are totals since the broker started. Every message the broker
// drops is counted in exactly one of them.
type Counters struct {
	// Requests is the number of valid client requests received.
	Requests uint64
	// Malformed counts messages dropped because they were not valid 7/MDP.
	Malformed uint64
	// DisconnectsSent counts DISCONNECT commands sent to workers.
	DisconnectsSent uint64
	// Unroutable counts sends to peers that were gone (EHOSTUNREACH).
	Unroutable uint64
	// SendDropped counts messages dropped because the peer's pipe was full
	// (EAGAIN at the high-water mark); SendErrors any other send failure.
	SendDropped uint64
	SendErrors  uint64
	// RequestsDropped counts plain requests refused because their
	// service's queue held MaxQueue requests already.
	RequestsDropped uint64
	// RequestsExpired counts plain requests dropped after waiting
	// RequestExpiry for a worker.
	RequestsExpired uint64
	// RequestsLost counts plain requests lost with the worker that held
	// them (plain requests are not redelivered).
	RequestsLost uint64
	// RequestsFailed counts plain requests a worker answered with FAIL;
	// 7/MDP has no error reply, so the client gets nothing.
	RequestsFailed uint64
	// RequestsDispatched counts plain requests sent to workers, and
	// RepliesRelayed the workers' replies sent on to clients.
	RequestsDispatched uint64
	RepliesRelayed     uint64
	// HandlerRequests counts requests given to in-process Handlers;
	// HandlerReplies the replies sent for them through Broker.Reply.
	HandlerRequests uint64
	HandlerReplies  uint64
	// MMIRequests counts mmi.* requests answered.
	MMIRequests uint64
	// JobsForwarded counts durable jobs sent to peers; CloudRequests the
	// requests peers sent here; PeerLeasesLost the jobs failed back
	// because their peer went silent.
	JobsForwarded  uint64
	CloudRequests  uint64
	PeerLeasesLost uint64
	// PeerLeasesExpired counts jobs failed back because their peer's
	// state stopped counting them as held for PeeringConfig.LeaseTimeout
	// (a request or reply lost on the cloud link).
	PeerLeasesExpired uint64
	// LatePeerReplies counts peers' replies for jobs whose peer lease was
	// given up (expired, or the peer lost), handed to the Source with
	// that lease: it records one if it is the ticket's first.
	LatePeerReplies uint64
	// NotActive counts client requests refused and worker READYs sent
	// away because the Gate said this node is not active.
	NotActive uint64
	// StaleReplies counts REPLY and FAIL commands dropped because the
	// worker held no work with that client address or token.
	StaleReplies uint64
	// JobsDispatched, JobsCompleted and JobsFailed count durable dispatches
	// and how they ended (Source.Completed or Source.Failed).
	JobsDispatched uint64
	JobsCompleted  uint64
	JobsFailed     uint64
	// JobsUnsent counts durable jobs whose send to a worker or peer
	// failed at once (Source.Unsent): they were never dispatched.
	JobsUnsent uint64
	// WorkersExpired counts workers dropped after Interval × Liveness of
	// silence; LeasesExpired counts busy workers that never heartbeat while
	// busy and were dropped after LeaseTimeout of silence.
	WorkersExpired uint64
	LeasesExpired  uint64
	// TooManyFrames counts messages discarded for having more than
	// MaxFrames frames (from clients, workers or peers).
	TooManyFrames uint64
	// TooLarge counts messages discarded for having more bytes than
	// MaxMsgSize (plus EnvelopeRoom) in all.
	TooLarge uint64
	// CommandOverflows counts Broker method calls that found the command
	// channel full and were queued on its overflow list instead.
	CommandOverflows uint64
}

// WorkerName is the printable name of a worker, from its ROUTER routing
// identity (7/MDP gives workers no other name): the identity itself when
// it is printable ASCII (a worker that set ZMQ_ROUTING_ID), otherwise
// "0x" and its hex (ZeroMQ's generated identities are 5 binary bytes). It
// is what the broker's logs show, unquoted, so that an attempt can be
// matched to the log lines of the worker that ran it.
func WorkerName(id string) string {
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return "0x" + hex.EncodeToString([]byte(id))
		}
	}
	return id
}

// PeerWorkerName is the worker name (see WorkerName) of a job forwarded
// to the peer cluster peer: which of its workers runs it is the peer's.
func PeerWorkerName(peer string) string { return "peer " + peer }

// routeString is a printable form of a ROUTER identity, for logs: the text
// itself when it is printable ASCII, otherwise hex (ZeroMQ's generated
// identities are 5 binary bytes).
func routeString(id string) string {
	if name := WorkerName(id); name != id {
		return name
	}
	return strconv.Quote(id)
}
