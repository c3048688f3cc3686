// Package tsp is titanic's wire vocabulary: the 9/TSP status codes, the
// names of the titanic.* services (9/TSP's three and this project's
// extensions), the kinds of refusal a client acts on, and the codecs of
// the notification events and of the role probe. It is a leaf: it imports
// nothing of this repository, so that the broker (package titanic and its
// parts) and the client (package client) both import it and neither
// imports the other. The codes and frames here are the ones on the wire:
// older releases read them, so none may change.
//
// # Answers
//
// An answer's first frame is the bare 9/TSP code (200, 300, 400 or 500;
// 9/TSP allows "NNN text" there too, which ParseAnswer reads). An answer
// that is not 200 carries a second frame of text, which starts with its
// kind:
//
//	kind            = the text up to its first ':'
//	text            = kind [ ": " detail ]
//
// The kind is a fixed token (Kind) that clients branch on; the detail is
// for people and may change between releases. Clients must never match
// the detail. One exception is kept for the releases that send it: a
// broker answers a titanic.* service it does not know with
// `unknown titanic service "NAME"` (a space, not ": ", before the detail),
// and ParseAnswer reads that form as the kind UnknownService.
//
//	code  kind                      the client
//	500   not active                asks another broker: this one does not serve
//	500   not ready                 asks this broker again: it serves soon, or the
//	                                ticket may be its peer's until a split brain merges
//	500   busy, retry later         retries later (a limit was reached)
//	500   outcome unknown           sends the submit again with the same key: the
//	                                broker may have stored it (a raft leader lost
//	                                its leadership with it in flight)
//	500   failed                    gives up: the ticket failed for good (detail: the
//	                                reason; "cancelled: ..." for a cancelled ticket)
//	400   unknown ticket            gives up: never submitted, or closed
//	400   unknown titanic service   falls back: the broker is older than the service
//	400   not supported             falls back: the cluster cannot store it yet
//	400   key conflict              gives up: the key names another request's ticket
//	                                (detail: "<ticket>: <what differs>")
//	400   bad request               gives up: the request is malformed
//	400   not failed                gives up: only a failed ticket can be retried
//	400   finished                  gives up: the ticket is finished already
//	400   forbidden                 gives up: a cluster change or a backup asked from
//	                                an address that may not (detail: why)
//
// Other 500 texts (a storage error) have no kind: retry later, as 9/TSP
// says of 500.
package tsp

import (
	"strconv"
	"strings"
)

// Status codes of 9/TSP. The status frame is always the bare code, so that
// clients comparing it byte for byte (the Guide's ticlient does)
// understand it; for codes other than 200 a second frame carries the
// text (see Kind).
const (
	CodeOK      = "200"
	CodePending = "300"
	CodeUnknown = "400"
	CodeError   = "500"
)

// Prefix is the service-name prefix the titanic service owns: a worker may
// not register a service under it, nor a client submit to one.
const Prefix = "titanic."

// Service names of 9/TSP, and of this project's extensions (README:
// Protocols, Job lifecycle). A broker that lacks an extension answers 400
// UnknownService.
const (
	SvcRequest  = "titanic.request"  // 9/TSP: [service | body...] → 200 | ticket
	SvcReply    = "titanic.reply"    // 9/TSP: [ticket] → 200 | reply..., or 300, 400, 500
	SvcClose    = "titanic.close"    // 9/TSP: [ticket] → 200
	SvcSubmit   = "titanic.submit"   // titanic.request with an idempotency key
	SvcSubmit2  = "titanic.submit2"  // titanic.submit with lifecycle options
	SvcStatus   = "titanic.status"   // a ticket's state, attempts and times
	SvcList     = "titanic.list"     // list tickets
	SvcWait     = "titanic.wait"     // titanic.reply that waits for the reply
	SvcBackup   = "titanic.backup"   // write an online snapshot on the broker's host
	SvcHello    = "titanic.hello"    // client presence: "I am here"
	SvcBye      = "titanic.bye"      // client presence: "I am leaving"
	SvcClients  = "titanic.clients"  // list the clients present
	SvcStats    = "titanic.stats"    // per-service queue counts and rates (JSON)
	SvcRetry    = "titanic.retry"    // give a failed ticket another round
	SvcCancel   = "titanic.cancel"   // end a pending or running ticket as cancelled
	SvcPause    = "titanic.pause"    // stop dispatching a service's tickets
	SvcResume   = "titanic.resume"   // dispatch a paused service's tickets again
	SvcAttempts = "titanic.attempts" // the attempts that ended without a reply (JSON)
	SvcPurge    = "titanic.purge"    // titanic.close, only of a failed ticket
)

