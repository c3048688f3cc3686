package failover

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
)

// TestPairBackupRestartedAloneServes: README (Pair): "A node serves only
// once it has been in sync with its peer ... (after that, either node goes
// on alone when the other dies)". The primary dies; the backup takes over
// and acknowledges tickets alone (it is the only voter of its raft: it
// holds everything). Then the backup restarts (a crash, a reboot, an
// upgrade) while the primary is still down. It leads its own raft at once
// and counts as caught up, but Binary Star started it in BACKUP, where a
// client request was refused for ever ("backup waiting for primary"): the
// pair served nothing, although the only node holding the acknowledged
// tickets was up, until the dead primary came back (found by a reviewer
// of the pair). A backup that is the only voter of its raft and leads it
// may now be voted active after the peer timeout, as a primary may.
func TestPairBackupRestartedAloneServes(t *testing.T) {
	p := loadedPair(t, pairLoad{workers: 2, clients: 2, timeout: clientTimeout, acks: 50, acksWithin: 30 * time.Second, wholeWithin: 30 * time.Second})
	primary, backup, ld, dg := p.primary, p.backup, p.ld, p.dg

	primary.kill()
	ld.progress(t, 50, 30*time.Second, "acks of the backup alone, the primary dead", dg)
	if !strings.Contains(lifeLog(backup), servingLine) {
		t.Fatalf("the backup does not serve after the primary died%s", dg())
	}
	backup.kill()
	backup.start(t)
	t.Logf("backup restarted; the primary stays down")
	// The failover of TestPairKillActive takes about 1 s; give it 20.
	ld.progress(t, 20, 20*time.Second, "acks of the restarted backup, which alone holds every acknowledged ticket (primary still down)", dg)
	ld.finish(t, dg)
}

// TestPairSplitHandoverOfLargeTicket: README: "Operators have nothing to
// do after a split brain"; the yielding node hands over every change it
// made after the fork point, in batches, each one frame of a
// titanic.cluster.adopt request to the peer's client endpoint. A ticket
// the yielding node took in alone carried its body and its reply in the
// same batch (store.ForkOps): a body under --max-body plus a reply the
// worker was allowed to send made a frame over the peer's
// --max-message-size, ZeroMQ dropped the connection, and the handover was
// retried for ever: the pair was never whole again, and the primary
// answered every ticket the backup acknowledged alone "not ready" (found
// by a reviewer of the pair). Such a ticket now goes over one op per
// batch, and batches are bounded by half the max message size. The
// limits are lowered
// (4 MiB frames, 2 MiB bodies, as README advises: max-body under
// max-message-size) so that the test moves megabytes, not the defaults'
// 32; the same holds at 16 MiB bodies and 32 MiB frames.
func TestPairSplitHandoverOfLargeTicket(t *testing.T) {
	primary, backup, _ := pairWith(t, append([]string{"--pair-heartbeat", "200ms", "--max-message-size", "4MiB", "--max-body", "2MiB"}, fastFlags...)...)
	brokers := endpoints(primary, backup)
	dg := func() string { return diag(primary, backup) }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Workers answer a large request with a reply of 2.5 MiB (under the
	// 4 MiB limit); one per node, so each side of the split has its own.
	for _, ep := range brokers {
		runWorkers(t, ctx, []string{ep}, 1, 200*time.Millisecond, func(_ context.Context, req [][]byte) ([][]byte, error) {
			if n := len(bytes.Join(req, nil)); n > 1<<20 {
				return [][]byte{bytes.Repeat([]byte("r"), 5<<19)}, nil
			}
			return [][]byte{append([]byte("echo:"), bytes.Join(req, nil)...)}, nil
		})
	}
	x := startLoadKeys(t, ctx, []string{primary.endpoint()}, 2, 2*clientTimeout, "x")
	x.progress(t, 30, 30*time.Second, "first acks of the primary's clients", dg)
	waitPairHealthy(t, ctx, primary, backup, 30*time.Second)

	primary.host.Partition(t, backup.host)
	y := startLoadKeys(t, ctx, []string{backup.endpoint()}, 1, 2*clientTimeout, "y")
	y.progress(t, 10, 30*time.Second, "acks of the backup voted active by its own clients (split brain)", dg)
	cl, err := client.New(client.Config{Brokers: []string{backup.endpoint()}, Timeout: 5 * time.Second, Retries: 5, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	big := bytes.Repeat([]byte("b"), 2<<20-64)
	tk, err := cl.Submit(ctx, "echo", [][]byte{big}, client.SubmitOptions{IdemKey: "big"})
	if err != nil {
		t.Fatalf("big submit on the backup alone: %v%s", err, dg())
	}
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	rep, err := cl.Reply(rctx, tk, client.ReplyOptions{Wait: true, PollInterval: 100 * time.Millisecond})
	rcancel()
	if err != nil || len(rep) != 1 || len(rep[0]) != 5<<19 {
		t.Fatalf("big ticket %s on the backup: reply of %d frames, err %v%s", tk, len(rep), err, dg())
	}
	y.finish(t, dg)
	x.progress(t, 10, 30*time.Second, "acks of the primary alone", dg)

	primary.host.Heal(t)
	t.Logf("healed; the backup (big ticket %s acknowledged and answered there) must hand its split over and rejoin", tk)
	waitPairHealthy(t, ctx, primary, backup, 60*time.Second)
	x.finish(t, dg)
}
