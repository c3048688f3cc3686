package main

import (
	"context"
	"flag"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic"
	"github.com/titanicmq/titanic/titanic/ha"
)

// raftFlags are the broker's replication flags: group mode (--raft) and,
// in pair.go, pair mode (--pair).
type raftFlags struct {
	group     bool
	nodeID    string
	bind      string
	advertise string
	peers     string
	election  time.Duration
	pair      pairFlags
}

func (f *raftFlags) add(fs *flag.FlagSet) {
	fs.BoolVar(&f.group, "raft", false, "group mode: this node is a member of a raft group (3 or 5 nodes); the leader serves")
	fs.StringVar(&f.nodeID, "node-id", "", "raft node ID (group mode; pair mode uses primary and backup)")
	fs.StringVar(&f.bind, "raft-bind", "", "raft transport address host:port (default: the --listen host, port 7000)")
	fs.StringVar(&f.advertise, "raft-advertise", "", "raft address peers dial, if not --raft-bind")
	fs.StringVar(&f.peers, "peers", "", "group mode: initial voters ID=HOST:PORT,... including this node; a node with no raft state forms the group from them (omit to join later with: titanic cluster join)")
	fs.DurationVar(&f.election, "raft-timeout", time.Second, "raft heartbeat and election timeout")
	f.pair.add(fs)
}

func (f *raftFlags) enabled() bool { return f.group || f.pair.role != "" }

func (f *raftFlags) mode() string {
	switch {
	case f.group:
		return "group"
	case f.pair.role != "":
		return "pair-" + f.pair.role
	}
	return "single"
}

func (f *raftFlags) check() error {
	if f.group && f.pair.role != "" {
		return usagef("--raft and --pair are exclusive")
	}
	if f.group && f.nodeID == "" {
		return usagef("--raft needs --node-id")
	}
	if f.pair.role != "" {
		if f.peers != "" || f.nodeID != "" {
			return usagef("--peers and --node-id are for --raft; --pair uses --peer")
		}
		return f.pair.check()
	}
	if !f.enabled() && (f.peers != "" || f.nodeID != "" || f.bind != "") {
		return usagef("--node-id, --raft-bind and --peers need --raft or --pair")
	}
	if f.group && f.bind == "" {
		return usagef("--raft needs --raft-bind HOST:PORT")
	}
	_, err := parsePeers(f.peers)
	return err
}

func parsePeers(s string) ([]replica.Peer, error) {
	var out []replica.Peer
	for _, p := range splitList(s) {
		id, addr, ok := strings.Cut(p, "=")
		if !ok || id == "" || addr == "" {
			return nil, usagef("--peers: %q is not ID=HOST:PORT", p)
		}
		out = append(out, replica.Peer{ID: id, Addr: addr})
	}
	return out, nil
}

func (f *raftFlags) replicaConfig(data string, log *slog.Logger) replica.Config {
	c := replica.DefaultConfig()
	c.Dir = filepath.Join(data, "raft")
	c.Logger = log
	c.HeartbeatTimeout, c.ElectionTimeout = f.election, f.election
	c.LeaderLeaseTimeout = f.election / 2
	if f.pair.role != "" {
		f.pair.fill(c.Logger)
		c.ID, c.Bind, c.Advertise = f.pair.role, f.pair.raftBind, f.pair.raftAdvertise
		c.Peers = f.pair.peers()
		c.Bootstrap = true
		return c
	}
	c.ID, c.Bind, c.Advertise = f.nodeID, f.bind, f.advertise
	c.Peers, _ = parsePeers(f.peers)
	c.Bootstrap = len(c.Peers) > 0
	return c
}

// role returns the broker gate and the role loop of this node.
func (f *raftFlags) role(node *replica.Node, svc *titanic.Service, log *slog.Logger) (broker.Gate, func(context.Context) error, error) {
	if f.pair.role != "" {
		return f.pair.role_(node, svc, log)
	}
	g := ha.NewGroup(node, svc, log)
	return g, g.Run, nil
}
