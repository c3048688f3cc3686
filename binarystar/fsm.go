package binarystar

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Role is the configured part a server plays in the pair. It decides only
// the state a node starts in; after that the pair is symmetric.
type Role uint8

// The two roles. The zero Role is invalid, so that a forgotten field in a
// configuration is caught rather than silently meaning "primary".
const (
	Primary Role = 1
	Backup  Role = 2
)

// String returns "primary" or "backup".
func (r Role) String() string {
	switch r {
	case Primary:
		return "primary"
	case Backup:
		return "backup"
	}
	return "Role(" + strconv.Itoa(int(r)) + ")"
}

func (r Role) valid() bool { return r == Primary || r == Backup }

// initial is the state a node of this role starts in, which is also the
// state its peer reports while it waits for us.
func (r Role) initial() State {
	if r == Primary {
		return StatePrimary
	}
	return StateBackup
}

// State is a node's Binary Star state. The numbers are the Guide's and are
// what travels on the wire, so they must never be renumbered.
type State uint8

// The four states of the Guide.
const (
	StatePrimary State = 1 // primary, waiting for its peer
	StateBackup  State = 2 // backup, waiting for its peer
	StateActive  State = 3 // serving clients
	StatePassive State = 4 // not serving; standing by to take over
)

// String returns the Guide's name of the state, e.g. "ACTIVE".
func (s State) String() string {
	switch s {
	case StatePrimary:
		return "PRIMARY"
	case StateBackup:
		return "BACKUP"
	case StateActive:
		return "ACTIVE"
	case StatePassive:
		return "PASSIVE"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

func (s State) valid() bool { return s >= StatePrimary && s <= StatePassive }

// Event is an input to the FSM. The four peer events carry the same number
// as the peer state they report, as in the Guide, so PeerEvent is a plain
// conversion.
type Event uint8

// The five events of the Guide.
const (
	EventPeerPrimary   Event = 1 // the peer reports PRIMARY
	EventPeerBackup    Event = 2 // the peer reports BACKUP
	EventPeerActive    Event = 3 // the peer reports ACTIVE
	EventPeerPassive   Event = 4 // the peer reports PASSIVE
	EventClientRequest Event = 5 // a client asks this node to serve it
)

// String returns the Guide's name of the event, e.g. "PEER_ACTIVE".
func (e Event) String() string {
	switch e {
	case EventPeerPrimary:
		return "PEER_PRIMARY"
	case EventPeerBackup:
		return "PEER_BACKUP"
	case EventPeerActive:
		return "PEER_ACTIVE"
	case EventPeerPassive:
		return "PEER_PASSIVE"
	case EventClientRequest:
		return "CLIENT_REQUEST"
	}
	return "Event(" + strconv.Itoa(int(e)) + ")"
}

// PeerEvent returns the event that a state message from the peer carrying
// s stands for.
func PeerEvent(s State) Event { return Event(s) }

func (e Event) fromPeer() bool { return e >= EventPeerPrimary && e <= EventPeerPassive }

// Errors returned by Handle. None is fatal: where the Guide's servers
// abort (dual actives, dual passives) this machine resolves the pair
// instead (the backup yields; the primary takes over).
var (
	// ErrUnknownEvent: Handle was given an Event outside the five above.
	// It is not fatal; the FSM is left unchanged.
	ErrUnknownEvent = errors.New("binarystar: unknown event")
	// ErrConfig: an invalid argument to NewFSM or an invalid Config.
	ErrConfig = errors.New("binarystar: invalid configuration")
)

// Result tells the caller what one event did.
type Result struct {
	Event Event
	// Accepted is set for a CLIENT_REQUEST that this node may serve. A
	// refused request is to be dropped without reply: the client times
	// out and tries the other server.
	Accepted bool
	// Changed is set when the event moved the FSM from From to To. From
	// and To are always filled, equal when nothing changed.
	Changed  bool
	From, To State
	// SameRole is set when the peer reports the starting state of our own
	// role (PRIMARY while we are primary, BACKUP while we are backup):
	// both servers are configured with the same role. The Guide ignores
	// these events and so do we, but such a pair never elects an active
	// on its own, so the caller should say so loudly.
	SameRole bool
	// Message says in words what happened, after the Guide's log lines.
	Message string
}

// FSM is the Binary Star finite-state machine of one node. It reads no
// clock and owns no socket: the caller passes the time of every event, so
// the machine is deterministic and testable. It is not safe for concurrent
// use; one goroutine (the Node's Run loop) drives it.
type FSM struct {
	role       Role
	state      State
	timeout    time.Duration
	peerExpiry time.Time
	started    bool
	// backupVote: in BACKUP, a client request once the peer has been
	// silent for the timeout makes this node active (SetBackupVote).
	backupVote bool
}

// SetBackupVote lets a backup be voted active by a client as the primary
// is, once the peer has been silent for the timeout. It is for a backup
// that went on alone and restarted with its peer still down: it holds
// every acknowledged request (it was the only one taking them), so the
// reason the Guide's backup waits for an active primary (it alone cannot
// tell a dead primary from a broken link, and may lack what the primary
// took) no longer holds, and a backup that waited never served until the
// dead primary came back.
func (f *FSM) SetBackupVote(on bool) { f.backupVote = on }

// NewFSM returns a machine in the starting state of role. peerTimeout is
// how long the peer may stay silent before it is considered dead; the
// Guide uses two heartbeats.
func NewFSM(role Role, peerTimeout time.Duration) (*FSM, error) {
	if !role.valid() {
		return nil, fmt.Errorf("%w: role %v", ErrConfig, role)
	}
	if peerTimeout <= 0 {
		return nil, fmt.Errorf("%w: peer timeout %v must be positive", ErrConfig, peerTimeout)
	}
	return &FSM{role: role, state: role.initial(), timeout: peerTimeout}, nil
}

// Start arms the peer-expiry clock at now + peerTimeout, as the Guide's
// bstar_start does. Until then a node must not believe its peer dead: a
// server that has just come up has not had time to hear anybody, and a
// client request in its first moments must not make it active (this is
// what stops a restarted primary from going active beside an active
// backup). Handle calls Start itself if the caller has not.
func (f *FSM) Start(now time.Time) {
	f.started = true
	f.peerExpiry = now.Add(f.timeout)
}

// Role returns the configured role.
func (f *FSM) Role() Role { return f.role }

// State returns the current state.
func (f *FSM) State() State { return f.state }

// PeerTimeout returns the silence after which the peer counts as dead.
func (f *FSM) PeerTimeout() time.Duration { return f.timeout }

// PeerExpiry returns the instant from which the peer counts as dead unless
// it is heard from again; zero before Start.
func (f *FSM) PeerExpiry() time.Time { return f.peerExpiry }

// PeerExpired reports whether the peer counts as dead at now. It is the
// same test a CLIENT_REQUEST applies in PRIMARY and PASSIVE.
func (f *FSM) PeerExpired(now time.Time) bool {
	return f.started && !now.Before(f.peerExpiry)
}

// Handle applies ev at instant now and reports what it did. A peer event
// first refreshes the peer expiry (the peer has just proven it is alive),
// then runs the transition. The only error is ErrUnknownEvent.
func (f *FSM) Handle(ev Event, now time.Time) (Result, error) {
	res := Result{Event: ev, From: f.state, To: f.state}
	if !f.started {
		f.Start(now)
	}
	switch {
	case ev.fromPeer():
		f.peerExpiry = now.Add(f.timeout)
		res.SameRole = State(ev) == f.role.initial()
	case ev == EventClientRequest:
	default:
		return res, fmt.Errorf("%w: %v in state %v", ErrUnknownEvent, ev, f.state)
	}

	switch f.state {
	case StatePrimary:
		// The primary waits for its peer, but may also be voted active
		// by a client once the peer has been silent for the timeout.
		switch ev {
		case EventPeerBackup:
			f.to(&res, StateActive, "connected to backup (passive), ready as active")
		case EventPeerActive:
			f.to(&res, StatePassive, "connected to backup (active), ready as passive")
		case EventClientRequest:
			if f.PeerExpired(now) {
				res.Accepted = true
				f.to(&res, StateActive, "request from client, ready as active")
			} else {
				// The backup may be active right now (a fail-back in
				// progress); answering would make two actives.
				res.Message = "client request refused: waiting to hear from backup"
			}
		default:
			res.Message = "peer is " + State(ev).String() + ": still waiting for backup"
		}
	case StateBackup:
		// The backup never serves until it has seen an active primary
		// and gone passive: it alone cannot tell a dead primary from a
		// broken link.
		switch ev {
		case EventPeerActive:
			f.to(&res, StatePassive, "connected to primary (active), ready as passive")
		case EventClientRequest:
			if f.backupVote && f.PeerExpired(now) {
				res.Accepted = true
				f.to(&res, StateActive, "request from client; this backup went on alone and holds every acknowledged request, ready as active")
			} else {
				res.Message = "client request refused: backup waiting for primary"
			}
		default:
			res.Message = "peer is " + State(ev).String() + ": still waiting for an active primary"
		}
	case StateActive:
		// The only way out of ACTIVE is death, or a healed split brain.
		switch ev {
		case EventPeerActive:
			// Both served while they could not hear each other. The
			// Guide aborts both; here the backup yields and the primary
			// stays, and the yielding node hands what it did alone over
			// to the primary before it rejoins (titanic/ha), so
			// neither side's work is lost.
			if f.role == Backup {
				f.to(&res, StatePassive, "split brain healed: primary is active too; backup yields, ready as passive")
			} else {
				res.Message = "split brain healed: backup is active too; primary stays active, backup yields"
			}
		case EventClientRequest:
			res.Accepted = true
			res.Message = "client request accepted"
		default:
			res.Message = "peer is " + State(ev).String() + ": staying active"
		}
	case StatePassive:
		switch ev {
		case EventPeerPrimary:
			// The peer restarted; it will see us active and go passive.
			f.to(&res, StateActive, "primary (passive) is restarting, ready as active")
		case EventPeerBackup:
			f.to(&res, StateActive, "backup (passive) is restarting, ready as active")
		case EventPeerPassive:
			// Nobody serves. The Guide aborts both; here the primary
			// takes over (both hear each other, so this makes one
			// active, not two). It happens when a backup yielded to a
			// stale ACTIVE: state sent by a primary that has since died,
			// delivered late by TCP after a partition healed.
			if f.role == Primary {
				f.to(&res, StateActive, "both passive: primary takes over, ready as active")
			} else {
				res.Message = "both passive: waiting for the primary to take over"
			}
		case EventClientRequest:
			// The client vote: the peer is silent and a client came to
			// us, so the peer is dead to the clients too.
			if f.PeerExpired(now) {
				res.Accepted = true
				f.to(&res, StateActive, "failover successful, ready as active")
			} else {
				res.Message = "client request refused: peer is alive"
			}
		default:
			res.Message = "peer is " + State(ev).String() + ": staying passive"
		}
	}
	return res, nil
}

func (f *FSM) to(res *Result, s State, msg string) {
	f.state = s
	res.To = s
	res.Changed = res.From != s
	res.Message = msg
}
