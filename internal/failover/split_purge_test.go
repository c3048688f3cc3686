package failover

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
)

// TestSplitPurgeDoesNotUndoRetry: a ticket failed before a split brain is
// purged by a client of the backup and, meanwhile, retried by a client of
// the primary; both are acknowledged (200). README (client Purge): a
// purge closes a ticket "only if it is still failed when the broker
// applies the close: a ticket retried meanwhile is left alone". After the
// merge the primary's retry must hold: the ticket pending (its service is
// paused), then answered once resumed.
//
// Found by an outside-in test of the pair: store.HandoverOps took the
// backup's purge as a close, so the handover sent an unconditional
// OpClose and the primary deleted the ticket its operator had just
// retried: "unknown ticket" after the merge, its work never done. The
// purge now goes over as one (cluster version 8, store.HandoverPurgeVersion),
// which the primary applies on its own state.
func TestSplitPurgeDoesNotUndoRetry(t *testing.T) {
	p := loadedPair(t, pairLoad{
		flags:       append([]string{"--pair-heartbeat", "200ms", "--no-worker-timeout", "300ms"}, fastFlags...),
		wholeWithin: 30 * time.Second, ctxTimeout: 3 * time.Minute,
	})
	primary, backup, ctx, dg := p.primary, p.backup, p.ctx, p.dg
	cp := splitOpsClient(t, primary.endpoint())
	tk, err := cp.Submit(ctx, "later", [][]byte{[]byte("f")}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the ticket failed (no worker within 300ms)", func() error {
		st, err := cp.Status(ctx, tk)
		if err == nil && st.State != "failed" {
			err = fmt.Errorf("state %s", st.State)
		}
		return err
	}, dg)
	eventually(t, 30*time.Second, "pause supported (cluster version)", func() error { return cp.Pause(ctx, "later") }, dg)
	waitPairHealthy(t, ctx, primary, backup, 30*time.Second)

	ca, cb := splitServing(t, p)
	if err := cb.Purge(ctx, tk); err != nil {
		t.Fatalf("purge on the backup: %v%s", err, dg())
	}
	if err := ca.Retry(ctx, tk); err != nil {
		t.Fatalf("retry on the primary: %v%s", err, dg())
	}
	primary.host.Heal(t)
	waitForkHandedOver(t, backup, 60*time.Second, "the backup yields and hands its fork over", dg)
	waitPairHealthy(t, ctx, primary, backup, 60*time.Second)

	st, err := cp.Status(ctx, tk)
	if errors.Is(err, client.ErrUnknown) {
		t.Fatalf("the ticket the primary's client retried during the split is gone after the merge (%v): the backup's purge, handed over as a close, undid the retry", err)
	}
	if err != nil || st.State != "pending" {
		t.Fatalf("the retried ticket after the merge: %+v %v, want pending", st, err)
	}
	splitWorkerOf(t, ctx, p.brokers, "later", func(_ context.Context, req [][]byte) ([][]byte, error) {
		return [][]byte{append([]byte("done:"), req[0]...)}, nil
	})
	if err := cp.Resume(ctx, "later"); err != nil {
		t.Fatal(err)
	}
	if rep, err := cp.Reply(ctx, tk, client.ReplyOptions{Wait: true}); err != nil || string(rep[0]) != "done:f" {
		t.Fatalf("the retried ticket once resumed: %q %v, want done:f%s", rep, err, dg())
	}
}
