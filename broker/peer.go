package broker

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Peering: brokers of several clusters lend each other workers.
//
// Each broker binds a cloud frontend (ROUTER, routing id = its name) and a
// state publisher (PUB), and connects a cloud backend (ROUTER, routing id
// = its name) and a state subscriber (SUB) to every peer. Frames, all
// after the routing id on the ROUTERs:
//
//	state    ["TPEER01" | "STATE" | name | run | service | spare ... | "" | origin | service | held ...]
//	request  ["" | "TPEER01" | "REQUEST" | token | service | body...]   origin → peer
//	reply    ["" | "TPEER01" | "REPLY" | token | body...]               peer → origin
//	fail     ["" | "TPEER01" | "FAIL" | token | reason]                 peer → origin
//
// A broker publishes its spare capacity per service (idle workers less
// queued plain requests) when it changes and every PeerStateEvery. run
// names the broker's process (it changes at each start): a peer that
// restarts has lost the requests it held, so when a peer's run changes,
// its jobs fail back at once, even if it came back within its liveness.
// After the empty frame, held counts the requests of each origin the broker
// holds (queued or running) per service: an origin subtracts from the
// advertised spare capacity only its jobs the peer has not counted yet
// (sent, but not yet in held), so it neither overbooks nor counts a job
// twice. Durable work goes to local workers first; when a service has no idle local
// worker, the origin takes jobs from its Source for the peer advertising
// the most spare capacity, reserving one unit per job until its reply,
// failure or the peer's death, so that it never books more than was
// advertised ("busy stays busy" cannot happen). The job stays unfinished
// in the origin's store until the reply is back; a peer silent for
// PeerLiveness × PeerStateEvery is dead, and its jobs fail back to the
// Source, which redelivers them. A request that came from a peer is
// served by local workers only, never forwarded again: loops cannot form.

const peerHeader = "TPEER01"

// PeerProtocol is the peering protocol's version, the digits of peerHeader
// (`titanic version` prints it). A newer broker keeps speaking this one to
// peers that do not announce its version.
const PeerProtocol = 1

// peerFamily is what every version's header starts with: the state
// subscription takes them all, so that a peer of a newer protocol is named
// as such instead of looking silent.
const peerFamily = "TPEER"

// newerPeer reports the version of a peering header newer than this
// build's ("TPEER<nn>", nn > PeerProtocol).
func newerPeer(header []byte) (int, bool) {
	rest, ok := bytes.CutPrefix(header, []byte(peerFamily))
	if !ok || len(rest) != 2 || rest[0] < '0' || rest[0] > '9' || rest[1] < '0' || rest[1] > '9' {
		return 0, false
	}
	v := int(rest[0]-'0')*10 + int(rest[1]-'0')
	return v, v > PeerProtocol
}

// noteNewerPeer logs, at most every 10 seconds, that a peer speaks a newer
// peering protocol: its messages are dropped, so it looks dead here.
func (s *state) noteNewerPeer(now time.Time, header []byte, who string) bool {
	v, newer := newerPeer(header)
	if !newer || s.peering == nil {
		return false
	}
	s.c.Malformed++
	if now.Sub(s.peering.newerWarned) >= 10*time.Second {
		s.peering.newerWarned = now
		s.log.Error(fmt.Sprintf("peer %s runs a newer peering protocol %d; this broker understands up to %d: upgrade it", who, v, PeerProtocol))
	}
	return true
}

// Peer is another cluster's broker.
type Peer struct {
	Name  string // its peering name (the routing id of its cloud sockets)
	Cloud string // its cloud frontend endpoint
	State string // its state publisher endpoint
	// Public is its broker's CURVE public key (Z85). With the broker's
	// Curve set and every peer's key given, the peering links are CURVE:
	// this broker's cloud and state endpoints take only the peers' keys
	// (ZAP domain PeeringCurveDomain), and it connects to each peer as a
	// CURVE client of that key with its own key pair. Empty for every
	// peer: the links are plain.
	Public string
}

// PeeringCurveDomain is the ZAP domain of the peering endpoints under
// CURVE.
const PeeringCurveDomain = "titanic-peering"

