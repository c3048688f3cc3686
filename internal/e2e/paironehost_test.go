package e2e

import (
	"strings"
	"testing"

	"github.com/titanicmq/titanic/internal/harness"
)

// TestFirstHourPairOnOneHostSaysWhichFlags: README shows a pair only on two
// hosts. A new user trying it on one machine changes the hosts to
// 127.0.0.1 and gives each node its own --listen port, as every other
// example does:
//
//	titanic broker --data pa --listen tcp://127.0.0.1:5701 --pair primary --peer 127.0.0.1
//
// Both nodes then default to raft on 127.0.0.1:7000 and Binary Star state
// on tcp://127.0.0.1:5556. The broker stops with hashicorp/raft's own
// words, "bootstrap raft: found duplicate address in configuration:
// 127.0.0.1:7000" (exit 1, after creating DIR/raft), which names no flag;
// with the raft ports given, "binary star: binarystar: invalid
// configuration: local and peer endpoints are both tcp://127.0.0.1:5556",
// again after bootstrapping raft. TITANIC_PARSE_ONLY=1 says "command line
// ok" to both. Either is a configuration mistake found before anything
// runs: exit 2, naming the flags that set each node's own ports.
func TestFirstHourPairOnOneHostSaysWhichFlags(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	cases := []struct {
		name  string
		args  []string
		flags []string // the message names at least one of these
	}{
		{"raft ports", []string{"--peer", "127.0.0.1"}, []string{"--raft-bind", "--peer-raft"}},
		{"state ports", []string{"--peer", "127.0.0.1", "--raft-bind", harness.FreeAddr(t), "--peer-raft", harness.FreeAddr(t)},
			[]string{"--state-listen", "--peer-state"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"--data", t.TempDir(), "--listen", ep, "--http-listen", "", "--pair", "primary"}, c.args...)
			parse, pcode := runBroker(t, []string{"TITANIC_PARSE_ONLY=1"}, args...)
			stderr, code := runBroker(t, nil, args...)
			named := false
			for _, f := range c.flags {
				named = named || strings.Contains(stderr, f)
			}
			if code != 2 || !named {
				t.Errorf("titanic broker %s: exit %d, want 2 naming %s; stderr:\n%s", strings.Join(args, " "), code, strings.Join(c.flags, " or "), lastLines(stderr, 3))
			}
			if pcode != 2 {
				t.Errorf("with TITANIC_PARSE_ONLY=1: exit %d, want 2: %s", pcode, strings.TrimSpace(parse))
			}
		})
	}
}
