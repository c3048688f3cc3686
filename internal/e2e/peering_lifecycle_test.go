package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

// Tickets forwarded to a peer cluster keep their delay, priority, deadline
// and cancel semantics (issue 11). Cluster A has no worker, its peer B has
// the only ones: every ticket submitted at A runs on B. They hold because
// A decides them all: A hands a job to B only through the dispatcher that
// would hand it to a local worker (broker.Source.Next, asked when B
// advertises spare capacity), so a ticket that is delayed, outranked,
// expired or cancelled at A is simply never handed over, and B's reply
// comes back through the same Completed as a local worker's.
func TestPeeringLifecycle(t *testing.T) {
	cs := newPeerClusters(t, "A", "B")
	httpA := harness.FreeAddr(t)
	cs[0].start(t, cs, "--http-listen", httpA)
	cs[1].start(t, cs)
	a := &lcBroker{t: t, ep: cs[0].ep, p: cs[0].p}
	b := &lcBroker{t: t, ep: cs[1].ep, p: cs[1].p}

	// (a) A delayed ticket is not run on the peer before its due time,
	// though B's worker is idle all along.
	t.Run("delay", func(t *testing.T) {
		b.worker("worker-clock", "clock", clock)
		b.serving("clock")
		start := time.Now()
		tk := a.submit("--delay", "2s", "clock", "x")
		if out, code := a.cli("status", tk); code != 0 || !strings.Contains(out, "state:    pending") {
			t.Fatalf("status of the delayed ticket at A: %q exit %d, want pending", out, code)
		}
		if at := ranAt(t, a.replyWait(tk)); at.Before(start.Add(2 * time.Second)) {
			t.Fatalf("ran on B %s after the submit at A, before its 2s delay", at.Sub(start))
		}
	})

	// (b) With B's only worker blocked, low then high tickets queue at A;
	// once the worker is free, the high ones run first.
	t.Run("priority", func(t *testing.T) {
		g := newGatedWorker(t, b, "prio")
		hold := g.hold(a, "hold")
		var tks []string
		for _, p := range []string{"low", "low", "low", "high", "high", "high"} {
			tks = append(tks, a.submit("--priority", p, "prio", p))
		}
		for _, tk := range tks {
			if out, code := a.cli("status", tk); code != 0 || !strings.Contains(out, "state:    pending") {
				t.Fatalf("status at A of a ticket queued behind the blocked worker: %q exit %d, want pending (held at the origin)", out, code)
			}
		}
		g.open("hold")
		a.replyWait(hold)
		for _, tk := range tks {
			a.replyWait(tk)
		}
		if got, want := g.once(g.order()), []string{"hold", "high", "high", "high", "low", "low", "low"}; !slices.Equal(got, want) {
			t.Fatalf("B's worker ran %v, want %v", got, want)
		}
	})

	// (c) A ticket whose ttl passes while B has no capacity for it ends
	// failed, reason expired, and is never run.
	t.Run("ttl", func(t *testing.T) {
		g := newGatedWorker(t, b, "ttl")
		hold := g.hold(a, "hold")
		late := a.submit("--ttl", "1s", "ttl", "late")
		waitFor(t, 20*time.Second, "the ticket with --ttl 1s failed as expired at A", func() bool {
			out, code := a.cli("status", late)
			return code == 0 && strings.Contains(out, "state:    failed") && strings.Contains(out, "reason:   expired")
		})
		if _, code := a.cli("reply", late); code != 5 {
			t.Fatalf("reply of the expired ticket: exit %d, want 5 (failed)", code)
		}
		g.open("hold")
		a.replyWait(hold)
		a.replyWait(a.submit("ttl", "after"))
		if got, want := g.once(g.started()), []string{"hold", "after"}; !slices.Equal(got, want) {
			t.Fatalf("B's worker started %v, want %v: the expired ticket must never run", got, want)
		}
	})

	// (d) A pending ticket cancelled at A is never run on B.
	t.Run("cancel pending", func(t *testing.T) {
		g := newGatedWorker(t, b, "drop")
		hold := g.hold(a, "hold")
		drop := a.submit("drop", "drop")
		if out, code := a.cli("cancel", drop); code != 0 || !strings.Contains(out, "cancelled") {
			t.Fatalf("cancel at A: %q exit %d", out, code)
		}
		g.open("hold")
		a.replyWait(hold)
		a.replyWait(a.submit("drop", "after"))
		if got, want := g.once(g.started()), []string{"hold", "after"}; !slices.Equal(got, want) {
			t.Fatalf("B's worker started %v, want %v: the cancelled ticket must never run", got, want)
		}
		if out, code := a.cli("status", drop); code != 0 || !strings.Contains(out, "state:    cancelled") {
			t.Fatalf("status of the cancelled ticket: %q exit %d", out, code)
		}
	})

	// (e) A ticket cancelled at A while it runs on B ends cancelled; B's
	// reply, when it comes, is refused (counted late, never recorded).
	t.Run("cancel running", func(t *testing.T) {
		g := newGatedWorker(t, b, "running")
		tk := g.hold(a, "hold")
		if out, code := a.cli("status", tk); code != 0 || !strings.Contains(out, "state:    dispatched") {
			t.Fatalf("status at A of the ticket running on B: %q exit %d, want dispatched", out, code)
		}
		before := countersA(t, httpA)
		if out, code := a.cli("cancel", tk); code != 0 || !strings.Contains(out, "cancelled") {
			t.Fatalf("cancel at A of the ticket running on B: %q exit %d", out, code)
		}
		g.open("hold")
		waitFor(t, 20*time.Second, "B's worker to finish the cancelled job", func() bool { return slices.Contains(g.order(), "hold") })
		var now peerCountersE2E
		waitFor(t, 20*time.Second, "A to count B's reply as late", func() bool {
			now = countersA(t, httpA)
			return now.LateReplies == before.LateReplies+1
		})
		if now.Replies != before.Replies {
			t.Fatalf("A recorded %d replies after the cancel, want none (late replies %d)", now.Replies-before.Replies, now.LateReplies)
		}
		if out, code := a.cli("status", tk); code != 0 || !strings.Contains(out, "state:    cancelled") {
			t.Fatalf("status after B's reply: %q exit %d, want still cancelled", out, code)
		}
		if out, code := a.cli("reply", tk); code != 5 || out != "" {
			t.Fatalf("reply after B's reply: %q exit %d, want 5 (failed: cancelled) and no reply", out, code)
		}
	})
}