// curved reports whether the peering links of pc are CURVE under cc.
func (pc PeeringConfig) curved(cc *CurveConfig) bool {
	return cc != nil && len(pc.Peers) > 0 && pc.Peers[0].Public != ""
}

// PeeringConfig enables peering.
type PeeringConfig struct {
	Name        string // this broker's name among its peers
	CloudListen string // cloud frontend endpoint to bind
	StateListen string // state publisher endpoint to bind
	Peers       []Peer
	// StateEvery is how often the spare capacity is published even when
	// it does not change (default 1s); a peer silent for Liveness ×
	// StateEvery (default 3) is dead.
	StateEvery time.Duration
	Liveness   int
	// LeaseTimeout bounds how long a job forwarded to a peer may go
	// without the peer's state counting it as held: a request or reply
	// lost on the cloud link (a ROUTER send dropped in a reconnect) would
	// otherwise leave the ticket dispatched, and a unit of the peer's
	// capacity reserved, for as long as the peer lives. Past it the job
	// fails back to the Source, which redelivers it: at least once, so a
	// peer that did run it may run it twice (its late answer is stale).
	// Zero: the broker's LeaseTimeout.
	LeaseTimeout time.Duration
}

// peerState is what a broker knows of one peer.
type peerState struct {
	name      string
	cfg       Peer           // its endpoints, for Stats
	spare     map[string]int // advertised
	reserved  map[string]int // jobs sent, not yet answered
	held      map[string]int // of them, those the peer's last state counted
	lastHeard time.Time
	alive     bool
	run       string // the peer's process, from its state; "" until heard
	// routable: the cloud backend has a connection to the peer (a PING
	// went through). A state message can arrive before the cloud
	// connection is made; jobs are sent only once it is.
	routable bool
	// strikes counts the peer leases in a row that ran out with the
	// peer's state counting none of its jobs of their service (each
	// bench once): the peer advertises capacity but loses what it is
	// sent (a cloud link that delivers nothing, a broken or hostile
	// peer). It is not booked until benchedUntil, and then one job at a
	// time, until its state counts a job or it answers one.
	strikes      int
	benchedUntil time.Time
}

// free is the capacity of service this broker may still book at p: the
// advertised spare less the jobs it sent that the peer has not counted in
// its state yet; after a strike, one job at most until one is counted.
func (p *peerState) free(service string) int {
	uncounted := max(p.reserved[service]-p.held[service], 0)
	n := p.spare[service] - uncounted
	if p.strikes > 0 {
		n = min(n, 1-uncounted)
	}
	return n
}

// bookable reports whether jobs of service may be sent to p now.
func (p *peerState) bookable(now time.Time, service string) bool {
	return p.alive && p.routable && !now.Before(p.benchedUntil) && p.free(service) > 0
}

// trusted clears p's strikes: it counted or answered a job.
func (p *peerState) trusted() { p.strikes, p.benchedUntil = 0, time.Time{} }

// maxBenchShift bounds a peer's bench: 2^3 = 8 peer lease timeouts.
const maxBenchShift = 3

// cloudLease is a durable job held by a peer.
type cloudLease struct {
	peer  string
	lease Lease
	// deadline: renewed while the peer's state counts every job of its
	// service from here as held (see renewPeerLeases).
	deadline time.Time
}

// maxToken bounds the token of a request from a peer: it is kept in the
// request's route for as long as it is held. Tokens are run.leaseID
// (about 30 bytes).
const maxToken = 255

// lateLease is a peer lease given up, whose reply may still come.
type lateLease struct {
	peer  string
	lease Lease
	until time.Time
}

// maxLate bounds the leases given up that are kept for a late reply: past
// it the oldest go (their replies are then dropped as stale, and the jobs
// run again, at least once).
const maxLate = 4096

// giveUp keeps the lease of token, just failed back to the Source, for a
// late reply.
func (pr *peering) giveUp(now time.Time, token string, cl *cloudLease, keep time.Duration) {
	for len(pr.lateOrder) > 0 && (len(pr.late) >= maxLate || len(pr.lateOrder) >= 2*maxLate) {
		delete(pr.late, pr.lateOrder[0])
		pr.lateOrder = pr.lateOrder[1:]
	}
	pr.late[token] = &lateLease{peer: cl.peer, lease: cl.lease, until: now.Add(keep)}
	pr.lateOrder = append(pr.lateOrder, token)
}

