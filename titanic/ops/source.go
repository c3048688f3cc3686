package ops

import (
	"context"
	"time"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic"
)

// The Server reads the node through the interfaces below. Every method may
// be called from many HTTP handler goroutines at once (and from Prometheus
// scrapes, which gather concurrently), so implementations must be safe for
// concurrent use. Each call gets a ctx bounded by Config.RequestTimeout.

// Tickets looks tickets up and closes them. The reads go to the local
// store (a follower serves them from its replica); Close must go through
// the titanic service, so that it is committed (and replicated) like a
// 9/TSP titanic.close.
type Tickets interface {
	// Ticket returns the ticket (without its request body) and its reply
	// frames: nil while it has none, non-nil (possibly empty) once it is
	// done. It returns an error wrapping store.ErrNotFound for an unknown
	// ticket. store.Store's Reply method has this contract.
	Ticket(ctx context.Context, id store.ID) (store.Ticket, [][]byte, error)
	// List returns at most f.Limit tickets matching f, without bodies, in
	// ID order (descending when f.Newest). The Server always sets Limit
	// between 1 and MaxListLimit.
	List(ctx context.Context, f Filter) ([]store.Ticket, error)
	// Close deletes a ticket and its reply once the deletion is durable
	// (committed by the store, or by a raft quorum). It returns an error
	// wrapping store.ErrNotFound when no such ticket existed, ErrNotActive
	// when this node cannot write, ErrBusy when the commit queue is full,
	// and ctx.Err() when ctx ends first (the close may still happen).
	Close(ctx context.Context, id store.ID) error
}

// Submitter submits tickets for POST /api/v1/tickets. It must give the
// guarantees of a 9/TSP submit: the ticket only once it is durable, the
// same limits, idempotency by key.
type Submitter interface {
	// Submit stores a request for service with body's frames, under the
	// idempotency key if not empty, and returns its ticket and whether it
	// is a duplicate (the key was used before: the first ticket). Errors
	// wrap ErrBadRequest, ErrNotActive or ErrBusy, or are ctx's.
	// lc is what the submit asks beyond 9/TSP (delay, priority, deadline,
	// retry policy), in absolute times; the zero value asks nothing.
	Submit(ctx context.Context, service string, body [][]byte, key string, lc store.Lifecycle) (id string, duplicate bool, err error)
}

// Jobs drives the job lifecycle for the API (titanic Service's Retry,
// Cancel, Pause, Resume and Attempts). The writes must be committed (and
// replicated) like their 9/TSP services. Errors wrap store.ErrNotFound
// (unknown ticket), store.ErrNotFailed (a retry of a ticket that has not
// failed), store.ErrFinal (a cancel of a finished ticket),
// store.ErrClusterVersion or ErrUnsupported (the cluster cannot take the
// op yet), ErrBadRequest, ErrNotActive or ErrBusy, or are ctx's.
type Jobs interface {
	Retry(ctx context.Context, id store.ID) error
	// Purge closes the ticket only if it has failed when the close is
	// applied (store.ErrNotFailed otherwise).
	Purge(ctx context.Context, id store.ID) error
	Cancel(ctx context.Context, id store.ID, reason string) error
	Pause(ctx context.Context, service string) error
	Resume(ctx context.Context, service string) error
	// Attempts returns the ticket's attempts that ended without a reply,
	// oldest first.
	Attempts(ctx context.Context, id store.ID) ([]titanic.AttemptJSON, error)
	// Paused returns the paused services and since when.
	Paused(ctx context.Context) (map[string]time.Time, error)
}

// Bodies reads a ticket's request body, for GET /api/v1/tickets/{id}?body=1
// (the dashboard's ticket view). It returns an error wrapping
// store.ErrNotFound for an unknown ticket.
type Bodies interface {
	Body(ctx context.Context, id store.ID) ([][]byte, error)
}

// Filter selects a page of tickets for Tickets.List.
type Filter struct {
	Service string      // "" for every service
	State   store.State // 0 for every state
	// After is the page cursor: only IDs greater than After (below it when
	// Newest). The zero ID starts at the first ticket (the last when
	// Newest).
	After store.ID
	// Limit is the page size, 1 to MaxListLimit.
	Limit int
	// Newest lists in descending ID order: newest first, since ticket IDs
	// are time-ordered (UUIDv7).
	Newest bool
}

// Queues reports the durable queue of every service, from the store.
type Queues interface {
	// Queues returns one Queue per service that has tickets, in any order.
	Queues(ctx context.Context) ([]Queue, error)
}

// Queue is a service's tickets in the store.
type Queue struct {
	Service string
	// Tickets per state (store.Stats's Counts).
	Pending, Dispatched, Done, Failed, Cancelled int
	// Delayed counts the pending tickets not due yet (a delay, a
	// schedule, a backoff): they wait for their time, not for a worker,
	// and are left out of the queue depth.
	Delayed int
	// Oldest is when the oldest unfinished (pending or dispatched) ticket
	// not delayed into the future began waiting: its submit (the head of
	// the service's FIFO, unless that is delayed), or its due time for a
	// delayed one now due. Zero when the service has none.
	Oldest time.Time
}

