package replica_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
)

// TestEntriesAreByteBounded: the leader's entry builder puts calls into
// one raft entry only up to the store's MaxBatchBytes; a call larger than
// the bound goes alone; dones come in hand-over order, and each entry's
// last is marked (Done.Last).
func TestEntriesAreByteBounded(t *testing.T) {
	const bound = 10_000
	m := &member{id: "n1", addr: freeAddr(t), dir: t.TempDir()}
	st, err := store.Open(filepath.Join(m.dir, "titanic.db"), store.Options{NoSync: true, MaxBatchBytes: bound})
	if err != nil {
		t.Fatal(err)
	}
	n, err := replica.Open(st, fastConfig(m, []replica.Peer{{ID: m.id, Addr: m.addr}}))
	if err != nil {
		t.Fatal(err)
	}
	m.st, m.n = st, n
	t.Cleanup(m.close)
	leader(t, []*member{m})

	const calls, oversized = 30, 12
	sizes := make([]int, calls)
	type got struct {
		i int
		d store.Done
	}
	dones := make(chan got, calls)
	for i := range calls {
		op := submitOp("svc")
		op.Body = [][]byte{make([]byte, 4000)}
		if i == oversized {
			op.Body = [][]byte{make([]byte, 3*bound)}
		}
		sizes[i] = store.OpsSize([]store.Op{op})
		n.ApplyAsync([]store.Op{op}, func(d store.Done) { dones <- got{i, d} })
	}
	entry, entryBytes := 0, 0 // calls and bytes of the entry being read
	for want := range calls {
		var g got
		select {
		case g = <-dones:
		case <-time.After(wait):
			t.Fatalf("call %d: done never called", want)
		}
		if g.i != want {
			t.Fatalf("done of call %d came in place %d", g.i, want)
		}
		if g.d.Err != nil || len(g.d.Results) != 1 || g.d.Results[0].Err != nil {
			t.Fatalf("call %d: %+v", g.i, g.d)
		}
		if g.i == oversized && entry != 0 {
			t.Fatalf("oversized call %d shares an entry with %d calls before it", g.i, entry)
		}
		entry, entryBytes = entry+1, entryBytes+sizes[g.i]
		if entry > 1 && entryBytes > bound {
			t.Fatalf("an entry of %d calls holds %d bytes, over the bound %d", entry, entryBytes, bound)
		}
		if g.i == oversized && !g.d.Last {
			t.Fatalf("oversized call %d shares its entry with calls after it", g.i)
		}
		if g.d.Last {
			entry, entryBytes = 0, 0
		}
	}
}