// pruneLate forgets the leases given up whose time for a late reply is
// over.
func (pr *peering) pruneLate(now time.Time) {
	for len(pr.lateOrder) > 0 {
		tok := pr.lateOrder[0]
		if l := pr.late[tok]; l != nil {
			if now.Before(l.until) {
				return
			}
			delete(pr.late, tok)
		}
		pr.lateOrder = pr.lateOrder[1:]
	}
}

// lateReply hands a peer's reply for a lease given up to the Source with
// that lease (its Tag names the earlier dispatch): README, Guarantees, "a
// lease from an earlier dispatch that ends late ends nothing but itself;
// its reply is recorded if it is the first". It reports whether token was
// such a lease of from.
func (s *state) lateReply(from, token string, body [][]byte) bool {
	pr := s.peering
	l := pr.late[token]
	if l == nil || l.peer != from {
		return false
	}
	delete(pr.late, token)
	s.c.LatePeerReplies++
	s.log.Debug("late reply from a peer: handed on, recorded if first", "peer", from, "service", l.lease.Service)
	s.source.Completed(l.lease, body)
	return true
}

// cloudRoutePrefix marks the client route of a request that came from a
// peer: "\x00peer\x00" origin "\x00" token. It cannot be a ROUTER identity
// (those never start with a zero byte).
const cloudRoutePrefix = "\x00peer\x00"

func cloudRoute(origin, token string) string { return cloudRoutePrefix + origin + "\x00" + token }

func parseCloudRoute(route string) (origin, token string, ok bool) {
	rest, ok := strings.CutPrefix(route, cloudRoutePrefix)
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, "\x00")
}

// peering is the state's peering part; nil when peering is off.
type peering struct {
	cfg    PeeringConfig
	peers  map[string]*peerState
	leases map[string]*cloudLease // by token (run.leaseID)
	// late are leases given up (expired, or their peer lost), by token,
	// kept for a peer lease timeout so that the peer's late reply still
	// reaches the Source, which records it if it is the first; lateOrder
	// is their tokens oldest first (some already answered). Both are
	// bounded by maxLate.
	late      map[string]*lateLease
	lateOrder []string
	// held are the requests from peers this broker holds (queued or
	// running), route → service, for the held counts of its state.
	held map[string]string
	// remote counts the live peers serving each service (reportRemote).
	remote     map[string]int
	sendPeer   sendFunc // cloud backend: to a peer by name
	sendOrigin sendFunc // cloud frontend: to an origin by name
	publish    func(frames [][]byte) error
	lastAdvert map[string]int
	// newerWarned is when a peer of a newer protocol was last logged.
	newerWarned time.Time
	// unknownWarned is when a request from an unknown origin was last
	// logged.
	unknownWarned time.Time
	advertAt      time.Time
	run           string // this process, in the state it publishes
}

func newPeering(cfg PeeringConfig) *peering {
	p := &peering{cfg: cfg, peers: make(map[string]*peerState), leases: make(map[string]*cloudLease), late: make(map[string]*lateLease),
		held: make(map[string]string), remote: make(map[string]int),
		run: strconv.FormatInt(time.Now().UnixNano(), 36)}
	for _, pc := range cfg.Peers {
		p.peers[pc.Name] = &peerState{name: pc.Name, cfg: pc, spare: map[string]int{}, reserved: map[string]int{}, held: map[string]int{}}
	}
	return p
}

