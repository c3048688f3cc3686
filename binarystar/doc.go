// Package binarystar decides which server of a primary/backup pair is
// active, after the Binary Star pattern of the ZeroMQ Guide (chapter 4).
//
// # What it owns
//
// The package owns the pair's finite-state machine (FSM, pure logic driven
// with explicit times, so it is table-tested without sockets or clocks)
// and the state link between the two servers (Node): a PUB socket that
// binds Config.Local and publishes this node's state every heartbeat, and
// a SUB socket that connects to the peer's PUB (Config.Peer) and turns each
// state the peer publishes into a PEER_* event. It does not own the
// servers' client sockets or any replicated data: the application asks
// Node.ClientRequest before serving each client request, and learns of
// changes through Config.OnChange (and of the peer's liveness through
// Config.OnPeer).
//
// # Threading model
//
// Node.Run's goroutine owns the FSM and the PUB socket; a goroutine that
// Run starts and stops owns the SUB socket and hands it the peer's states
// over a channel. Other goroutines call ClientRequest, State, PeerAlive
// and Stats, which read atomic mirrors; a ClientRequest that might be the
// client vote is passed to the Run goroutine, which alone applies events.
// OnChange and OnPeer run on the Run goroutine.
//
// # States, events, transitions
//
// A primary starts in PRIMARY, a backup in BACKUP. Each node publishes
// its state; the peer's state arrives as an event (PEER_PRIMARY,
// PEER_BACKUP, PEER_ACTIVE, PEER_PASSIVE), and a client asking to be served
// is CLIENT_REQUEST. Every peer event first refreshes peer_expiry to
// now + Missed × Heartbeat (the Guide: two heartbeats); peer_expiry is
// also set so at start. "expired" below means now >= peer_expiry.
//
//	state    event           outcome
//	PRIMARY  PEER_PRIMARY    ignored (both are primaries: logged as misconfiguration)
//	PRIMARY  PEER_BACKUP     → ACTIVE  "connected to backup (passive), ready as active"
//	PRIMARY  PEER_ACTIVE     → PASSIVE "connected to backup (active), ready as passive"
//	PRIMARY  PEER_PASSIVE    ignored
//	PRIMARY  CLIENT_REQUEST  expired: → ACTIVE, accepted ("request from client, ready as active");
//	                         else refused (the backup may be active: a fail-back is under way)
//	BACKUP   PEER_PRIMARY    ignored
//	BACKUP   PEER_BACKUP     ignored (both are backups: logged as misconfiguration)
//	BACKUP   PEER_ACTIVE     → PASSIVE "connected to primary (active), ready as passive"
//	BACKUP   PEER_PASSIVE    ignored
//	BACKUP   CLIENT_REQUEST  refused
//	ACTIVE   PEER_PRIMARY    ignored (the peer restarted and will go passive)
//	ACTIVE   PEER_BACKUP     ignored (likewise)
//	ACTIVE   PEER_ACTIVE     backup: → PASSIVE (yields); primary: stays ACTIVE ("split brain healed")
//	ACTIVE   PEER_PASSIVE    ignored
//	ACTIVE   CLIENT_REQUEST  accepted
//	PASSIVE  PEER_PRIMARY    → ACTIVE  "primary (passive) is restarting, ready as active"
//	PASSIVE  PEER_BACKUP     → ACTIVE  "backup (passive) is restarting, ready as active"
//	PASSIVE  PEER_ACTIVE     ignored
//	PASSIVE  PEER_PASSIVE    primary: → ACTIVE ("both passive: primary takes over"); backup: waits
//	PASSIVE  CLIENT_REQUEST  expired: → ACTIVE, accepted ("failover successful, ready as active");
//	                         else refused
//
// ACTIVE has no way out but death: fail-back is manual (restart the
// primary, which comes up passive beside the active backup; then stop the
// backup, and the primary becomes active when the backup's silence and a
// client's request agree). A refused request is dropped without reply: the
// client times out and tries the other server. Clients must wait at least
// the peer timeout before retrying on the other server, or their vote comes
// too early and is refused. Where the Guide aborts (dual actives, dual
// passives), this package resolves the pair: the backup yields, the
// primary takes over.
//
// Silence alone changes nothing: a passive node becomes active only when
// (a) it is passive, (b) the peer has been silent for the peer timeout,
// and (c) a client asks it to serve. That three-way decision is what keeps
// a broken link between the servers from making two actives.
//
// # Wire format
//
// A state message is one frame, "BSTAR1 <n>", n being the Guide's state
// number (PRIMARY=1, BACKUP=2, ACTIVE=3, PASSIVE=4) in ASCII. Anything else
// (other text, other versions, several frames) is dropped, counted in
// Stats.Malformed, and does not count as a sign of life from the peer. A
// frame over 64 bytes makes ZeroMQ drop the connection that carried it
// (ZMQ_MAXMSGSIZE; the SUB then reconnects).
//
// # Limits
//
// Binary Star guards against one failure at a time. A partition that cuts
// only the link between the servers, while clients still reach both, makes
// the passive see its peer silent, but it stays passive as long as clients
// keep talking to the active: it becomes active only if a client turns to
// it, which a client does only when the active has failed to answer it in
// time. The client vote is the only safeguard, so if clients are split too
// — some reach only the backup, some only the primary, for example two
// sites each holding a server and some clients, joined by the one cut link
// — the backup is voted active while the primary stays active: split
// brain. When the link heals the two see each other active; the Guide
// aborts both, here the backup yields and goes passive while the primary
// stays active (the caller, titanic/ha, then has the backup hand what it
// did alone over to the primary, so nothing acknowledged is lost). A server belongs to one
// pair, there is one backup, and the configuration is fixed at start.
//
// # Deviations from the Guide
//
//   - Wire format: the Guide sends the bare state number; here it is
//     versioned ("BSTAR1 <n>") and strictly parsed, so that a stray or
//     future publisher is dropped instead of read as an event. Malformed
//     messages do not refresh peer_expiry (the Guide's atoi turned any
//     message into a refresh and a no-op event 0).
//   - A node publishes its state at once when it starts and when its state
//     changes, besides every heartbeat; the Guide publishes on the
//     heartbeat only. This only makes the pair settle sooner.
//   - The peer timeout is Missed × Heartbeat, Missed defaulting to the
//     Guide's 2.
//   - PRIMARY + CLIENT_REQUEST follows the Guide's bstar reactor (active on
//     an expired peer, else refused), not the first bstarsrv example
//     (which answered without changing state); the expiry test is >=, as in
//     the reactor.
//   - Additions that change no transition: a peer reporting the starting
//     state of our own role is flagged (Result.SameRole) and logged once,
//     since such a pair never elects an active; peer liveness is reported
//     (PeerAlive, OnPeer).
//   - Dual actives (a healed split brain) and dual passives are not fatal:
//     the backup yields to an active primary, and a passive primary that
//     hears a passive backup takes over.
package binarystar
