package failover

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/netns"
)

// TestRebootedPeerServedDespiteHalfOpenCloudLink: FRONT (clients, no
// worker) and SITE (the workers) are peered. FRONT's host goes down the
// way a crash and reboot leaves it: cut off from SITE, its broker killed
// and its TCP state gone (ss -K: no FIN or RST ever reaches SITE), then
// back on the network with a new broker. SITE still has the old,
// half-open connection of FRONT's cloud backend (routing id "FRONT"); the
// new one connects with the same routing id and must take its place
// (ZMQ_ROUTER_HANDOVER), or every job FRONT forwards is left unread at
// SITE and FRONT's acknowledged tickets burn their attempts and fail.
func TestRebootedPeerServedDespiteHalfOpenCloudLink(t *testing.T) {
	n := netns.New(t)
	fh, sh, wh := n.Host("front"), n.Host("site"), n.Host("sitew")
	n.Attach()
	const clientPort = 5555
	peerArgs := func(name string, h *netns.Host, other string, oh *netns.Host) []string {
		return []string{"broker", "--listen", h.Endpoint(clientPort), "--data", t.TempDir(),
			"--peering-name", name, "--peering-cloud-listen", h.Endpoint(peerCloudPort),
			"--peering-state-listen", h.Endpoint(peerStatePort),
			"--peering-peers", other + "=" + oh.Endpoint(peerCloudPort) + "+" + oh.Endpoint(peerStatePort),
			"--http-listen", "", "--heartbeat", "200ms", "--log-level", "debug"}
	}
	// Short peer leases and backoff, so that the test's bounded wait
	// covers every attempt (5 by default).
	frontArgs := append(peerArgs("FRONT", fh, "SITE", sh), "--lease-timeout", "2s", "--backoff-base", "200ms", "--backoff-max", "1s")
	front := fh.Start(t, "front-0", "broker ready", frontArgs...)
	sp := sh.Start(t, "site", "broker ready", peerArgs("SITE", sh, "FRONT", fh)...)
	for i := range 2 {
		wh.Start(t, fmt.Sprintf("site-worker%d", i), "worker running", "worker", "--broker", sh.Endpoint(clientPort),
			"--heartbeat", "200ms", peerSvc, "--", "sh", "-c", `read -r x; printf 'SITE:%s' "$x"`)
	}
	diag := func(ps ...*netns.Process) string {
		var b strings.Builder
		for _, p := range ps {
			fmt.Fprintf(&b, "\n--- %s ---\n%s", p.Name, p.Tail())
		}
		return b.String()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl, err := client.New(client.Config{Brokers: []string{fh.Endpoint(clientPort)}, Timeout: peerClient, Retries: 10, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	answer := func(body string, within time.Duration, ps ...*netns.Process) {
		t.Helper()
		tk, err := cl.Submit(ctx, peerSvc, [][]byte{[]byte(body)}, client.SubmitOptions{})
		if err != nil {
			t.Fatalf("submit %s: %v%s", body, err, diag(ps...))
		}
		rctx, rcancel := context.WithTimeout(ctx, within)
		defer rcancel()
		rep, err := cl.Reply(rctx, tk, client.ReplyOptions{Wait: true})
		if err != nil {
			st, serr := cl.Status(ctx, tk)
			t.Fatalf("ticket %s (%s) acknowledged at FRONT, not answered within %s: %v; status %+v %v%s", tk, body, within, err, st, serr, diag(ps...))
		}
		if got := string(rep[0]); got != "SITE:"+body {
			t.Fatalf("ticket %s answered %q", tk, got)
		}
	}
	answer("before", 20*time.Second, front, sp)

	// FRONT's host crashes and reboots.
	fh.Partition(t, sh)
	front.Kill()
	if out, err := fh.Run(t, "ss", "-K", "dst", sh.Addr); err != nil {
		t.Fatalf("ss -K: %v\n%s", err, out)
	}
	if out, _ := fh.Run(t, "ss", "-tan"); strings.Contains(string(out), sh.Addr) {
		t.Fatalf("FRONT's host still has connections to SITE:\n%s", out)
	}
	fh.Heal(t)
	front = fh.Start(t, "front-1", "broker ready", frontArgs...)
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _ := os.ReadFile(front.Log)
		if strings.Contains(string(b), `msg="peer up"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("FRONT never heard SITE after its restart%s", diag(front, sp))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Every attempt (5, 2 s peer lease each, backoff up to 1 s) fits in
	// 30 s; SITE's two workers are idle.
	answer("after", 30*time.Second, front, sp)
}