// peerStateMsg handles a state message from a peer's publisher.
func (s *state) peerStateMsg(now time.Time, frames [][]byte) {
	if len(frames) >= 3 && s.noteNewerPeer(now, frames[0], string(frames[2])) {
		return
	}
	if s.peering == nil || len(frames) < 3 || string(frames[0]) != peerHeader || string(frames[1]) != "STATE" {
		s.c.Malformed++
		return
	}
	p := s.peering.peers[string(frames[2])]
	if p == nil {
		s.c.Malformed++ // not a configured peer
		return
	}
	if len(frames) < 4 {
		s.c.Malformed++
		return
	}
	run, rest := string(frames[3]), frames[4:]
	spare := make(map[string]int)
	held := 0 // this broker's jobs the peer holds, all services
	heldBy := make(map[string]int)
	inHeld := false
	for i := 0; i < len(rest); {
		if len(rest[i]) == 0 && !inHeld {
			inHeld = true
			i++
			continue
		}
		width := 2
		if inHeld {
			width = 3
		}
		if i+width > len(rest) {
			s.c.Malformed++
			return
		}
		n, err := strconv.Atoi(string(rest[i+width-1]))
		if err != nil || n < 0 || len(rest[i]) == 0 {
			s.c.Malformed++
			return
		}
		if inHeld {
			if string(rest[i]) == s.peering.cfg.Name {
				heldBy[string(rest[i+1])] = n
				held += n
			}
		} else {
			spare[string(rest[i])] = n
		}
		i += width
	}
	if p.run != "" && run != p.run {
		// The peer restarted: the requests it held are gone, and so is
		// its cloud connection (probe again before sending).
		s.log.Warn("peer restarted: its jobs go back to the queue", "peer", p.name)
		p.routable = false
		s.failPeerLeases(now, p.name, "peer "+p.name+" restarted", false)
		p.trusted() // a new process: what lost its jobs may be gone
	}
	p.run = run
	if held > 0 {
		p.trusted()
	}
	if !p.alive {
		s.log.Info("peer up", "peer", p.name)
	}
	p.alive, p.lastHeard, p.spare, p.held = true, now, spare, heldBy
	s.renewPeerLeases(now, p)
	s.probe(p)
	s.reportRemote()
	for svc := range spare {
		if p.bookable(now, svc) {
			s.cloudDispatch(now, svc)
		}
	}
}

// probe checks that the cloud backend can reach p: with
// ZMQ_ROUTER_MANDATORY, a PING to a peer without a connection fails at
// once (EHOSTUNREACH) and costs nothing.
func (s *state) probe(p *peerState) {
	if p.routable {
		return
	}
	if err := s.peering.sendPeer(p.name, [][]byte{{}, []byte(peerHeader), []byte("PING")}); err == nil {
		p.routable = true
	}
}

// cloudDispatch forwards jobs of service to peers while it has no idle
// local worker and a live peer has unreserved spare capacity.
func (s *state) cloudDispatch(now time.Time, service string) {
	pr := s.peering
	if pr == nil || s.source == nil {
		return
	}
	if svc := s.services[service]; svc != nil && svc.idle.Len() > 0 {
		return // local first
	}
	for {
		var best *peerState
		for _, p := range pr.peers {
			if p.bookable(now, service) && (best == nil || p.free(service) > best.free(service)) {
				best = p
			}
		}
		if best == nil {
			return
		}
		name := PeerWorkerName(best.name)
		job, ok := s.source.Next(service, name)
		if !ok {
			return
		}
		s.nextLease++
		lease := Lease{ID: s.nextLease, Service: service, Token: job.Token, Worker: name, Tag: job.Tag}
		// The run makes tokens unique across restarts of this broker: a
		// peer still holding a job of a previous run cannot answer a new
		// one by mistake.
		token := pr.run + "." + strconv.FormatUint(lease.ID, 10)
		msg := append([][]byte{{}, []byte(peerHeader), []byte("REQUEST"), []byte(token), []byte(service)}, nonEmpty(job.Body)...)
		if err := pr.sendPeer(best.name, msg); err != nil {
			s.count(err)
			s.c.JobsUnsent++
			s.source.Unsent(lease, "forward to peer "+best.name+": "+err.Error())
			// The peer cannot be reached right now: stop booking it
			// until a PING goes through again.
			best.routable = false
			continue
		}
		best.reserved[service]++
		pr.leases[token] = &cloudLease{peer: best.name, lease: lease, deadline: now.Add(s.peerLeaseTimeout())}
		s.c.JobsForwarded++
	}
}

