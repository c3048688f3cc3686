package failover

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
)

// A split brain's merge keeps the service counts right: found by an
// outside-in test of the job lifecycle.

// README (stats): IN-FLIGHT is "given to a worker, reply not recorded
// yet"; pending and in flight "come from the dispatcher's queues in
// memory ... after a restart or a failover they are the store's again".
// Tickets of a paused service (whose queue the primary holds) that the
// backup took in alone during a split brain and that failed there
// (expired: never dispatched) are handed over to the primary as an
// adoption and a failure; the primary's counts take each failure off
// IN-FLIGHT: `titanic stats` shows in flight -4 for four such tickets
// (with other pending tickets of the service cancelled or closed
// meanwhile: PENDING 0 while 2 pending tickets are listed), until the
// node restarts.
func TestSplitMergeKeepsCounts(t *testing.T) {
	p, cp := splitPair(t)
	primary, backup, ctx, dg := p.primary, p.backup, p.ctx, p.dg
	for i := range 6 {
		if _, err := cp.Submit(ctx, "svc", [][]byte{[]byte(fmt.Sprint("pre", i))}, client.SubmitOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := cp.Pause(ctx, "svc"); err != nil {
		t.Fatal(err)
	}
	waitPairHealthy(t, ctx, primary, backup, 30*time.Second)

	primary.host.Partition(t, backup.host)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	splitWorkerOf(t, wctx, []string{backup.endpoint()}, "echo2", func(_ context.Context, req [][]byte) ([][]byte, error) { return req, nil })
	cb, err := client.New(client.Config{Brokers: []string{backup.endpoint()}, Timeout: clientTimeout, Retries: 40, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	eventually(t, 60*time.Second, "a submit to the backup alone (voted active)", func() error {
		_, err := cb.Submit(ctx, "echo2", [][]byte{[]byte("d")}, client.SubmitOptions{})
		return err
	}, dg)
	var tks []string
	for i := range 4 {
		tk, err := cb.Submit(ctx, "svc", [][]byte{[]byte(fmt.Sprint("b", i))}, client.SubmitOptions{TTL: time.Duration(i+1) * 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		tks = append(tks, tk)
	}
	// The primary goes on alone too, so both sides fork and the backup
	// hands its fork over. Without work of its own on the primary the
	// merge may take the other path, where the primary forked nothing
	// and the backup brings it up to date and hands leadership over
	// (no adoption: not what this test is about).
	ca, err := client.New(client.Config{Brokers: []string{primary.endpoint()}, Timeout: clientTimeout, Retries: 40, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	eventually(t, 60*time.Second, "a submit to the primary alone (it reformed its raft)", func() error {
		_, err := ca.Submit(ctx, "other", [][]byte{[]byte("p")}, client.SubmitOptions{})
		return err
	}, dg)
	time.Sleep(time.Second) // all four expire on the backup
	primary.host.Heal(t)
	waitForkHandedOver(t, backup, 60*time.Second, "the backup yields and hands its fork over", dg)
	waitPairHealthy(t, ctx, primary, backup, 60*time.Second)
	for _, tk := range tks {
		if st, err := cp.Status(ctx, tk); err != nil || st.State != "failed" {
			t.Fatalf("ticket %s after the merge: %+v %v, want failed (expired)", tk, st, err)
		}
	}
	var last string
	eventually(t, 10*time.Second, "stats of the merged service", func() error {
		qs, err := cp.QueueStats(ctx, "svc")
		if err != nil {
			return err
		}
		for _, s := range qs.Services {
			if s.Service == "svc" {
				last = fmt.Sprintf("pending %d delayed %d in flight %d failed %d", s.Pending, s.Delayed, s.InFlight, s.Failed)
				if s.Pending != 6 || s.Delayed != 0 || s.InFlight != 0 || s.Failed != 4 {
					return fmt.Errorf("%s", last)
				}
				return nil
			}
		}
		return fmt.Errorf("no stats for the service")
	}, func() string {
		return "\nlast stats: " + last + " (want pending 6, delayed 0, in flight 0, failed 4, as titanic.list has them)"
	})
}
