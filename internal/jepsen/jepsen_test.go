package jepsen

import (
	"sync"
	"testing"
	"time"
)

// scenarios are the suite's runs: a pair and a 3-node group under every
// kind of fault ("mixed"), and the pair under the faults that can split
// its brain ("split"). The short run (make test) injects a few faults;
// the long one (TITANIC_JEPSEN=long, make jepsen) at least 20 per
// scenario, for minutes.
func scenarios(long bool) map[string][]Scenario {
	mixed := map[Kind]int{Kill: 3, Stop: 2, LinkDown: 2, CutPeers: 2, Split: 2, Isolate: 1}
	split := map[Kind]int{CutPeers: 1, Split: 1}
	shortHold, longHold := [2]time.Duration{time.Second, 2 * time.Second}, [2]time.Duration{time.Second, 4 * time.Second}
	mk := func(name string, group bool, menu map[Kind]int, pKill float64, short int, longFaults int, longFor time.Duration) Scenario {
		sc := Scenario{Name: name, Group: group, Menu: menu, PKill: pKill, Faults: short, HoldMin: shortHold[0], HoldMax: shortHold[1],
			Recover: 20 * time.Second, GiveUp: 1}
		if long {
			sc.Faults, sc.Duration, sc.HoldMin, sc.HoldMax = longFaults, longFor, longHold[0], longHold[1]
			sc.Recover, sc.GiveUp = 30*time.Second, 2
		}
		return sc
	}
	return map[string][]Scenario{
		"pair": {
			mk("pair-mixed", false, mixed, 0.3, 3, 20, 4*time.Minute),
			mk("pair-split", false, split, 0.5, 2, 20, 0),
		},
		"group": {
			mk("group-mixed", true, mixed, 0.3, 3, 20, 4*time.Minute),
		},
	}
}

// TestJepsenPair runs a Binary Star pair under the nemesis; run one
// scenario alone with -run 'TestJepsenPair/split'.
func TestJepsenPair(t *testing.T) { runAll(t, "pair") }

// TestJepsenGroup runs a 3-node raft group under the nemesis.
func TestJepsenGroup(t *testing.T) { runAll(t, "group") }

// seed is the base seed of every scenario of this test process.
var seed = sync.OnceValues(Seed)

func runAll(t *testing.T, kind string) {
	base, err := seed()
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range scenarios(Long())[kind] {
		t.Run(sc.Name[len(kind)+1:], func(t *testing.T) { Run(t, sc, base) })
	}
}
