package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// dumpDB returns every key of every bucket (nested ones included) as
// "bucket/key" → value.
func dumpDB(t *testing.T, s *BoltStore) map[string]string {
	t.Helper()
	out := map[string]string{}
	var walk func(prefix string, b *bolt.Bucket) error
	walk = func(prefix string, b *bolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			if v == nil {
				return walk(prefix+string(k)+"/", b.Bucket(k))
			}
			out[prefix+string(k)] = string(v)
			return nil
		})
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walk(string(name)+"/", b) })
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ResetReplication removes exactly the replication bookkeeping (applied
// index, epochs, a first-release store's entry terms, the solo journal,
// the handovers, the cluster version) and not one byte of anything else;
// the store then applies a new log from index 1.
func TestResetReplicationClearsOnlyBookkeeping(t *testing.T) {
	ctx := context.Background()
	s, err := Open(filepath.Join(t.TempDir(), "t.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ids := make([]ID, 6)
	for i := range ids {
		ids[i] = NewID()
	}
	sub := func(i int, key string) Op {
		return Op{Kind: OpSubmit, ID: ids[i], Time: t0, Service: "svc", Body: [][]byte{fmt.Appendf(nil, "body %d", i)}, IdemKey: key}
	}
	entries := []Entry{
		{Index: 3, Term: 2, Ops: []Op{sub(0, "k0"), sub(1, ""), sub(2, "k2")}, Shared: true},
		{Index: 4, Term: 2, Ops: []Op{{Kind: OpDispatch, ID: ids[0], Time: t0}, {Kind: OpReply, ID: ids[1], Time: t0, Reply: [][]byte{[]byte("r1")}}}},
		{Index: 6, Term: 3, Solo: true, Ops: []Op{sub(3, "k3"), {Kind: OpFail, ID: ids[2], Time: t0, Reason: "no"}}},
		{Index: 7, Term: 3, Solo: true, Ops: []Op{sub(4, ""), {Kind: OpClose, ID: ids[1], Time: t0}}, ClusterVersion: 6},
		{Index: 8, Term: 3, Solo: true, Ops: []Op{HandoverMark(NewID(), 0, 1), {Kind: OpFail, ID: ids[0], Time: t0, Reason: "peer"}}},
	}
	for i, r := range s.ApplyLog(ctx, entries) {
		if r.Err != nil {
			t.Fatalf("entry %d: %v", i, r.Err)
		}
	}
	// What a first-release store kept (only in stores never applied to
	// since; planted here beside the epochs to check both go).
	err = s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(metaBucket)
		for i := uint64(1); i <= 2; i++ {
			if err := meta.Put(binary.BigEndian.AppendUint64(bytes.Clone(oldTermPrefix), i), binary.AppendUvarint(nil, 1)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The form of a handover this node made, yielding.
	if _, err := s.HandoverForm(ctx, "n1", 4, HandoverKeyVersion); err != nil {
		t.Fatal(err)
	}

	before := dumpDB(t, s)
	want := maps.Clone(before)
	var gone []string
	for k := range before {
		if strings.HasPrefix(k, "epochs/") || strings.HasPrefix(k, "solo/") || strings.HasPrefix(k, "soloTaken/") ||
			k == "meta/applied" || k == "meta/cluster" || strings.HasPrefix(k, "meta/term/") || strings.HasPrefix(k, "handovers/") ||
			strings.HasPrefix(k, "handover-forms/") {
			delete(want, k)
			gone = append(gone, k)
		}
	}
	for _, prefix := range []string{"epochs/", "solo/", "soloTaken/", "meta/applied", "meta/cluster", "meta/term/", "handovers/", "handover-forms/"} {
		if !strings.Contains(strings.Join(gone, " "), prefix) {
			t.Fatalf("test store holds no %s record: %v", prefix, gone)
		}
	}

	r, err := s.ResetReplication(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Applied != 8 || r.Epochs != 2 || r.OldTerms != 2 || r.Journal == 0 || r.ClusterVersion != 6 || r.Handovers != 1 {
		t.Fatalf("reset reports %+v, want applied 8, 2 epochs, 2 old terms, a journal, cluster version 6, a handover", r)
	}
	// The new cluster's members may run an older release than the old
	// one's: it starts from the first release's version and raises its
	// own (a restore into an older pair kept 5 while both read 4).
	if v, err := s.ClusterVersion(ctx); err != nil || v != 1 {
		t.Fatalf("cluster version after reset = %d %v, want 1", v, err)
	}
	after := dumpDB(t, s)
	if !maps.Equal(after, want) {
		for k, v := range after {
			if want[k] != v {
				t.Errorf("after reset %q = %q, want %q", k, v, want[k])
			}
		}
		for k := range want {
			if _, ok := after[k]; !ok {
				t.Errorf("after reset %q is missing", k)
			}
		}
		t.Fatal("reset changed more than the replication bookkeeping")
	}
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if h, err := s.History(ctx); err != nil || h.Applied != 0 || len(h.Epochs) != 0 {
		t.Fatalf("history after reset: %+v %v", h, err)
	}
	// A new cluster's log: index 1, term 1, is applied, not skipped.
	res := s.ApplyLog(ctx, []Entry{{Index: 1, Term: 1, Ops: []Op{sub(5, "k5")}}})
	if res[0].Err != nil || len(res[0].Results) != 1 || res[0].Results[0].Err != nil {
		t.Fatalf("first entry of a new log: %+v", res[0])
	}
	if h, _ := s.History(ctx); h.Applied != 1 || len(h.Epochs) != 1 || h.Epochs[0] != (Epoch{Term: 1, Start: 1}) {
		t.Fatalf("history of the new log: %+v", h)
	}
	var handed []Op
	if err := s.ForkOps(ctx, 0, 1<<20, func(ops []Op) error { handed = append(handed, ops...); return nil }); err != nil || len(handed) != 0 {
		t.Fatalf("the old solo journal still hands over %d ops (%v)", len(handed), err)
	}
	if r, err := s.ResetReplication(ctx); err != nil || r != (Replication{Applied: 1, Epochs: 1}) {
		t.Fatalf("second reset: %+v %v", r, err)
	}
	if r, err := s.ResetReplication(ctx); err != nil || !r.IsZero() {
		t.Fatalf("reset of a reset store: %+v %v", r, err)
	}
}