// peerAnswer handles a REPLY or FAIL from a peer on the cloud backend.
func (s *state) peerAnswer(now time.Time, from string, frames [][]byte) {
	pr := s.peering
	if pr == nil || len(frames) < 4 || len(frames[0]) != 0 || string(frames[1]) != peerHeader {
		s.c.Malformed++
		return
	}
	// The command first: a message this broker does not understand (a
	// newer or broken peer) must leave the lease to its expiry, or the
	// job would stay dispatched at the Source with nothing to end it.
	if cmd := string(frames[2]); cmd != "REPLY" && cmd != "FAIL" {
		s.c.Malformed++
		return
	}
	token := string(frames[3])
	cl := pr.leases[token]
	if cl == nil || cl.peer != from {
		if string(frames[2]) == "REPLY" && s.lateReply(from, token, frames[4:]) {
			return
		}
		s.c.StaleReplies++
		return
	}
	delete(pr.leases, token)
	if p := pr.peers[cl.peer]; p != nil {
		p.trusted()
		if p.reserved[cl.lease.Service] > 0 {
			p.reserved[cl.lease.Service]--
		}
	}
	switch string(frames[2]) {
	case "REPLY":
		s.c.JobsCompleted++
		s.source.Completed(cl.lease, frames[4:])
	case "FAIL":
		reason := "peer " + from
		if len(frames) > 4 {
			// Bounded as a worker's reason is: it is stored with the
			// ticket.
			r := bytes.TrimSpace(frames[4])
			reason += ": " + string(r[:min(len(r), maxReason)])
		}
		s.c.JobsFailed++
		s.source.Failed(cl.lease, reason)
	}
	s.cloudDispatch(now, cl.lease.Service)
}

// cloudRequest handles a request from a peer on the cloud frontend: it is
// queued for local workers like a plain request, with a route back to the
// origin.
func (s *state) cloudRequest(now time.Time, origin string, frames [][]byte) {
	if len(frames) == 3 && len(frames[0]) == 0 && string(frames[1]) == peerHeader && string(frames[2]) == "PING" {
		return // a reachability probe
	}
	if len(frames) >= 2 && s.noteNewerPeer(now, frames[1], origin) {
		return
	}
	if s.peering == nil || len(frames) < 6 || len(frames[0]) != 0 || string(frames[1]) != peerHeader ||
		string(frames[2]) != "REQUEST" || len(frames[3]) > maxToken || len(frames[4]) == 0 || len(frames[4]) > 255 {
		s.c.Malformed++
		return
	}
	if _, known := s.peering.peers[origin]; !known {
		s.refuseUnknownOrigin(now, origin, frames[3])
		return
	}
	s.c.CloudRequests++
	route := cloudRoute(origin, string(frames[3]))
	service := string(frames[4])
	if _, dup := s.peering.held[route]; dup {
		s.c.StaleReplies++ // the same request twice: keep the first
		return
	}
	if !s.enqueueRoute(now, route, service, frames[5:]) {
		s.answerOrigin(route, false, [][]byte{[]byte("queue full")})
		return
	}
	s.peering.held[route] = service
}

// refuseUnknownOrigin answers a request from a broker this one does not
// list as a peer (a one-sided config: the origin lists this broker, this
// broker does not list it yet) with a FAIL that says so, and logs it at
// most every dropLogEvery. Unanswered, the origin would wait out a peer
// lease per attempt and fail its tickets with no word of why, on either
// side.
func (s *state) refuseUnknownOrigin(now time.Time, origin string, token []byte) {
	s.c.Malformed++
	reason := fmt.Sprintf("not a configured peer: %s does not list %s in peering.peers", s.peering.cfg.Name, origin)
	msg := [][]byte{{}, []byte(peerHeader), []byte("FAIL"), token, []byte(reason)}
	s.count(s.peering.sendOrigin(origin, msg))
	if now.Sub(s.peering.unknownWarned) >= dropLogEvery {
		s.peering.unknownWarned = now
		s.log.Warn("refused a request from a broker that is not a configured peer: add it to peering.peers, or remove this broker from its peers",
			"origin", routeString(origin))
	}
}

