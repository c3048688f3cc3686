package failover

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
)

// TestPeeringThreeClusters: clusters A, B and C, each a broker on its own
// host; A has no worker for the service, B and C have two each (on hosts
// of their own), whose replies name their cluster.
//
//	(a) Tickets submitted at A are all answered by B's and C's workers,
//	    both of which take some.
//	(b) With B's workers held by long jobs submitted at B itself, all that
//	    A forwards goes to C.
//	(c) C's broker is SIGKILLed while its workers hold A's slow tickets and
//	    restarted at once (within the 3s A needs to call a silent peer
//	    dead): the tickets C held are redelivered (attempts ≥ 2) and
//	    answered, by B once its long jobs end or by C again.
//
// At the end: every acknowledged ticket is answered with its own body,
// each store holds exactly the tickets acknowledged there, all done, and
// each ticket has one reply: reading it again gives the same answer, and
// A recorded exactly one reply per ticket, although the redelivered ones
// ran twice.
func TestPeeringThreeClusters(t *testing.T) {
	cs := peeredClusters(t, "A", "B", "C")
	a, b, c := cs[0], cs[1], cs[2]
	dg := func() string { return peerDiag(cs...) }
	const hold = 12 * time.Second // B's own long jobs: they outlast phases (b) and (c) up to the kill
	for _, x := range cs {
		x.start(t)
	}
	b.startWorkers(t, 2, hold)
	c.startWorkers(t, 2, hold)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	aEP, bEP, cEP := []string{a.endpoint()}, []string{b.endpoint()}, []string{c.endpoint()}

	waitCapacity := func(what string, want map[string]int) {
		t.Helper()
		eventually(t, 15*time.Second, what, func() error {
			got, err := a.peerCapacity(ctx)
			if err != nil {
				return err
			}
			for name, n := range want {
				if got[name] != n {
					return fmt.Errorf("A hears capacities %v, want %v", got, want)
				}
			}
			return nil
		}, dg)
	}
	waitCapacity("A hears B and C advertise their workers", map[string]int{"B": 2, "C": 2})

	// (a) A has no worker: B and C answer everything.
	acksA := peerSubmitBatch(t, ctx, aEP, "fast.a", 40, 4, dg)
	ansA := checkPeerAnswers(t, ctx, aEP, acksA, []string{"B", "C"}, dg)
	splitA := peerSplit(ansA, acksA)
	if splitA["B"] == 0 || splitA["C"] == 0 {
		t.Fatalf("(a) A's %d tickets answered by %v: want both B and C to take some%s", len(acksA), splitA, dg())
	}

	// (b) B's two workers busy with B's own long jobs: A sends all to C.
	holds := peerSubmitBatch(t, ctx, bEP, "hold.b", 2, 2, dg)
	eventually(t, 10*time.Second, "(b) B's workers held by B's own jobs", func() error {
		w, err := b.workersNow(ctx)
		if err != nil {
			return err
		}
		if w.Busy != 2 {
			return fmt.Errorf("B's workers: %+v", w)
		}
		return nil
	}, dg)
	waitCapacity("(b) A hears B has no spare worker", map[string]int{"B": 0, "C": 2})
	acksB := peerSubmitBatch(t, ctx, aEP, "fast.b", 20, 4, dg)
	ansB := checkPeerAnswers(t, ctx, aEP, acksB, []string{"C"}, dg) // fails on any "B:" answer

	// (c) C's workers take two of A's slow tickets (2s each); C's broker
	// dies holding them and comes back at once.
	acksC := peerSubmitBatch(t, ctx, aEP, "slow.c", 4, 2, dg)
	var held []ack
	eventually(t, 10*time.Second, "(c) C's workers start A's slow tickets", func() error {
		ex := c.execs()
		held = held[:0]
		for _, ak := range acksC {
			if ex[ak.body] > 0 {
				held = append(held, ak)
			}
		}
		if len(held) < 2 {
			return fmt.Errorf("C's workers started %d of them", len(held))
		}
		return nil
	}, dg)
	if bex := b.execs(); slices.ContainsFunc(acksC, func(ak ack) bool { return bex[ak.body] > 0 }) {
		t.Fatalf("(c) B ran a slow ticket of A while its workers were held%s", dg())
	}
	killAt := time.Now()
	c.kill()
	c.start(t)
	restartedIn := time.Since(killAt)

	// A takes the held tickets back (they leave "dispatched") and
	// dispatches them again (attempts ≥ 2).
	cl := newPeerClient(t, aEP...)
	failedBack, redelivered := map[string]time.Duration{}, map[string]time.Duration{}
	eventually(t, 20*time.Second, "(c) the tickets C held redelivered", func() error {
		var waiting error
		for _, ak := range held {
			if _, ok := redelivered[ak.ticket]; ok {
				continue
			}
			st, err := cl.Status(ctx, ak.ticket)
			if err != nil {
				return err
			}
			if _, ok := failedBack[ak.ticket]; !ok && (st.State != "dispatched" || st.Attempts >= 2) {
				failedBack[ak.ticket] = time.Since(killAt)
			}
			if st.Attempts < 2 {
				waiting = fmt.Errorf("ticket %s (%s): %s, attempt %d", ak.ticket, ak.key, st.State, st.Attempts)
				continue
			}
			redelivered[ak.ticket] = time.Since(killAt)
		}
		return waiting
	}, dg)
	ansC := checkPeerAnswers(t, ctx, aEP, acksC, []string{"B", "C"}, dg)
	answeredIn := time.Since(killAt)
	splitC := peerSplit(ansC, acksC)
	for _, ak := range held {
		st, err := cl.Status(ctx, ak.ticket)
		if err != nil || st.State != "done" || st.Attempts < 2 {
			t.Errorf("(c) ticket %s (%s) held by C at the kill: %+v %v; want done after ≥ 2 attempts", ak.ticket, ak.key, st, err)
		}
		if n := b.execs()[ak.body] + c.execs()[ak.body]; n < 2 {
			t.Errorf("(c) ticket %s (%s) held by C at the kill ran %d times, want ≥ 2 (once at the dead C, once more)", ak.ticket, ak.key, n)
		}
	}
	ansHold := checkPeerAnswers(t, ctx, bEP, holds, []string{"B"}, dg)

	// The invariant, in each cluster's store.
	all := slices.Concat(acksA, acksB, acksC)
	checkPeerStore(t, ctx, aEP, all, dg)
	checkPeerStore(t, ctx, bEP, holds, dg)
	checkPeerStore(t, ctx, cEP, nil, dg) // C only served A: peers' requests are never stored there

	// One answer per ticket: the work C's workers were doing at the kill
	// finished (2s) and went nowhere; nothing changed a recorded reply.
	time.Sleep(time.Until(killAt.Add(3 * time.Second)))
	ans := map[string]peerAnswer{}
	for _, m := range []map[string]peerAnswer{ansA, ansB, ansC} {
		for k, v := range m {
			ans[k] = v
		}
	}
	checkPeerRepliesStable(t, ctx, aEP, ans, dg)
	checkPeerRepliesStable(t, ctx, bEP, ansHold, dg)
	ctrs, err := a.countersNow(ctx)
	if err != nil {
		t.Fatalf("A's counters: %v", err)
	}
	if ctrs.Replies != uint64(len(all)) {
		t.Errorf("A recorded %d replies for %d tickets (late replies %d)", ctrs.Replies, len(all), ctrs.LateReplies)
	}

	var times []string
	for _, ak := range held {
		times = append(times, fmt.Sprintf("%s taken back %s, dispatched again %s", ak.key,
			failedBack[ak.ticket].Round(time.Millisecond), redelivered[ak.ticket].Round(time.Millisecond)))
	}
	t.Logf("(a) %d tickets at A answered by %v", len(acksA), splitA)
	t.Logf("(b) B held by %d long jobs of its own: %d tickets at A all answered by C", len(holds), len(acksB))
	t.Logf("(c) %d slow tickets at A, %d held by C at the kill; C restarted in %s; after the kill: %s; all answered %s after the kill, by %v",
		len(acksC), len(held), restartedIn.Round(time.Millisecond), strings.Join(times, ", "), answeredIn.Round(time.Millisecond), splitC)
	t.Logf("A: %d replies recorded for %d tickets, %d redeliveries, %d late replies", ctrs.Replies, len(all), ctrs.Redeliveries, ctrs.LateReplies)
}

