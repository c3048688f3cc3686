package main

import (
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/titanicmq/titanic/cmd/titanic/config"
	"github.com/titanicmq/titanic/store/replica"
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
	// snapshot settings (0: replica defaults)
	snapInterval  time.Duration
	snapThreshold uint64
	trailing      uint64
	pair          pairFlags
}

func (f *raftFlags) enabled() bool { return f.group || f.pair.role != "" }

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
	if f.snapInterval > 0 {
		c.SnapshotInterval = f.snapInterval
	}
	if f.snapThreshold > 0 {
		c.SnapshotThreshold = f.snapThreshold
	}
	if f.trailing > 0 {
		c.TrailingLogs = f.trailing
	}
	if f.pair.role != "" {
		f.pair.fill(c.Logger)
		c.ID, c.Bind, c.Advertise = f.pair.role, f.pair.raftBind, f.pair.raftAdvertise
		c.Peers = f.pair.peers()
		c.Bootstrap = true
		// Each node of a pair may go on alone; their solo terms are
		// fenced apart (primary odd, backup even) so that a split brain
		// always shows as a fork.
		c.FenceStride, c.FenceSlot = 2, 0
		if f.pair.role == "primary" {
			c.FenceSlot = 1
		}
		return c
	}
	c.ID, c.Bind, c.Advertise = f.nodeID, f.bind, f.advertise
	c.Peers, _ = parsePeers(f.peers)
	c.Bootstrap = len(c.Peers) > 0
	return c
}

// raftFlagsOf takes the replication settings from the configuration.
func raftFlagsOf(cfg config.Config) *raftFlags {
	listen := strings.Join(cfg.Broker.Listen, ",")
	rf := &raftFlags{
		group: cfg.Raft.Enabled, nodeID: cfg.Raft.NodeID, bind: cfg.Raft.Bind, advertise: cfg.Raft.Advertise,
		peers: strings.Join(cfg.Raft.Peers, ","), election: cfg.Raft.Timeout,
		snapInterval: cfg.Raft.SnapshotInterval, snapThreshold: uint64(cfg.Raft.SnapshotThreshold), trailing: uint64(cfg.Raft.TrailingLogs),
		pair: pairFlags{role: cfg.Pair.Role, peer: cfg.Pair.Peer, peerState: cfg.Pair.PeerState,
			peerRaft: cfg.Pair.PeerRaft, peerListen: cfg.Pair.PeerListen, stateListen: cfg.Pair.StateListen, heartbeat: cfg.Pair.Heartbeat, keepForks: cfg.Pair.KeepForks},
	}
	rf.pair.listen, rf.pair.bindFlag, rf.pair.advFlag = &listen, &rf.bind, &rf.advertise
	return rf
}
