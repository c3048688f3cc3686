package main

import (
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/titanicmq/titanic/cmd/titanic/config"
)

// The one-host pair of testdata/config (README: "Example files for a
// single node, a pair, ..."; pair-primary.toml says "Both halves run on
// this host here") must give each node its peer's client endpoint as
// pair.peer_listen: that is where a passive node asks the active one for
// its history and to be added back after a failover (titanic/ha/pair.go,
// askReadd, peerHistory). The examples set no peer_listen, and the
// default derived from peer_state (cmd/titanic/pair.go fill: the
// peer_state host on port 5555) is, for the primary, its own endpoint
// tcp://127.0.0.1:5555: after a failover the primary asks itself to be
// added, is answered "not active" for ever, and never rejoins the pair.
func TestExamplePairNodesPointPeerListenAtEachOther(t *testing.T) {
	dir := filepath.Join("..", "..", "testdata", "config")
	resolve := func(name string) (listen string, pf pairFlags) {
		cfg, err := config.Load([]string{"--config", filepath.Join(dir, name)}, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		rf := raftFlagsOf(cfg)
		rf.replicaConfig(t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
		return cfg.Broker.Listen[0], rf.pair
	}
	priListen, pri := resolve("pair-primary.toml")
	bakListen, bak := resolve("pair-backup.toml")
	if pri.peerListen != bakListen {
		t.Errorf("pair-primary.toml: the primary's peer endpoint (pair.peer_listen, where it asks to rejoin after a failover) resolves to %q, want the backup's client endpoint %q (its own is %q)",
			pri.peerListen, bakListen, priListen)
	}
	if bak.peerListen != priListen {
		t.Errorf("pair-backup.toml: the backup's peer endpoint resolves to %q, want the primary's client endpoint %q", bak.peerListen, priListen)
	}
}

// A peer client endpoint that is the node's own (given, or derived as the
// peer host on port 5555 when both nodes share a host) is refused at
// start, naming the setting: the node would ask itself to be added back
// after a failover, and never rejoin.
func TestPairPeerListenOwnEndpointRefused(t *testing.T) {
	for _, tc := range []struct {
		own, peer string
		refused   bool
	}{
		{"tcp://127.0.0.1:5555", "tcp://127.0.0.1:5555", true},
		{"tcp://*:5555", "tcp://127.0.0.1:5555", true},
		{"tcp://127.0.0.1:5555", "tcp://127.0.0.1:6555", false},
		{"tcp://10.0.0.1:5555", "tcp://10.0.0.2:5555", false},
	} {
		f := pairFlags{peerListen: tc.peer}
		err := f.checkPeerListen([]string{tc.own})
		if (err != nil) != tc.refused || err != nil && !strings.Contains(err.Error(), "pair.peer_listen") {
			t.Errorf("own %s, peer_listen %s: %v, want refused %v", tc.own, tc.peer, err, tc.refused)
		}
	}
}
