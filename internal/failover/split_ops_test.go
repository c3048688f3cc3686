package failover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
)

// What operators and clients do to tickets on both sides of a split
// brain must survive the merge (an outside-in test of the pair).
// README (split brain): the yielding node hands over "answers it recorded
// for older tickets; closes its clients made", "a ticket the active's
// clients closed stays closed", and an operator's close, retry or cancel
// is never undone.

// splitOpsClient is a client of one node alone, for one side of a split.
func splitOpsClient(t *testing.T, endpoint string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Brokers: []string{endpoint}, Timeout: clientTimeout, Retries: 40, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestSplitOpsKeptByMerge: before the split, tickets of a paused service
// (pending) and tickets that failed for want of a worker. During the
// split, each side's clients close, cancel, retry and purge some of them
// (each ticket touched by one side only), the backup's clients also take
// in tickets of their own and close or cancel some, and a ticket retried
// on the backup runs there and is answered. After the merge every one of
// those actions holds on the merged pair, and once the services resume
// and have workers, nothing cancelled or closed runs.
func TestSplitOpsKeptByMerge(t *testing.T) {
	p := loadedPair(t, pairLoad{
		flags:       append([]string{"--pair-heartbeat", "200ms", "--no-worker-timeout", "300ms"}, fastFlags...),
		wholeWithin: 30 * time.Second, ctxTimeout: 4 * time.Minute,
	})
	primary, backup, brokers, ctx, dg := p.primary, p.backup, p.brokers, p.ctx, p.dg
	cp, err := client.New(client.Config{Brokers: brokers, Timeout: clientTimeout, Retries: 40, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	eventually(t, 30*time.Second, "pause supported (cluster version)", func() error { return cp.Pause(ctx, "held") }, dg)
	submit := func(c *client.Client, svc, body string) string {
		t.Helper()
		tk, err := c.Submit(ctx, svc, [][]byte{[]byte(body)}, client.SubmitOptions{})
		if err != nil {
			t.Fatalf("submit %s %s: %v%s", svc, body, err, dg())
		}
		return tk
	}
	waitState := func(c *client.Client, tk, want string) {
		t.Helper()
		eventually(t, 20*time.Second, tk+" "+want, func() error {
			st, err := c.Status(ctx, tk)
			if err == nil && st.State != want {
				err = fmt.Errorf("state %s", st.State)
			}
			return err
		}, dg)
	}
	// Pending (paused service) and failed (no worker within 300ms)
	// tickets both nodes hold.
	h := map[string]string{}
	for _, n := range []string{"h1", "h2", "h3", "h4", "h5"} {
		h[n] = submit(cp, "held", n)
	}
	f := map[string]string{}
	for _, n := range []string{"f1", "f2", "f3", "f4"} {
		f[n] = submit(cp, "later", n)
	}
	f["f5"] = submit(cp, "later2", "f5")
	for _, tk := range f {
		waitState(cp, tk, "failed")
	}
	// Retried tickets of "later" stay pending (paused) until checked.
	if err := cp.Pause(ctx, "later"); err != nil {
		t.Fatal(err)
	}
	waitPairHealthy(t, ctx, primary, backup, 30*time.Second)

	t.Logf("split: the pair link cut, each side's clients reach one node")
	ca, cb := splitServing(t, p)
	do := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s during the split: %v%s", what, err, dg())
		}
	}
	// The backup's side.
	do("backup: close h1", cb.CloseTicket(ctx, h["h1"]))
	do("backup: cancel h2", cb.Cancel(ctx, h["h2"]))
	do("backup: retry f1", cb.Retry(ctx, f["f1"]))
	do("backup: purge f2", cb.Purge(ctx, f["f2"]))
	b1, b2, b3 := submit(cb, "held", "b1"), submit(cb, "held", "b2"), submit(cb, "held", "b3")
	do("backup: close b1", cb.CloseTicket(ctx, b1))
	do("backup: cancel b2", cb.Cancel(ctx, b2))
	// f5 retried on the backup, run there by a worker of the backup alone.
	wctx, wcancel := context.WithCancel(ctx)
	splitWorkerOf(t, wctx, []string{backup.endpoint()}, "later2", func(_ context.Context, req [][]byte) ([][]byte, error) {
		return [][]byte{append([]byte("split:"), req[0]...)}, nil
	})
	eventually(t, 20*time.Second, "a worker of later2 on the backup", func() error {
		rep, err := cb.Request(ctx, "mmi.service", [][]byte{[]byte("later2")})
		if err == nil && string(rep[0]) != "200" {
			err = fmt.Errorf("mmi.service: %q", rep)
		}
		return err
	}, dg)
	do("backup: retry f5", cb.Retry(ctx, f["f5"]))
	if rep, err := cb.Reply(ctx, f["f5"], client.ReplyOptions{Wait: true}); err != nil || string(rep[0]) != "split:f5" {
		t.Fatalf("f5 retried on the backup: %q %v%s", rep, err, dg())
	}
	wcancel()
	// The primary's side.
	do("primary: close h3", ca.CloseTicket(ctx, h["h3"]))
	do("primary: cancel h4", ca.Cancel(ctx, h["h4"]))
	do("primary: retry f3", ca.Retry(ctx, f["f3"]))
	do("primary: purge f4", ca.Purge(ctx, f["f4"]))

	primary.host.Heal(t)
	waitForkHandedOver(t, backup, 60*time.Second, "the backup yields and hands its fork over", dg)
	waitPairHealthy(t, ctx, primary, backup, 60*time.Second)

	want := map[string]string{ // ticket -> state after the merge ("closed": unknown)
		h["h1"]: "closed", h["h2"]: "cancelled", h["h3"]: "closed", h["h4"]: "cancelled", h["h5"]: "pending",
		f["f1"]: "pending", f["f2"]: "closed", f["f3"]: "pending", f["f4"]: "closed", f["f5"]: "done",
		b1: "closed", b2: "cancelled", b3: "pending",
	}
	name := map[string]string{b1: "b1", b2: "b2", b3: "b3"}
	for n, tk := range h {
		name[tk] = n
	}
	for n, tk := range f {
		name[tk] = n
	}
	var wrong []string
	for tk, w := range want {
		st, err := cp.Status(ctx, tk)
		got := st.State
		switch {
		case errors.Is(err, client.ErrUnknown):
			got = "closed"
		case err != nil:
			got = "error: " + err.Error()
		}
		if got != w {
			wrong = append(wrong, fmt.Sprintf("%s (%s): %s, want %s", name[tk], tk, got, w))
		}
	}
	if rep, err := cp.Reply(ctx, f["f5"], client.ReplyOptions{}); err != nil || string(rep[0]) != "split:f5" {
		wrong = append(wrong, fmt.Sprintf("f5's reply after the merge: %q %v, want the backup's split:f5", rep, err))
	}

	// Resumed, with workers: what was closed or cancelled never runs.
	var (
		mu   sync.Mutex
		runs []string
	)
	for _, svc := range []string{"held", "later"} {
		splitWorkerOf(t, ctx, brokers, svc, func(_ context.Context, req [][]byte) ([][]byte, error) {
			mu.Lock()
			runs = append(runs, string(req[0]))
			mu.Unlock()
			return [][]byte{append([]byte("done:"), req[0]...)}, nil
		})
	}
	do("resume held", cp.Resume(ctx, "held"))
	do("resume later", cp.Resume(ctx, "later"))
	for tk, w := range want {
		if w != "pending" {
			continue
		}
		rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
		rep, err := cp.Reply(rctx, tk, client.ReplyOptions{Wait: true})
		rcancel()
		if err != nil || string(rep[0]) != "done:"+name[tk] {
			wrong = append(wrong, fmt.Sprintf("%s (%s) after resume: %q %v, want done:%s", name[tk], tk, rep, err, name[tk]))
		}
	}
	mu.Lock()
	for _, r := range runs {
		if w := want[h[r]] + want[f[r]]; w == "closed" || w == "cancelled" || r == "b1" || r == "b2" {
			wrong = append(wrong, fmt.Sprintf("%s ran after the merge, though closed or cancelled during the split", r))
		}
	}
	mu.Unlock()
	if len(wrong) > 0 {
		for _, l := range strings.Split(lifeLog(backup), "\n") {
			if strings.Contains(l, "split brain") || strings.Contains(l, "fork handed over") {
				t.Logf("backup: %s", l)
			}
		}
		t.Fatalf("after the split brain's merge, %d client actions or states not kept:\n  %s%s", len(wrong), strings.Join(wrong, "\n  "), dg())
	}
}
