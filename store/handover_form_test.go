package store_test

import (
	"context"
	"testing"

	"github.com/titanicmq/titanic/store"
)

// A yielding node's handover keeps the form of its first try: a redo after
// the node's cluster version was raised (it served alone in between, its
// leader the only member), a restart included, is marked as the first try
// was, so the taker knows it by the same name. Another fork point, or
// another node's, is another handover. An entry both nodes of the pair
// commit ends every handover: a split after it starts afresh.
func TestHandoverFormOfFirstTry(t *testing.T) {
	ctx := context.Background()
	s, path := newStore(t)
	form := func(s *store.BoltStore, node string, fork uint64, now, want int, what string) {
		t.Helper()
		got, err := s.HandoverForm(ctx, node, fork, now)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s: handover of %s's fork past %d at version %d is marked by version %d, want %d", what, node, fork, now, got, want)
		}
	}
	form(s, "backup", 4, store.HandoverMarkVersion, store.HandoverMarkVersion, "first try")
	form(s, "backup", 4, store.HandoverKeyVersion, store.HandoverMarkVersion, "redo after a raise")
	form(s, "backup", 5, store.HandoverKeyVersion, store.HandoverKeyVersion, "another fork point")
	form(s, "primary", 4, store.HandoverKeyVersion, store.HandoverKeyVersion, "another node")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, path)
	form(s, "backup", 4, store.HandoverKeyVersion, store.HandoverMarkVersion, "redo after a restart")

	mustApplyLog(t, s, store.Entry{Index: 9, Term: 3, Shared: true})
	form(s, "backup", 4, store.HandoverKeyVersion, store.HandoverKeyVersion, "after an entry both nodes committed")
}