// The cluster's admin services (replicated modes). Every node answers them,
// active or not; see package titanic/ha.
const (
	AdminPrefix = "titanic.cluster"
	SvcCluster  = AdminPrefix              // a node's raft state
	SvcJoin     = AdminPrefix + ".join"    // add a raft voter: [id | addr], or a nonvoter: [id | addr | JoinNonvoter]
	SvcLeave    = AdminPrefix + ".leave"   // remove a member
	SvcRole     = AdminPrefix + ".role"    // does this node serve? (RoleAnswer)
	SvcHistory  = AdminPrefix + ".history" // a pair node's epoch history
	SvcAdopt    = AdminPrefix + ".adopt"   // a split brain's handover
	SvcForget   = AdminPrefix + ".forget"  // stop waiting for the peer's split
	SvcVersion  = AdminPrefix + ".version" // the cluster version
	// SvcStandDown: a pair's active asks its passive peer, whose raft it
	// cannot reach, to give up taking over before it goes on alone.
	SvcStandDown = AdminPrefix + ".standdown"
)

// MaxBodyFrames is the most frames a request body may hold: what a
// worker receives of it, once the broker's REQUEST header (five frames)
// is added, stays within the frame bound of every receiver
// (zsock.DefaultMaxFrames, 1024), as a client's own request does.
const MaxBodyFrames = 1000

// JoinNonvoter is the third frame of a titanic.cluster.join that adds a
// member without a vote (a pair's returning peer, until it has caught
// up). A release without it answers such a join 400.
const JoinNonvoter = "nonvoter"

// JoinVoter is the third frame of a titanic.cluster.join by which a
// group's member that joined without a vote, and has caught up, asks
// for its vote; and a pair's passive that follows its active's raft
// without a vote (the active that withholds it, raft's link having been
// found cut, gives it on this request only). A release without it
// answers 400.
const JoinVoter = "voter"

// JoinVoterForce is the third frame of an operator's titanic.cluster.join
// that gives a group's member its vote although the leader does not know
// it caught up (`cluster join --voter --force`): a plain JoinVoter from
// the operator is refused for a member that has not asked for its vote
// with an applied index near the commit index. A release without it
// answers 400.
const JoinVoterForce = "voter-force"

// Kind is the kind of a refusal: the fixed token its text frame starts
// with. The constants are the exact texts the wire has carried since the
// release that introduced each.
type Kind string

// The kinds of refusal (see the package doc for their codes and what a
// client does with each). None is the kind of a text that starts with no
// known token.
const (
	None           Kind = ""
	NotActive      Kind = "not active"
	NotReady       Kind = "not ready"
	Busy           Kind = "busy, retry later"
	Failed         Kind = "failed"
	UnknownTicket  Kind = "unknown ticket"
	UnknownService Kind = "unknown titanic service"
	NotSupported   Kind = "not supported"
	KeyConflict    Kind = "key conflict"
	BadRequest     Kind = "bad request"
	NotFailed      Kind = "not failed"
	Finished       Kind = "finished"
	Uncertain      Kind = "outcome unknown"
	Forbidden      Kind = "forbidden"
)

var kinds = map[Kind]bool{
	NotActive: true, NotReady: true, Busy: true, Failed: true, UnknownTicket: true,
	UnknownService: true, NotSupported: true, KeyConflict: true, BadRequest: true,
	NotFailed: true, Finished: true, Uncertain: true, Forbidden: true,
}

