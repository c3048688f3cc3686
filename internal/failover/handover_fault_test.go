package failover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
)

// Faults in the middle of a split brain's handover (README, split brain:
// "A handover cut short is redone, and a redo changes nothing the
// active's clients did meanwhile"), through the binary: a large fork on
// the backup handed over in many small batches (limits.max_message_size
// 64 KiB: a batch holds at most 32 KiB), and a fault as the handover
// begins.

// handoverFlags: the test timings, small batches.
var handoverFlags = append([]string{"--pair-heartbeat", "200ms", "--max-message-size", "65536"}, fastFlags...)

// bulkSubmit has cl take n keyed echo tickets of about size bytes each,
// pipelined, and returns their acks; keys are "<prefix><i>".
func bulkSubmit(t *testing.T, ctx context.Context, cl *client.Client, prefix string, n, size int, dg func() string) []ack {
	t.Helper()
	pad := strings.Repeat("x", size)
	futs := make([]*client.SubmitFuture, n)
	bodies := make([]string, n)
	for i := range n {
		key := fmt.Sprintf("%s%d", prefix, i)
		bodies[i] = "body of " + key + " " + pad
		f, err := cl.SubmitAsync(ctx, "echo", [][]byte{[]byte(bodies[i])}, client.SubmitOptions{IdemKey: key})
		if err != nil {
			t.Fatalf("submit %s: %v%s", key, err, dg())
		}
		futs[i] = f
	}
	acks := make([]ack, n)
	for i, f := range futs {
		tk, err := f.Ticket(ctx)
		if err != nil {
			t.Fatalf("submit %s: %v%s", f.Key(), err, dg())
		}
		acks[i] = ack{key: f.Key(), body: bodies[i], ticket: tk, at: time.Now()}
	}
	return acks
}

// waitLogLine polls n's current log for line, briefly (the fault must
// land inside the handover).
func waitLogLine(t *testing.T, n *node, line string, within time.Duration, dg func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(lifeLog(n), line) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q within %s%s", n.name, line, within, dg())
		}
		time.Sleep(2 * time.Millisecond) // polling a file: no event to wait for
	}
}

const (
	splitHandingLine = "split brain: this node and its active peer each hold work the other lacks"
	adoptedLine      = "merged work handed over by the peer"
)

// forkedPair splits a pair, has the backup take n tickets alone and the
// primary m (the split not healed); it returns the acks of both sides.
func forkedPair(t *testing.T, p pairRun, n, m int) (backupAcks, primaryAcks []ack) {
	t.Helper()
	ctx, dg := p.ctx, p.dg
	ca, cb := splitServing(t, p)
	backupAcks = bulkSubmit(t, ctx, cb, "b", n, 1000, dg)
	primaryAcks = bulkSubmit(t, ctx, ca, "a", m, 1000, dg)
	t.Logf("split: the backup took %d tickets alone, the primary %d", n, m)
	return backupAcks, primaryAcks
}

// handoverUnderWay starts a pair with small handover batches, forks it
// (forkedPair: 6000 tickets on the backup, 300 on the primary), heals
// the split and returns once the primary took in the handover's first
// batch.
func handoverUnderWay(t *testing.T) (p pairRun, backupAcks, primaryAcks []ack) {
	t.Helper()
	p = loadedPair(t, pairLoad{flags: handoverFlags, wholeWithin: 30 * time.Second, ctxTimeout: 4 * time.Minute})
	backupAcks, primaryAcks = forkedPair(t, p, 6000, 300)
	p.primary.host.Heal(t)
	waitLogLine(t, p.primary, adoptedLine, 30*time.Second, p.dg)
	return p, backupAcks, primaryAcks
}

// splitServing cuts the pair link and returns a client of each node
// alone once each serves (the backup voted active by its own client):
// a split brain.
func splitServing(t *testing.T, p pairRun) (ca, cb *client.Client) {
	t.Helper()
	p.primary.host.Partition(t, p.backup.host)
	ca, cb = splitOpsClient(t, p.primary.endpoint()), splitOpsClient(t, p.backup.endpoint())
	waitServes(t, p.ctx, p.backup, "alone (voted active)", p.dg)
	waitServes(t, p.ctx, p.primary, "alone", p.dg)
	return ca, cb
}