// TestCloudFront: the Guide's seed topology. FRONT is a broker with no
// workers, only a peer, SITE, whose broker has three workers. Clients
// submit at FRONT, others straight at SITE, for the same service. Then
// SITE is cut off from FRONT (a silent partition: both still reach their
// clients and SITE its workers) for 6s with submits flowing at both:
// SITE's own tickets keep being answered during the cut, FRONT's wait, and
// after the heal every acknowledged ticket is answered by SITE's workers;
// each store holds exactly the tickets acknowledged there.
func TestCloudFront(t *testing.T) {
	cs := peeredClusters(t, "FRONT", "SITE")
	front, site := cs[0], cs[1]
	dg := func() string { return peerDiag(cs...) }
	for _, x := range cs {
		x.start(t)
	}
	site.startWorkers(t, 3, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fEP, sEP := []string{front.endpoint()}, []string{site.endpoint()}
	eventually(t, 15*time.Second, "FRONT hears SITE advertise its workers", func() error {
		got, err := front.peerCapacity(ctx)
		if err != nil {
			return err
		}
		if got["SITE"] != 3 {
			return fmt.Errorf("FRONT hears %v", got)
		}
		return nil
	}, dg)

	fl := startPeerLoad(t, ctx, fEP, "f", 2, 100*time.Millisecond)
	sl := startPeerLoad(t, ctx, sEP, "s", 2, 100*time.Millisecond)
	fl.progress(t, 20, 15*time.Second, "submits at FRONT", dg)
	sl.progress(t, 20, 15*time.Second, "submits at SITE", dg)
	// Both paths answer before the cut.
	checkPeerAnswers(t, ctx, fEP, peerAcks(fl)[:10], []string{"SITE"}, dg)
	checkPeerAnswers(t, ctx, sEP, peerAcks(sl)[:10], []string{"SITE"}, dg)
	cl := newPeerClient(t, fEP...)

	const cut = 6 * time.Second
	cutAt := time.Now()
	site.host.Partition(t, front.host)
	fBefore, sBefore := fl.count(), sl.count()
	sl.progress(t, 20, cut, "SITE's submits during the cut", dg)
	time.Sleep(time.Until(cutAt.Add(cut)))
	during := time.Now()
	fDuring, sDuring := fl.count()-fBefore, sl.count()-sBefore

	// SITE's own tickets were answered during the cut; FRONT's, taken
	// after it gave SITE up (3s of silence), wait.
	sAcks := peerAcksBetween(peerAcks(sl), cutAt, during.Add(-time.Second))
	fWait := peerAcksBetween(peerAcks(fl), cutAt.Add(4500*time.Millisecond), during)
	scl := newPeerClient(t, sEP...)
	for _, ak := range sAcks {
		if _, err := scl.Reply(ctx, ak.ticket, client.ReplyOptions{}); err != nil {
			t.Fatalf("SITE's ticket %s (%s), acked %s into the cut, not answered %s into it: %v%s", ak.ticket, ak.key,
				ak.at.Sub(cutAt).Round(time.Millisecond), time.Since(cutAt).Round(time.Millisecond), err, dg())
		}
	}
	if len(sAcks) == 0 || len(fWait) == 0 {
		t.Fatalf("during the cut: %d SITE tickets to check, %d FRONT tickets; want some of each%s", len(sAcks), len(fWait), dg())
	}
	for _, ak := range fWait {
		st, err := cl.Status(ctx, ak.ticket)
		if err != nil || st.State == "done" {
			t.Fatalf("FRONT's ticket %s (%s), acked %s into the cut: %+v %v; want it waiting (SITE is cut off)%s", ak.ticket, ak.key,
				ak.at.Sub(cutAt).Round(time.Millisecond), st, err, dg())
		}
	}

	site.host.Heal(t)
	healAt := time.Now()
	fl.progress(t, 10, 15*time.Second, "submits at FRONT after the heal", dg)
	sl.progress(t, 10, 15*time.Second, "submits at SITE after the heal", dg)
	fAcks, sAll := fl.finish(t, dg), sl.finish(t, dg)
	// What FRONT kept during the cut is answered after the heal.
	checkPeerAnswers(t, ctx, fEP, fWait, []string{"SITE"}, dg)
	drained := time.Since(healAt)

	ansF := checkPeerAnswers(t, ctx, fEP, fAcks, []string{"SITE"}, dg)
	checkPeerAnswers(t, ctx, sEP, sAll, []string{"SITE"}, dg)
	checkPeerStore(t, ctx, fEP, fAcks, dg)
	checkPeerStore(t, ctx, sEP, sAll, dg)
	checkPeerRepliesStable(t, ctx, fEP, ansF, dg)

	ctrs, err := front.countersNow(ctx)
	if err != nil {
		t.Fatalf("FRONT's counters: %v", err)
	}
	if ctrs.Replies != uint64(len(fAcks)) {
		t.Errorf("FRONT recorded %d replies for %d tickets (late replies %d)", ctrs.Replies, len(fAcks), ctrs.LateReplies)
	}
	t.Logf("FRONT: %d replies recorded, %d redeliveries (jobs it had sent SITE before it gave it up), %d late replies; logged the peer lost: %v",
		ctrs.Replies, ctrs.Redeliveries, ctrs.LateReplies, strings.Contains(front.logs(), "peer lost"))
	t.Logf("FRONT: %d tickets (%d during the %s cut, %d of them checked waiting), all answered by SITE; the backlog answered %s after the heal",
		len(fAcks), fDuring, cut, len(fWait), drained.Round(time.Millisecond))
	t.Logf("SITE: %d tickets submitted directly (%d during the cut, %d of them checked answered before the heal)",
		len(sAll), sDuring, len(sAcks))
}