// Text is the text frame of a refusal of kind k with a detail: the
// token, ": " and detail (even an empty one: a reader of the first release
// matches "failed: " with its colon). A refusal without detail is
// string(k).
func (k Kind) Text(detail string) string {
	return string(k) + ": " + detail
}

// CancelledReason starts the detail of a Failed answer for a ticket that
// was cancelled: "failed: cancelled: <reason>".
const CancelledReason = "cancelled: "

// Served reports whether the titanic service (not the cluster's admin
// services) serves name: the 9/TSP services and this project's.
func Served(name string) bool {
	switch name {
	case SvcRequest, SvcReply, SvcClose, SvcSubmit, SvcSubmit2, SvcStatus, SvcList, SvcWait, SvcBackup,
		SvcHello, SvcBye, SvcClients, SvcStats, SvcRetry, SvcCancel, SvcPause, SvcResume, SvcAttempts, SvcPurge:
		return true
	}
	return false
}

// AdminServed reports whether the admin handler of a replicated node
// serves name.
func AdminServed(name string) bool {
	switch name {
	case SvcCluster, SvcJoin, SvcLeave, SvcRole, SvcHistory, SvcAdopt, SvcForget, SvcVersion, SvcStandDown:
		return true
	}
	return false
}

// UnknownServiceText is the text of the 400 for a titanic.* service the
// broker does not know. It keeps the form of the first release (a space
// and the quoted name), which that release's clients match.
func UnknownServiceText(service string) string {
	return string(UnknownService) + " " + strconv.Quote(service)
}

// Answer is an answer read by its status and kind.
type Answer struct {
	Code   string // the 3-digit code
	Kind   Kind   // None for a 200, a 300, or a text of no known kind
	Detail string // the text after the kind (all of it when Kind is None)
	// Text is the whole text frame (or the text after the code in the
	// status frame).
	Text string
}

// ParseAnswer reads an answer's status and the kind of its text. A 200's
// and a 300's second frame (a ticket, reply frames, a state) is no text:
// only their code is read. Frames after the second are not read.
func ParseAnswer(rep [][]byte) Answer {
	if len(rep) == 0 {
		return Answer{}
	}
	code, text, _ := strings.Cut(string(rep[0]), " ")
	a := Answer{Code: code}
	if code == CodeOK || code == CodePending {
		return a
	}
	if len(rep) > 1 {
		text = string(rep[1])
	}
	a.Text = text
	a.Kind, a.Detail = KindOf(text)
	return a
}

// KindOf splits a refusal's text into its kind and detail. A text whose
// part before the first ':' is no known kind is None, with the whole text
// as detail.
func KindOf(text string) (Kind, string) {
	tok, detail, _ := strings.Cut(text, ":")
	if k := Kind(tok); kinds[k] {
		return k, strings.TrimPrefix(detail, " ")
	}
	if rest, ok := strings.CutPrefix(text, string(UnknownService)+" "); ok {
		return UnknownService, rest
	}
	return None, text
}

// Is reports whether rep is an answer with code whose text is of kind k.
func Is(rep [][]byte, code string, k Kind) bool {
	a := ParseAnswer(rep)
	return k != None && a.Code == code && a.Kind == k
}

// Frames of the extensions that both sides spell.
const (
	// StatusBody is the optional second frame of titanic.status that asks
	// for the request body too: [ticket | StatusBody].
	StatusBody = "body"
	// ListMore starts the last frame of a titanic.list answer whose scan
	// stopped before the end: "more <ticket>", the ticket to go on after.
	// A client that does not know it reads one more line of the listing.
	ListMore = "more "
)

// The keys of titanic.submit2's options frame: space-separated
// key=value fields, each key at most once.
const (
	OptDelay    = "delay"    // a duration: not dispatched before now+delay
	OptAt       = "at"       // an RFC 3339 time: not dispatched before it
	OptPriority = "priority" // high, normal or low
	OptTTL      = "ttl"      // a duration: expires if not dispatched by now+ttl
	OptDeadline = "deadline" // an RFC 3339 time: expires if not dispatched by it
	OptAttempts = "attempts" // attempts before the ticket fails for good
	OptBackoff  = "backoff"  // BASE[,MAX] durations of the retry backoff
)
