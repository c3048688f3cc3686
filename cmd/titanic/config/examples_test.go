package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// exampleDir holds the example configurations of the repository.
var exampleDir = filepath.Join("..", "..", "..", "testdata", "config")

func loadExample(t *testing.T, name string) Config {
	t.Helper()
	c, err := Load([]string{"--config", filepath.Join(exampleDir, name)}, nil, newFS())
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return c
}

// Every example loads and validates, and is in the mode its name says.
func TestExamples(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(exampleDir, "*.toml"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"single.toml": "single", "pair-primary.toml": "pair-primary", "pair-backup.toml": "pair-backup",
		"group-n1.toml": "group", "group-n2.toml": "group", "group-n3.toml": "group",
		"peered-a.toml": "single", "peered-b.toml": "single", "peered-c.toml": "single",
	}
	seen := map[string]bool{}
	for _, p := range paths {
		name := filepath.Base(p)
		seen[name] = true
		c := loadExample(t, name)
		if mode, ok := want[name]; ok && c.Mode() != mode {
			t.Errorf("%s: mode %s, want %s", name, c.Mode(), mode)
		}
		// Comments aside, the example changes something (else it adds nothing).
		if reflect.DeepEqual(c, Default()) {
			t.Errorf("%s: same as the defaults", name)
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("example %s is missing", name)
		}
	}
}

// The examples of one deployment agree with each other and can all run on
// one host at once.
func TestExamplesAgree(t *testing.T) {
	pri, bak := loadExample(t, "pair-primary.toml"), loadExample(t, "pair-backup.toml")
	if pri.Pair.PeerState != bak.Pair.StateListen || bak.Pair.PeerState != pri.Pair.StateListen ||
		pri.Pair.PeerRaft != bak.Raft.Bind || bak.Pair.PeerRaft != pri.Raft.Bind || pri.Pair.Heartbeat != bak.Pair.Heartbeat {
		t.Errorf("the pair's halves disagree:\n%+v %+v\n%+v %+v", pri.Pair, pri.Raft, bak.Pair, bak.Raft)
	}
	noClash(t, pri, bak)

	var group []Config
	for _, n := range []string{"n1", "n2", "n3"} {
		c := loadExample(t, "group-"+n+".toml")
		if c.Raft.NodeID != n || !contains(c.Raft.Peers, n+"="+c.Raft.Bind) {
			t.Errorf("group-%s: node %q bind %q not in peers %q", n, c.Raft.NodeID, c.Raft.Bind, c.Raft.Peers)
		}
		if len(group) > 0 && !reflect.DeepEqual(c.Raft.Peers, group[0].Raft.Peers) {
			t.Errorf("group-%s: peers %q differ from n1's %q", n, c.Raft.Peers, group[0].Raft.Peers)
		}
		group = append(group, c)
	}
	noClash(t, group...)

	byName := map[string]Config{}
	var peered []Config
	for _, n := range []string{"a", "b", "c"} {
		c := loadExample(t, "peered-"+n+".toml")
		if c.Peering.Name != n {
			t.Errorf("peered-%s: name %q", n, c.Peering.Name)
		}
		byName[n] = c
		peered = append(peered, c)
	}
	for n, c := range byName {
		if len(c.Peering.Peers) != len(byName)-1 {
			t.Errorf("peered-%s: %d peers", n, len(c.Peering.Peers))
		}
		for _, p := range c.Peering.Peers {
			o, ok := byName[p.Name]
			if !ok || p.Cloud != o.Peering.CloudListen || p.State != o.Peering.StateListen {
				t.Errorf("peered-%s: peer %+v does not match %s's listeners", n, p, p.Name)
			}
		}
	}
	noClash(t, peered...)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// noClash checks that the nodes' TCP ports and data directories differ.
func noClash(t *testing.T, cs ...Config) {
	t.Helper()
	seen := map[string]int{}
	for i, c := range cs {
		addrs := []string{c.HTTP.Listen, c.Raft.Bind, c.Pair.StateListen, c.Peering.CloudListen, c.Peering.StateListen, c.Notify.Listen, "dir " + c.Store.Dir}
		addrs = append(addrs, c.Broker.Listen...)
		for _, a := range addrs {
			a = strings.TrimPrefix(a, "tcp://")
			if a == "" {
				continue
			}
			if j, dup := seen[a]; dup && j != i {
				t.Errorf("nodes %d and %d both use %s", j, i, a)
			}
			seen[a] = i
		}
	}
}

// The example directory holds only TOML files this test loads.
func TestExampleDirOnlyTOML(t *testing.T) {
	ents, err := os.ReadDir(exampleDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".toml") {
			t.Errorf("%s: not a .toml example", e.Name())
		}
	}
}
