package main

import (
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic/ha"
)

// Default ports of pair mode, beside the client port (5555).
const (
	defaultClientPort = "5555"
	defaultStatePort  = "5556"
	defaultRaftPort   = "7000"
)

// pairFlags are the flags of pair mode (--pair primary|backup).
type pairFlags struct {
	role          string
	peer          string // peer host
	peerState     string // peer Binary Star PUB endpoint
	peerRaft      string // peer raft address
	peerListen    string // peer client endpoint (split-brain handover)
	stateListen   string
	heartbeat     time.Duration
	keepForks     int
	raftBind      string
	raftAdvertise string
	listen        *string // the broker's --listen, for default hosts
	bindFlag      *string // the shared --raft-bind
	advFlag       *string // the shared --raft-advertise
	curve         *binarystar.CurveConfig
}

func (f *pairFlags) check() error {
	if f.role != "primary" && f.role != "backup" {
		return usagef("--pair %q: want primary or backup", f.role)
	}
	if f.peer == "" && (f.peerState == "" || f.peerRaft == "") {
		return usagef("--pair needs --peer HOST (or --peer-state and --peer-raft)")
	}
	// The ports each node takes, given or derived, must differ from the
	// peer's: a pair on one host (--peer 127.0.0.1) needs each node's
	// own. Said now, naming the flags, not by raft ("found duplicate
	// address in configuration") or Binary Star after the raft directory
	// was made.
	c := *f
	c.fill(nil)
	own := c.raftBind
	if c.raftAdvertise != "" {
		own = c.raftAdvertise
	}
	if sameHostPort(own, c.peerRaft) {
		return usagef("raft address %s is also the peer's (--peer-raft %s): on one host each node needs its own raft port: give --raft-bind HOST:PORT to each, and each the other's as --peer-raft", own, c.peerRaft)
	}
	if sameHostPort(strings.TrimPrefix(c.stateListen, "tcp://"), strings.TrimPrefix(c.peerState, "tcp://")) {
		return usagef("Binary Star state endpoint %s is also the peer's (--peer-state %s): on one host each node needs its own state port: give --state-listen tcp://HOST:PORT to each, and each the other's as --peer-state", c.stateListen, c.peerState)
	}
	return nil
}

// sameHostPort reports whether two HOST:PORT addresses are one: the same
// port, and the same host, or two loopback hosts, or an unspecified host
// (every interface) and a loopback one.
func sameHostPort(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb {
		return false
	}
	local := func(h string) bool { return isLoopback(h) || h == "" || h == "*" || h == "0.0.0.0" || h == "::" }
	return ha == hb || local(ha) && local(hb) && (isLoopback(ha) || isLoopback(hb))
}

func (f *pairFlags) peerRole() string {
	if f.role == "primary" {
		return "backup"
	}
	return "primary"
}

// fill derives the endpoints not given from --listen and --peer.
func (f *pairFlags) fill(_ *slog.Logger) {
	host := "127.0.0.1"
	if f.listen != nil {
		if u, err := url.Parse(strings.Split(*f.listen, ",")[0]); err == nil && u.Hostname() != "" && u.Hostname() != "*" {
			host = u.Hostname()
		}
	}
	if f.stateListen == "" {
		f.stateListen = "tcp://" + net.JoinHostPort(host, defaultStatePort)
	}
	if f.bindFlag != nil && *f.bindFlag != "" {
		f.raftBind = *f.bindFlag
	}
	if f.raftBind == "" {
		f.raftBind = net.JoinHostPort(host, defaultRaftPort)
	}
	if f.advFlag != nil && *f.advFlag != "" {
		f.raftAdvertise = *f.advFlag
	}
	if f.peerState == "" {
		f.peerState = "tcp://" + net.JoinHostPort(f.peer, defaultStatePort)
	}
	if f.peerRaft == "" {
		f.peerRaft = net.JoinHostPort(f.peer, defaultRaftPort)
	}
	if f.peerListen == "" {
		peerHost := f.peer
		if u, err := url.Parse(f.peerState); peerHost == "" && err == nil {
			peerHost = u.Hostname()
		}
		if peerHost != "" {
			f.peerListen = "tcp://" + net.JoinHostPort(peerHost, defaultClientPort)
		}
	}
}

// checkPeerListen refuses a peer client endpoint (given, or derived by
// fill) that is one of this node's own: a node asks its peer there to be
// added back after a failover, and asking itself it is answered "not
// active" for ever and never rejoins (two nodes on one host with the
// default port did just that).
func (f *pairFlags) checkPeerListen(own []string) error {
	peer, err := url.Parse(f.peerListen)
	if err != nil || f.peerListen == "" {
		return nil // validated with the config
	}
	for _, ep := range own {
		u, err := url.Parse(ep)
		if err != nil || u.Port() != peer.Port() {
			continue
		}
		if h := u.Hostname(); h == peer.Hostname() || (h == "*" || h == "0.0.0.0") && isLoopback(peer.Hostname()) {
			return usagef("pair.peer_listen (--peer-listen) %s is this node's own endpoint (broker.listen %s): set it to the peer's client endpoint, where the peer's broker listens", f.peerListen, ep)
		}
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (f *pairFlags) peers() []replica.Peer {
	self := f.raftAdvertise
	if self == "" {
		self = f.raftBind
	}
	return []replica.Peer{{ID: f.role, Addr: self}, {ID: f.peerRole(), Addr: f.peerRaft}}
}

// pairConfig is the node's pair role (node.Config.Pair fills PeerTag,
// ForkDir and Logger).
func (f *pairFlags) pairConfig() ha.PairConfig {
	role := binarystar.Primary
	if f.role == "backup" {
		role = binarystar.Backup
	}
	pc := ha.PairConfig{
		Star:         binarystar.Config{Role: role, Local: f.stateListen, Peer: f.peerState, Heartbeat: f.heartbeat, Curve: f.curve},
		PeerID:       f.peerRole(),
		PeerAddr:     f.peerRaft,
		PeerEndpoint: f.peerListen,
		KeepForks:    f.keepForks,
	}
	if f.curve != nil {
		pc.PeerCurve = &client.CurveClient{ServerPublic: f.curve.PeerPublic, Public: f.curve.Public, Secret: f.curve.Secret}
	}
	return pc
}