// gatedWorker is a worker on a peer for one service whose jobs can be
// held: it logs each body when it starts and when it ends, and a body
// hold... waits until the test opens its gate.
type gatedWorker struct {
	t            *testing.T
	service, dir string
}

func newGatedWorker(t *testing.T, b *lcBroker, service string) *gatedWorker {
	t.Helper()
	g := &gatedWorker{t: t, service: service, dir: t.TempDir()}
	script := fmt.Sprintf(`b="$(cat)"; cd %q; echo "$b" >> started; `+
		`case "$b" in hold*) while [ ! -e "gate-$b" ]; do sleep 0.02; done;; esac; `+
		`echo "$b" >> order; printf '%%s' "$b"`, g.dir)
	b.worker("worker-"+service, service, script)
	b.serving(service)
	return g
}

// hold submits body (a hold...) to service at the origin and waits until
// it has started on the peer's worker, which it then keeps busy until
// open(body). It returns the ticket.
func (g *gatedWorker) hold(origin *lcBroker, body string) string {
	g.t.Helper()
	tk := origin.submit(g.service, body)
	waitFor(g.t, 20*time.Second, body+" started on the peer's worker", func() bool { return slices.Contains(g.started(), body) })
	return tk
}

func (g *gatedWorker) open(body string) {
	g.t.Helper()
	if err := os.WriteFile(filepath.Join(g.dir, "gate-"+body), nil, 0o644); err != nil {
		g.t.Fatal(err)
	}
}

func (g *gatedWorker) started() []string { return g.lines("started") }
func (g *gatedWorker) order() []string   { return g.lines("order") }

// once drops the repeats of the held job: on a loaded host its lease on
// the peer can run out while the test holds it, and it is redelivered
// (at-least-once, as documented). Only the held job may repeat; what the
// subtests check is that the other tickets run once, in order, or never.
func (g *gatedWorker) once(lines []string) []string {
	var out []string
	seen := false
	for _, l := range lines {
		if strings.HasPrefix(l, "hold") {
			if seen {
				g.t.Logf("the held job ran again (redelivered): %v", lines)
				continue
			}
			seen = true
		}
		out = append(out, l)
	}
	return out
}

func (g *gatedWorker) lines(name string) []string {
	b, err := os.ReadFile(filepath.Join(g.dir, name))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		g.t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// peerCountersE2E are the titanic counters of A (GET /api/v1/stats).
type peerCountersE2E struct {
	Replies     uint64 `json:"replies"`
	LateReplies uint64 `json:"late_replies"`
}

func countersA(t *testing.T, addr string) peerCountersE2E {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/api/v1/stats", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /api/v1/stats: %v", err)
	}
	defer resp.Body.Close()
	var c peerCountersE2E
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&c) != nil {
		t.Fatalf("GET /api/v1/stats: %s", resp.Status)
	}
	return c
}