// waitServes waits until n alone acknowledges a submit (of a service
// nobody serves).
func waitServes(t *testing.T, ctx context.Context, n *node, what string, dg func() string) {
	t.Helper()
	c := splitOpsClient(t, n.endpoint())
	eventually(t, 60*time.Second, n.name+" serves "+what, func() error {
		_, err := c.Submit(ctx, "warm", [][]byte{[]byte(n.name)}, client.SubmitOptions{})
		return err
	}, dg)
}

// checkSplitFates checks every ack after the merge: closed ones unknown,
// cancelled ones cancelled and never run, the others answered with their
// own reply by the echo workers started here; warm-up tickets aside.
func checkSplitFates(t *testing.T, p pairRun, acks []ack, closed, cancelled map[string]bool) {
	t.Helper()
	var (
		mu  sync.Mutex
		ran = map[string]int{}
	)
	splitWorkerOf(t, p.ctx, p.brokers, "echo", func(_ context.Context, req [][]byte) ([][]byte, error) {
		mu.Lock()
		ran[string(req[0])]++
		mu.Unlock()
		return [][]byte{append([]byte("echo:"), req[0]...)}, nil
	})
	inParallel(t, len(acks), 4, func() *client.Client {
		cl, err := client.New(client.Config{Brokers: p.brokers, Timeout: clientTimeout, Retries: 20, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}, p.dg, func(cl *client.Client, i int) error {
		a := acks[i]
		switch {
		case closed[a.ticket]:
			if _, err := cl.Status(p.ctx, a.ticket); !errors.Is(err, client.ErrUnknown) {
				return fmt.Errorf("ticket %s (key %s), closed by a client of the active during the handover, is back after the merge: %v", a.ticket, a.key, err)
			}
		case cancelled[a.ticket]:
			st, err := cl.Status(p.ctx, a.ticket)
			if err != nil || st.State != "cancelled" {
				return fmt.Errorf("ticket %s (key %s), cancelled by a client of the active during the handover: %+v %v after the merge", a.ticket, a.key, st, err)
			}
		default:
			rctx, cancel := context.WithTimeout(p.ctx, 60*time.Second)
			defer cancel()
			rep, err := cl.Reply(rctx, a.ticket, client.ReplyOptions{Wait: true, PollInterval: 100 * time.Millisecond})
			if err != nil {
				return fmt.Errorf("LOST: acknowledged ticket %s (key %s) not answered: %w", a.ticket, a.key, err)
			}
			if string(rep[0]) != "echo:"+a.body {
				return fmt.Errorf("ticket %s (key %s) answered %.40q", a.ticket, a.key, rep[0])
			}
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for _, a := range acks {
		if (closed[a.ticket] || cancelled[a.ticket]) && ran[a.body] > 0 {
			t.Errorf("ticket %s (key %s), closed or cancelled during the handover, ran %d times after it", a.ticket, a.key, ran[a.body])
		}
	}
}

// touchAdopted has a client of on (the active) close every third and
// cancel every third+1 of the tickets of acks that on lists as pending
// (those of the backup's fork taken in by the handover so far), and
// returns what it did.
func touchAdopted(t *testing.T, p pairRun, on *node, acks []ack) (closed, cancelled map[string]bool) {
	t.Helper()
	cl := splitOpsClient(t, on.endpoint())
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	held := map[string]bool{}
	err := cl.ListEach(ctx, client.ListOptions{State: "pending"}, func(ti client.TicketInfo) error {
		held[ti.Ticket] = true
		return nil
	})
	if err != nil {
		t.Logf("listing %s's tickets: %v", on.name, err)
	}
	closed, cancelled = map[string]bool{}, map[string]bool{}
	for i, a := range acks {
		if i%3 == 2 || !held[a.ticket] {
			continue
		}
		if i%3 == 0 {
			if err := cl.CloseTicket(ctx, a.ticket); err == nil {
				closed[a.ticket] = true
			}
			continue
		}
		if err := cl.Cancel(ctx, a.ticket); err == nil {
			cancelled[a.ticket] = true
		}
	}
	return closed, cancelled
}

// signal sends sig to n's current process, failing the test if it cannot.
func signal(t *testing.T, n *node, sig syscall.Signal) {
	t.Helper()
	if err := n.proc().Signal(sig); err != nil {
		t.Fatalf("%v %s: %v", sig, n.name, err)
	}
}

// TestSplitHandoverFaults: a fault as the primary takes in the first
// batch of the backup's handover, while clients close and cancel some of
// the backup's tickets; then the pair must become whole with nothing
// acknowledged lost and nothing closed or cancelled back (checkSplitFates).
//
//   - yielder stopped: the backup is SIGSTOPped for 5 s (past every
//     timeout of the handover's requests and of the pair) while the
//     primary's clients act on the tickets it took in so far; SIGCONT.
//   - taker killed: the primary is SIGKILLed; the backup, its raft halted
//     for the handover, is voted active and serves alone, and its clients
//     act on its tickets; the primary restarts on its own data (its fork
//     plus part of the backup's), meets the backup active and hands its
//     work over.
//   - taker acts then dies: the backup is SIGSTOPped, the primary's
//     clients act on the tickets taken in, the primary is SIGKILLed and
//     the backup SIGCONTed (its handover fails, it serves alone, its fork
//     whole); the primary restarts and hands back what its clients did.
//   - yielder killed: the backup is SIGKILLed while the primary's clients
//     act on the tickets taken in, and restarts: a redo across a restart.
func TestSplitHandoverFaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		// long: only in make jepsen (FAILOVER_LONG); make test runs the
		// two faults that redo a handover across a death.
		long  bool
		fault func(t *testing.T, p pairRun, bAcks []ack) (closed, cancelled map[string]bool)
	}{
		{"yielder stopped", true, func(t *testing.T, p pairRun, bAcks []ack) (closed, cancelled map[string]bool) {
			signal(t, p.backup, syscall.SIGSTOP)
			stoppedAt := time.Now()
			closed, cancelled = touchAdopted(t, p, p.primary, bAcks)
			time.Sleep(time.Until(stoppedAt.Add(5 * time.Second))) // the length of the fault
			signal(t, p.backup, syscall.SIGCONT)
			waitForkHandedOver(t, p.backup, 60*time.Second, "the backup hands its fork over after SIGCONT", p.dg)
			return closed, cancelled
		}},
		{"taker killed", true, func(t *testing.T, p pairRun, bAcks []ack) (closed, cancelled map[string]bool) {
			p.primary.kill()
			waitServes(t, p.ctx, p.backup, "after the primary died", p.dg)
			closed, cancelled = touchAdopted(t, p, p.backup, bAcks[:600])
			p.primary.start(t)
			return closed, cancelled
		}},
		{"taker acts then dies", false, func(t *testing.T, p pairRun, bAcks []ack) (closed, cancelled map[string]bool) {
			signal(t, p.backup, syscall.SIGSTOP)
			closed, cancelled = touchAdopted(t, p, p.primary, bAcks)
			p.primary.kill()
			signal(t, p.backup, syscall.SIGCONT)
			waitServes(t, p.ctx, p.backup, "after the primary died", p.dg)
			p.primary.start(t)
			return closed, cancelled
		}},
		{"yielder killed", false, func(t *testing.T, p pairRun, bAcks []ack) (closed, cancelled map[string]bool) {
			p.backup.kill()
			closed, cancelled = touchAdopted(t, p, p.primary, bAcks)
			p.backup.start(t)
			waitForkHandedOver(t, p.backup, 60*time.Second, "the restarted backup hands its fork over", p.dg)
			return closed, cancelled
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.long {
				longOnly(t)
			}
			p, bAcks, aAcks := handoverUnderWay(t)
			closed, cancelled := tc.fault(t, p, bAcks)
			t.Logf("%s: clients closed %d and cancelled %d of the backup's tickets", tc.name, len(closed), len(cancelled))
			waitPairHealthy(t, p.ctx, p.primary, p.backup, 90*time.Second)
			checkSplitFates(t, p, append(bAcks, aAcks...), closed, cancelled)
		})
	}
}
