package ha

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
)

// A ticket failed before a split brain: the backup's client purges it,
// the primary's retries it (both acknowledged). The backup yields, and at
// store.HandoverPurgeVersion hands the purge over as one: the primary
// leaves the ticket it retried alone (pending), as client.Purge promises
// ("a ticket retried meanwhile is left alone"). It went over as an
// OpClose, and the primary deleted the ticket: the retry undone. Below
// the version the purge goes over as an OpClose: a taker of an older
// build refuses an OpPurge in a merge, and with it every batch, at every
// try. The form is the first try's (store.HandoverForm), as the marks'.
func TestHandoverOfPurgeOnlyAtItsVersion(t *testing.T) {
	for _, version := range []int{store.HandoverPurgeVersion - 1, store.HandoverPurgeVersion} {
		t.Run("cluster version "+strconv.Itoa(version), func(t *testing.T) {
			dir := t.TempDir()
			log := testLogger()
			p, b, l := openMemPairLed(t, dir, log)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			announceOnLeader(t, p, b, version)
			shared, _ := submitCommon(t, p, b, 0, "shared")
			onLeader(t, "fail the shared ticket", p, b, func(n *pairNode) error {
				res, err := n.rep.Apply(ctx, []store.Op{{Kind: store.OpFail, ID: shared, Time: time.Now(), Reason: "failed before the split"}})
				if err != nil {
					return err
				}
				if res[0].Err != nil {
					// A resend after an outcome unknown finds it failed.
					if tk, gerr := n.st.Get(ctx, shared); gerr != nil || tk.State != store.StateFailed {
						return fmt.Errorf("fail: %w", res[0].Err)
					}
				}
				return nil
			})
			waitFor(t, "the failed ticket and the version on both", 10*time.Second, func() bool {
				for _, n := range []*pairNode{p, b} {
					tk, err := n.st.Get(ctx, shared)
					cv, _ := n.rep.ClusterVersion(ctx)
					if err != nil || tk.State != store.StateFailed || cv != version {
						return false
					}
				}
				return true
			})

			l.down()
			if err := b.rep.Reform(ctx); err != nil {
				t.Fatalf("backup reform: %v", err)
			}
			if res, err := b.rep.Apply(ctx, []store.Op{{Kind: store.OpPurge, ID: shared, Time: time.Now()}}); err != nil || res[0].Err != nil {
				t.Fatalf("purge on the backup: %v %v", err, res)
			}
			if err := p.rep.Reform(ctx); err != nil {
				t.Fatalf("primary reform: %v", err)
			}
			if !retryFailed(t, p, shared) {
				t.FailNow()
			}
			l.up()

			link := &recordingLink{}
			healThrough(t, dir, log, p, b, l, func(a adminLink) Requester {
				link.adminLink = a
				return link
			}, func() bool { return true })
			link.mu.Lock()
			defer link.mu.Unlock()
			var kinds []store.OpKind
			for _, rec := range link.records {
				ops, err := store.DecodeOps(rec)
				if err != nil {
					t.Fatal(err)
				}
				for _, op := range ops {
					if op.ID == shared {
						kinds = append(kinds, op.Kind)
					}
				}
			}
			want := store.OpPurge
			if version < store.HandoverPurgeVersion {
				want = store.OpClose
			}
			if len(kinds) == 0 || kinds[0] != want {
				t.Fatalf("at cluster version %d the backup's purge went over as %v, want %s", version, kinds, want)
			}
			if version >= store.HandoverPurgeVersion {
				wantRetryKept(t, p, shared, "purged on the backup and retried on the primary during the split (both acknowledged): the handover undid the retry")
			}
		})
	}
}