// QueueStats reports every service's queue as the titanic.stats
// extension answers it (titanic Service.QueueStats): from the
// dispatcher's memory, without reading the store.
type QueueStats interface {
	QueueStats(ctx context.Context) (titanic.QueueStats, error)
}

// Workers reports the workers the broker knows, per service.
type Workers interface {
	// Workers returns one entry per service the broker knows (broker
	// Stats.Services), in any order.
	Workers(ctx context.Context) ([]ServiceWorkers, error)
}

// ServiceWorkers is a service's registered workers.
type ServiceWorkers struct {
	Service string
	// Workers registered; Idle of them wait for work, Busy hold a request.
	Workers, Idle, Busy int
	// Requests is the number of plain (non-durable) MDP requests queued in
	// the broker for the service.
	Requests int
}

// Counters reports the titanic service's activity.
type Counters interface {
	// Counters returns the totals since the process started (titanic
	// Service.Stats). It must be cheap: no I/O.
	Counters() Counts
}

// Counts are the titanic service's totals since start (counters, which
// only grow), and its leases (a gauge).
type Counts struct {
	Submits, Duplicates, Closes, Lookups uint64
	Dispatches, Redeliveries             uint64
	Replies, LateReplies                 uint64
	Failures                             uint64 // tickets failed for good
	Busy, BadRequests                    uint64 // requests refused
	Commits, CommittedOps, CommitErrors  uint64
	// VerdictRetries counts commits of a reply or failure tried again
	// after their batch failed (the job is not run again).
	VerdictRetries uint64
	// Unsent counts dispatches taken back, their send to a worker or
	// peer having failed at once (no attempt counted).
	Unsent uint64
	// Leased is the number of tickets held by workers now.
	Leased int
	// DiskFull: submits are refused because a watched file system has
	// less free space than the reserve (titanic Service.DiskStatus);
	// DiskFree and DiskReserve are that file system's, both 0 when the
	// reserve is not checked.
	DiskFull              bool
	DiskFree, DiskReserve uint64
}

// Cluster reports this node's place in its cluster. A nil Cluster in the
// Config means a single node, always active.
type Cluster interface {
	// Role returns this node's role (one of the Role constants) and whether
	// it is the node that serves clients. It is called by every /healthz
	// and every write, so it must be cheap: no I/O, no raft round trip.
	Role() (role string, active bool)
	// Status returns the full status. It may wait for raft (membership).
	Status(ctx context.Context) (ClusterStatus, error)
}

// Modes of a node (ClusterStatus.Mode).
const (
	ModeSingle = "single" // one node, no replication
	ModeGroup  = "group"  // raft group: the leader serves
	ModePair   = "pair"   // Binary Star pair: the active node serves
)

// Roles of a node (Cluster.Role, ClusterStatus.Role).
const (
	RoleSingle    = "single"    // single mode: always serves
	RoleLeader    = "leader"    // group mode, serves
	RoleFollower  = "follower"  // group mode
	RoleCandidate = "candidate" // group mode, election in progress
	RoleActive    = "active"    // pair mode, serves
	RolePassive   = "passive"   // pair mode
	RolePrimary   = "primary"   // pair mode, the primary waiting for its peer
	RoleBackup    = "backup"    // pair mode, the backup waiting for its peer
)

// ClusterStatus is this node's view of its cluster.
type ClusterStatus struct {
	Mode   string // ModeSingle, ModeGroup or ModePair
	Role   string // a Role constant (other strings are shown as they are)
	Active bool   // this node serves clients
	NodeID string
	Leader string // raft leader's ID, "" when unknown
	// Raft progress (replica.Status); zero in single mode.
	Term, LastIndex, CommitIndex, AppliedIndex uint64
	// Members is the raft configuration (replica.Members).
	Members []Member
	// Peers are peered clusters. Empty until peering lands.
	Peers []Peer
}

// Member is one server of the raft configuration.
type Member struct {
	ID, Addr      string
	Voter, Leader bool
}

// Peer is a peered cluster. Placeholder until peering lands.
type Peer struct {
	// Addr is its cloud endpoint (where jobs go), State its state
	// endpoint.
	Name, Addr, State string
	// Alive: its state was heard within its liveness. A dead peer's
	// Capacity is 0: nothing can be sent to it.
	Alive bool
	// Capacity is the number of idle workers the peer offers.
	Capacity int
}

// Clients reports connected clients (titanic Service.Clients: those that
// identify themselves with titanic.hello). A nil Clients in the Config
// means presence is not tracked: /api/v1/clients is an empty list with
// "tracked": false and titanic_connected_clients is 0.
type Clients interface {
	// Clients returns the clients connected now, at most limit of them
	// (none when limit is 0: metrics only want the total), and how many
	// there are in all.
	Clients(ctx context.Context, limit int) (list []Client, total int, err error)
}

// Client is one connected client.
type Client struct {
	ID    string    // the id it gave in titanic.hello
	Addr  string    // remote address, when known
	Since time.Time // connected (first hello)
	Seen  time.Time // last heard of
}
