package broker

import (
	"bytes"
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
//	state    ["TPEER01" | "STATE" | name | service | spare | service | spare ...]
//	request  ["" | "TPEER01" | "REQUEST" | token | service | body...]   origin → peer
//	reply    ["" | "TPEER01" | "REPLY" | token | body...]               peer → origin
//	fail     ["" | "TPEER01" | "FAIL" | token | reason]                 peer → origin
//
// A broker publishes its spare capacity per service (idle workers less
// queued plain requests) when it changes and every PeerStateEvery. Durable
// work goes to local workers first; when a service has no idle local
// worker, the origin takes jobs from its Source for the peer advertising
// the most spare capacity, reserving one unit per job until its reply,
// failure or the peer's death, so that it never books more than was
// advertised ("busy stays busy" cannot happen). The job stays unfinished
// in the origin's store until the reply is back; a peer silent for
// PeerLiveness × PeerStateEvery is dead, and its jobs fail back to the
// Source, which redelivers them. A request that came from a peer is
// served by local workers only, never forwarded again: loops cannot form.

const peerHeader = "TPEER01"

// Peer is another cluster's broker.
type Peer struct {
	Name  string // its peering name (the routing id of its cloud sockets)
	Cloud string // its cloud frontend endpoint
	State string // its state publisher endpoint
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
}

// peerState is what a broker knows of one peer.
type peerState struct {
	name      string
	spare     map[string]int // advertised
	reserved  map[string]int // jobs sent, not yet answered
	lastHeard time.Time
	alive     bool
	// routable: the cloud backend has a connection to the peer (a PING
	// went through). A state message can arrive before the cloud
	// connection is made; jobs are sent only once it is.
	routable bool
}

// cloudLease is a durable job held by a peer.
type cloudLease struct {
	peer  string
	lease Lease
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
	cfg        PeeringConfig
	peers      map[string]*peerState
	leases     map[string]*cloudLease // by token (the lease ID in decimal)
	sendPeer   sendFunc               // cloud backend: to a peer by name
	sendOrigin sendFunc               // cloud frontend: to an origin by name
	publish    func(frames [][]byte) error
	lastAdvert map[string]int
	advertAt   time.Time
}

func newPeering(cfg PeeringConfig) *peering {
	p := &peering{cfg: cfg, peers: make(map[string]*peerState), leases: make(map[string]*cloudLease)}
	for _, pc := range cfg.Peers {
		p.peers[pc.Name] = &peerState{name: pc.Name, spare: map[string]int{}, reserved: map[string]int{}}
	}
	return p
}

// peerStateMsg handles a state message from a peer's publisher.
func (s *state) peerStateMsg(now time.Time, frames [][]byte) {
	if s.peering == nil || len(frames) < 3 || string(frames[0]) != peerHeader || string(frames[1]) != "STATE" || len(frames)%2 != 1 {
		s.c.Malformed++
		return
	}
	p := s.peering.peers[string(frames[2])]
	if p == nil {
		s.c.Malformed++ // not a configured peer
		return
	}
	spare := make(map[string]int, (len(frames)-3)/2)
	for i := 3; i+1 < len(frames); i += 2 {
		n, err := strconv.Atoi(string(frames[i+1]))
		if err != nil || n < 0 || len(frames[i]) == 0 {
			s.c.Malformed++
			return
		}
		spare[string(frames[i])] = n
	}
	if !p.alive {
		s.log.Info("peer up", "peer", p.name)
	}
	p.alive, p.lastHeard, p.spare = true, now, spare
	s.probe(p)
	for svc, n := range spare {
		if n > p.reserved[svc] {
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
			if p.alive && p.routable && p.spare[service]-p.reserved[service] > 0 &&
				(best == nil || p.spare[service]-p.reserved[service] > best.spare[service]-best.reserved[service]) {
				best = p
			}
		}
		if best == nil {
			return
		}
		job, ok := s.source.Next(service)
		if !ok {
			return
		}
		s.nextLease++
		lease := Lease{ID: s.nextLease, Service: service, Token: job.Token}
		token := strconv.FormatUint(lease.ID, 10)
		msg := append([][]byte{{}, []byte(peerHeader), []byte("REQUEST"), []byte(token), []byte(service)}, nonEmpty(job.Body)...)
		if err := pr.sendPeer(best.name, msg); err != nil {
			s.count(err)
			s.c.JobsFailed++
			s.source.Failed(lease, "forward to peer "+best.name+": "+err.Error())
			// The peer cannot be reached right now: stop booking it
			// until a PING goes through again.
			best.routable = false
			continue
		}
		best.reserved[service]++
		pr.leases[token] = &cloudLease{peer: best.name, lease: lease}
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
	token := string(frames[3])
	cl := pr.leases[token]
	if cl == nil || cl.peer != from {
		s.c.StaleReplies++
		return
	}
	delete(pr.leases, token)
	if p := pr.peers[cl.peer]; p != nil && p.reserved[cl.lease.Service] > 0 {
		p.reserved[cl.lease.Service]--
	}
	switch string(frames[2]) {
	case "REPLY":
		s.c.JobsCompleted++
		s.source.Completed(cl.lease, frames[4:])
	case "FAIL":
		reason := "peer " + from
		if len(frames) > 4 {
			reason += ": " + string(bytes.TrimSpace(frames[4]))
		}
		s.c.JobsFailed++
		s.source.Failed(cl.lease, reason)
	default:
		s.c.Malformed++
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
	if s.peering == nil || len(frames) < 6 || len(frames[0]) != 0 || string(frames[1]) != peerHeader ||
		string(frames[2]) != "REQUEST" || len(frames[4]) == 0 || len(frames[4]) > 255 {
		s.c.Malformed++
		return
	}
	if _, known := s.peering.peers[origin]; !known {
		s.c.Malformed++
		return
	}
	s.c.CloudRequests++
	route := cloudRoute(origin, string(frames[3]))
	s.enqueueRoute(now, route, string(frames[4]), frames[5:])
}

// answerOrigin sends a worker's reply (or a failure) for a request that
// came from a peer.
func (s *state) answerOrigin(route string, ok bool, body [][]byte) {
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
	if !mapsEqual(advert, pr.lastAdvert) || now.Sub(pr.advertAt) >= pr.cfg.StateEvery {
		names := make([]string, 0, len(advert))
		for n := range advert {
			names = append(names, n)
		}
		sort.Strings(names)
		msg := [][]byte{[]byte(peerHeader), []byte("STATE"), []byte(pr.cfg.Name)}
		for _, n := range names {
			msg = append(msg, []byte(n), []byte(strconv.Itoa(advert[n])))
		}
		if err := pr.publish(msg); err == nil {
			pr.lastAdvert, pr.advertAt = advert, now
		}
	}
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
			s.log.Warn("peer lost: its jobs go back to the queue", "peer", p.name, "silent", now.Sub(p.lastHeard).Round(time.Millisecond))
			s.failPeerLeases(p.name, "peer "+p.name+" lost")
		}
	}
}

// failPeerLeases hands every job held by peer back to the Source.
func (s *state) failPeerLeases(peer, reason string) {
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
	Alive    bool
	Spare    map[string]int // advertised spare capacity per service
	Reserved map[string]int // jobs this broker has sent it, not answered
}
