package store_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/titanicmq/titanic/store"
)

// A purge made on the side that yields (close only if still failed, see
// OpPurge) goes over as a purge at store.HandoverPurgeVersion: the taker
// applies it on its own state, so a ticket its client retried during the
// split is left alone (ErrNotFailed, no failure of the batch) and one
// still failed there is closed. HandoverOps handed it over as an OpClose
// (its journal took OpPurge as OpClose), and the taker deleted the
// retried ticket: an acknowledged retry undone. Below the version the
// yielding node sends the OpClose a taker of an older build takes
// (Op.PurgeAsClose; that build's Merge refuses an OpPurge, and the whole
// batch with it).
func TestHandoverCarriesPurge(t *testing.T) {
	for _, form := range []int{store.HandoverKeyVersion, store.HandoverPurgeVersion} {
		t.Run("form "+strconv.Itoa(form), func(t *testing.T) {
			ctx := context.Background()
			y, _ := newStore(t)
			taker, _ := newStore(t)
			retried, failed := store.NewID(), store.NewID()
			// Both failed before the split, on both sides.
			before := []store.Op{submit(retried, "s"), submit(failed, "s"),
				{Kind: store.OpFail, ID: retried, Time: at(1), Reason: "failed before the split"},
				{Kind: store.OpFail, ID: failed, Time: at(1), Reason: "failed before the split"}}
			mustApplyLog(t, y, store.Entry{Index: 1, Term: 2, Shared: true, Ops: before})
			mustApply(t, taker, before...)
			// The yielder's client purges both; the taker's retries one.
			mustApplyLog(t, y, store.Entry{Index: 2, Term: 3, Solo: true, Ops: []store.Op{{Kind: store.OpPurge, ID: retried, Time: at(2)}}},
				store.Entry{Index: 3, Term: 3, Solo: true, Ops: []store.Op{{Kind: store.OpPurge, ID: failed, Time: at(3)}}})
			mustApply(t, taker, store.Op{Kind: store.OpRetry, ID: retried, Time: at(4)})

			name := store.HandoverName("backup", 1)
			var kinds []string
			err := y.HandoverOps(ctx, 1, 1<<20, func(ops []store.Op, keys []store.HandoverKey) error {
				if form < store.HandoverPurgeVersion {
					for i := range ops {
						ops[i] = ops[i].PurgeAsClose()
					}
				}
				batch := append([]store.Op{store.HandoverKeyedMark(name, keys)}, ops...)
				res, err := taker.Apply(ctx, batch)
				if err != nil {
					return err
				}
				for i, op := range ops {
					kinds = append(kinds, op.Kind.String())
					switch r := res[i+1]; {
					case op.Kind == store.OpPurge && op.ID == retried && !errors.Is(r.Err, store.ErrNotFailed):
						t.Errorf("the purge of the ticket the taker retried: %v, want ErrNotFailed", r.Err)
					case r.Err != nil && !errors.Is(r.Err, store.ErrNotFailed):
						t.Errorf("%s %s: %v", op.Kind, op.ID, r.Err)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			want := "close, close"
			if form >= store.HandoverPurgeVersion {
				want = "purge, purge"
			}
			if got := strings.Join(kinds, ", "); got != want {
				t.Fatalf("the handover of two purges at form %d: %s, want %s", form, got, want)
			}
			if _, err := taker.Get(ctx, failed); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("the ticket purged on the yielder and still failed on the taker: %v, want closed", err)
			}
			tk, err := taker.Get(ctx, retried)
			switch {
			case form < store.HandoverPurgeVersion:
				// A close, as an older taker takes it: the retry goes.
				if !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("below the purge's version the purge goes over as a close: the ticket %v (%v), want closed", tk.State, err)
				}
			case err != nil || tk.State != store.StatePending:
				t.Fatalf("the ticket the taker's client retried during the split: %v (%v) after the handover of the yielder's purge, want pending", tk.State, err)
			}
		})
	}
}