// answerOrigin sends a worker's reply (or a failure) for a request that
// came from a peer.
func (s *state) answerOrigin(route string, ok bool, body [][]byte) {
	delete(s.peering.held, route)
	origin, token, _ := parseCloudRoute(route)
	cmd := "REPLY"
	if !ok {
		cmd = "FAIL"
	}
	msg := append([][]byte{{}, []byte(peerHeader), []byte(cmd), []byte(token)}, nonEmpty(body)...)
	s.count(s.peering.sendOrigin(origin, msg))
}

// peerTick publishes the spare capacity when it changed or StateEvery
// passed, and declares silent peers dead, failing their jobs back.
func (s *state) peerTick(now time.Time) {
	pr := s.peering
	if pr == nil {
		return
	}
	advert := make(map[string]int)
	for name, svc := range s.services {
		if svc.workers > 0 {
			advert[name] = max(svc.idle.Len()-svc.queue.len(), 0)
		}
	}
	// "\x00origin\x00service" → requests of origin held, for the state's
	// held section (and the change check).
	for route, service := range pr.held {
		origin, _, _ := parseCloudRoute(route)
		advert["\x00"+origin+"\x00"+service]++
	}
	if !mapsEqual(advert, pr.lastAdvert) || now.Sub(pr.advertAt) >= pr.cfg.StateEvery {
		var names, helds []string
		for n := range advert {
			if strings.HasPrefix(n, "\x00") {
				helds = append(helds, n)
			} else {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		sort.Strings(helds)
		msg := [][]byte{[]byte(peerHeader), []byte("STATE"), []byte(pr.cfg.Name), []byte(pr.run)}
		for _, n := range names {
			msg = append(msg, []byte(n), []byte(strconv.Itoa(advert[n])))
		}
		if len(helds) > 0 {
			msg = append(msg, []byte{})
			for _, h := range helds {
				origin, service, _ := strings.Cut(h[1:], "\x00")
				msg = append(msg, []byte(origin), []byte(service), []byte(strconv.Itoa(advert[h])))
			}
		}
		if err := pr.publish(msg); err == nil {
			pr.lastAdvert, pr.advertAt = advert, now
		}
	}
	s.expirePeerLeases(now)
	pr.pruneLate(now)
	dead := pr.cfg.StateEvery * time.Duration(pr.cfg.Liveness)
	for _, p := range pr.peers {
		if p.alive && !p.routable {
			s.probe(p)
			for svc := range p.spare {
				s.cloudDispatch(now, svc)
			}
		}
		if p.alive && now.Sub(p.lastHeard) > dead {
			p.alive, p.routable = false, false
			s.reportRemote()
			s.log.Warn("peer lost: its jobs go back to the queue", "peer", p.name, "silent", now.Sub(p.lastHeard).Round(time.Millisecond))
			// A peer that was only stopped or cut off may still answer.
			s.failPeerLeases(now, p.name, "peer "+p.name+" lost", true)
		}
	}
}

func (s *state) peerLeaseTimeout() time.Duration {
	if d := s.peering.cfg.LeaseTimeout; d > 0 {
		return d
	}
	return s.cfg.LeaseTimeout
}

// renewPeerLeases extends the deadline of p's jobs of each service whose
// held count (p's latest state) covers all of them. The counts name no
// job: when one is short, none of that service is renewed, and the lost
// ones expire with those sent before them.
func (s *state) renewPeerLeases(now time.Time, p *peerState) {
	pr := s.peering
	for _, cl := range pr.leases {
		if cl.peer == p.name && p.held[cl.lease.Service] >= p.reserved[cl.lease.Service] {
			cl.deadline = now.Add(s.peerLeaseTimeout())
		}
	}
}

// expirePeerLeases fails back the jobs whose peer lease ran out.
func (s *state) expirePeerLeases(now time.Time) {
	pr := s.peering
	var toks []string
	for tok, cl := range pr.leases {
		if now.After(cl.deadline) {
			toks = append(toks, tok)
		}
	}
	sort.Strings(toks)
	for _, tok := range toks {
		cl := pr.leases[tok]
		delete(pr.leases, tok)
		p := pr.peers[cl.peer]
		if p != nil {
			s.strike(now, p, cl.lease.Service)
			if p.reserved[cl.lease.Service] > 0 {
				p.reserved[cl.lease.Service]--
			}
		}
		s.c.JobsFailed++
		s.c.PeerLeasesExpired++
		s.log.Warn("peer lease expired: the job goes back to the queue", "peer", cl.peer, "service", cl.lease.Service)
		s.source.Failed(cl.lease, "peer "+cl.peer+" lease expired")
		pr.giveUp(now, tok, cl, s.peerLeaseTimeout())
		s.cloudDispatch(now, cl.lease.Service)
	}
}

// strike benches p when a lease of service ran out with p's state
// counting none of its jobs of service: a peer whose cloud link delivers
// nothing (a half-open connection the peer never reads) or that takes
// jobs and drops them would otherwise be booked for every pending ticket
// again and again, each waiting out its lease, until the tickets' attempts
// are gone while other workers could have run them. The bench, a peer
// lease timeout, doubles with each strike in a row, up to maxBenchShift.
func (s *state) strike(now time.Time, p *peerState, service string) {
	if p.held[service] > 0 || now.Before(p.benchedUntil) {
		return // one job lost among counted ones; or benched already
	}
	p.strikes++
	bench := s.peerLeaseTimeout() << min(p.strikes-1, maxBenchShift)
	p.benchedUntil = now.Add(bench)
	s.log.Warn("peer counted none of the jobs sent to it within its lease: not booked for a while, then one job at a time until it counts one",
		"peer", p.name, "service", service, "strikes", p.strikes, "bench", bench)
}

// failPeerLeases hands every job held by peer back to the Source; late
// keeps their leases for a late reply (see giveUp).
func (s *state) failPeerLeases(now time.Time, peer, reason string, late bool) {
	pr := s.peering
	var toks []string
	for tok, cl := range pr.leases {
		if cl.peer == peer {
			toks = append(toks, tok)
		}
	}
	sort.Strings(toks) // a stable order, for tests and logs
	p := pr.peers[peer]
	for _, tok := range toks {
		cl := pr.leases[tok]
		delete(pr.leases, tok)
		if p != nil && p.reserved[cl.lease.Service] > 0 {
			p.reserved[cl.lease.Service]--
		}
		s.c.JobsFailed++
		s.c.PeerLeasesLost++
		s.source.Failed(cl.lease, reason)
		if late {
			pr.giveUp(now, tok, cl, s.peerLeaseTimeout())
		}
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// PeerStats is what a broker knows of a peer.
type PeerStats struct {
	Name     string
	Cloud    string // its cloud endpoint, as configured
	State    string // its state endpoint, as configured
	Alive    bool
	Spare    map[string]int // advertised spare capacity per service
	Reserved map[string]int // jobs this broker has sent it, not answered
}

// reportRemote tells the Source of every service whose number of live
// peers serving it changed (see tellWorkers).
func (s *state) reportRemote() {
	if s.source == nil || s.peering == nil {
		return
	}
	seen := make(map[string]int)
	for _, p := range s.peering.peers {
		if p.alive {
			for svc := range p.spare {
				seen[svc]++
			}
		}
	}
	for svc := range s.peering.remote {
		if _, ok := seen[svc]; !ok {
			seen[svc] = 0
		}
	}
	for svc, n := range seen {
		if s.peering.remote[svc] == n {
			continue
		}
		if n == 0 {
			delete(s.peering.remote, svc)
		} else {
			s.peering.remote[svc] = n
		}
		s.tellWorkers(svc)
	}
}

// tellWorkers tells the Source how many workers serve a service: its own,
// plus one per live peer serving it, so that a cloud front (no workers of
// its own) does not fail its tickets for want of a worker while peers
// serve them.
func (s *state) tellWorkers(service string) {
	if s.source == nil {
		return
	}
	n := 0
	if svc := s.services[service]; svc != nil {
		n = svc.workers
	}
	if s.peering != nil {
		n += s.peering.remote[service]
	}
	s.source.Workers(service, n)
}
