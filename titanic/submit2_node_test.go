package titanic_test

import (
	"strings"
	"testing"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// titanic.submit2's answers, frame by frame: as titanic.submit's, ending
// with the key (an empty frame when none was given), refusals included.
func TestSubmit2Frames(t *testing.T) {
	_, c := lifecycleNode(t, t.TempDir())
	r := call(t, c, tsp.SvcSubmit2, "", "priority=high delay=1h", "echo", "a")
	if len(r) != 4 || string(r[0]) != "200" || len(r[1]) != 32 || string(r[2]) != "new" || len(r[3]) != 0 {
		t.Fatalf("unkeyed submit2: %q, want [200 ticket new \"\"]", r)
	}
	if again := call(t, c, tsp.SvcSubmit2, "", "priority=high delay=1h", "echo", "a"); string(again[1]) == string(r[1]) {
		t.Fatalf("two unkeyed submits got one ticket %s", r[1])
	}
	first := call(t, c, tsp.SvcSubmit2, "k1", "ttl=1h", "echo", "a")
	dup := call(t, c, tsp.SvcSubmit2, "k1", "ttl=1h", "echo", "a")
	if len(dup) != 4 || string(dup[1]) != string(first[1]) || string(dup[2]) != "duplicate" || string(dup[3]) != "k1" {
		t.Fatalf("resend: %q after %q, want the same ticket as duplicate, ending with k1", dup, first)
	}
	conflict := call(t, c, tsp.SvcSubmit2, "k1", "ttl=1h", "echo", "b")
	if len(conflict) != 3 || string(conflict[0]) != "400" || !strings.HasPrefix(string(conflict[1]), tsp.KeyConflict.Text(string(first[1]))) || string(conflict[2]) != "k1" {
		t.Fatalf("key conflict: %q", conflict)
	}
	bad := call(t, c, tsp.SvcSubmit2, "k2", "delay=1m colour=red", "echo", "a")
	if len(bad) != 3 || string(bad[0]) != "400" || !strings.Contains(string(bad[1]), `"colour"`) || string(bad[2]) != "k2" {
		t.Fatalf("unknown option: %q, want [400 text-naming-colour k2]", bad)
	}
	if r := call(t, c, tsp.SvcSubmit2, "k3", ""); len(r) != 3 || string(r[0]) != "400" || string(r[2]) != "k3" {
		t.Fatalf("submit2 without service: %q", r)
	}
	// To 9/TSP a delayed ticket is pending.
	if st := call(t, c, tsp.SvcReply, string(r[1])); string(st[0]) != "300" {
		t.Fatalf("reply of a delayed ticket: %q", st)
	}
	if rep := call(t, c, tsp.SvcRequest, "echo", "plain"); len(rep) != 2 || string(rep[0]) != "200" {
		t.Fatalf("titanic.request: %q, want [200 ticket] unchanged", rep)
	}
}
