package replica_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestPlaceholderReplacedAtOpen: a node that stopped right after it
// reformed alone, before its placeholder snapshot was replaced by a real
// one, replaces it when it opens; a member that needs a snapshot then
// catches up from it. Raft never restores a placeholder, so without the
// replacement the member waits for ever (a pair whose leader is in that
// state had nobody serving: seen in the simulation under load).
func TestPlaceholderReplacedAtOpen(t *testing.T) {
	ms, _ := cluster(t, 2)
	ids := applySome(t, ms, 10)
	alive, dead := ms[0], ms[1]
	if dead.n.IsLeader() {
		alive, dead = dead, alive
	}
	dead.close()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := alive.n.Reform(ctx); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, applySome(t, []*member{alive}, 3)...)
	alive.close()
	// As if it had stopped before snapshotSoon: only the placeholder is
	// left among the snapshots the reform's index or later.
	snaps := filepath.Join(alive.dir, "raft", "snapshots")
	entries, err := os.ReadDir(snaps)
	if err != nil {
		t.Fatal(err)
	}
	placeholders := 0
	for _, e := range entries {
		state, err := os.ReadFile(filepath.Join(snaps, e.Name(), "state.bin"))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.HasPrefix(state, []byte("titanic placeholder snapshot")) {
			placeholders++
			continue
		}
		if err := os.RemoveAll(filepath.Join(snaps, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if placeholders != 1 {
		t.Fatalf("%d placeholder snapshots after the reform, want 1", placeholders)
	}
	alive.open(t, nil)
	leader(t, []*member{alive})
	// A new, empty member: the reform compacted the log, so it needs a
	// snapshot.
	fresh := &member{id: "n3", addr: freeAddr(t), dir: t.TempDir()}
	fresh.open(t, nil)
	defer fresh.close()
	if err := alive.n.AddVoter(ctx, fresh.id, fresh.addr); err != nil {
		t.Fatal(err)
	}
	hasAll(t, fresh, ids)
}

// TestReformReadsNoSnapshot: a reform restores no snapshot the store is
// not behind, and must not read one either: the snapshot store's Open
// reads the whole file (a copy of the store) to check its CRC, which made
// a pair's failover grow with its backlog. The probe: the survivor's real
// snapshots are damaged (a byte flipped, the size kept), which an Open
// reports as a CRC mismatch and RecoverCluster as no restorable snapshot;
// the reform must not notice, and the store keeps every ticket.
func TestReformReadsNoSnapshot(t *testing.T) {
	ms, _ := cluster(t, 2)
	ids := applySome(t, ms, 40)
	alive, dead := ms[0], ms[1]
	if dead.n.IsLeader() {
		alive, dead = dead, alive
	}
	hasAll(t, alive, ids)
	snaps := filepath.Join(alive.dir, "raft", "snapshots")
	var states []string
	deadline := time.Now().Add(wait)
	for len(states) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the survivor took no snapshot")
		}
		time.Sleep(20 * time.Millisecond)
		states, _ = filepath.Glob(filepath.Join(snaps, "*", "state.bin"))
		states = slices.DeleteFunc(states, func(p string) bool { return strings.Contains(p, ".tmp") })
	}
	dead.close()
	for _, p := range states {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := alive.n.Reform(ctx); err != nil {
		t.Fatalf("reform read a snapshot it does not restore: %v", err)
	}
	hasAll(t, alive, applySome(t, []*member{alive}, 3))
	hasAll(t, alive, ids)
}
