package e2e

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestFirstHourPairLogsReadRight: what a new user reads in the logs of a
// pair on one machine (default timings) while it starts and fails over,
// the active killed:
//
//   - every raft configuration line prints a format verb it never filled:
//     servers="[%+v [{Suffrage:Voter ID:primary ...}]]" (hashicorp/raft
//     logs through hclog with a printf-style message the adapter does not
//     format);
//   - the survivor, taking over as it should, logs level=ERROR
//     msg="failed to take snapshot" error="nothing new to snapshot": an
//     ERROR in a failover that went right, which alerting on ERROR lines
//     would page someone for.
func TestFirstHourPairLogsReadRight(t *testing.T) {
	nodes, brokers := pairOnOneHost(t)
	if _, code := cli(t, "", "submit", "--broker", brokers, "upper", "one"); code != 0 {
		t.Fatalf("submit: exit %d", code)
	}
	active, survivor := activeOf(t, nodes, brokers)
	active.p.Kill()
	if _, code := cli(t, "", "submit", "--broker", brokers, "--retries", "10", "upper", "two"); code != 0 {
		t.Fatalf("submit after the kill: exit %d", code)
	}
	time.Sleep(2 * time.Second) // the survivor's first snapshot
	for _, n := range nodes {
		data, err := os.ReadFile(n.p.Log)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(data), "\n") {
			if strings.Contains(l, "%+v") || strings.Contains(l, "%!") {
				t.Errorf("%s logs an unformatted verb: %s", n.name, l)
				break
			}
		}
		if n != survivor {
			continue
		}
		for _, l := range strings.Split(string(data), "\n") {
			if strings.Contains(l, "level=ERROR") {
				t.Errorf("%s, taking over from a killed active, logs an ERROR: %s", n.name, l)
			}
		}
	}
}
