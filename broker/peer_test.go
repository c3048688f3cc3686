package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/internal/harness"
)

// freeTCP returns an address whose port stays this test's until it ends:
// a port picked by listening and closing may be handed out again, to this
// test or another, before its node binds it.
func freeTCP(t *testing.T) string {
	t.Helper()
	return harness.ReservedEndpoint(t)
}

type cluster struct {
	name, cloud, state string
}

func peeringOf(self cluster, others ...cluster) *broker.PeeringConfig {
	pc := &broker.PeeringConfig{Name: self.name, CloudListen: self.cloud, StateListen: self.state,
		StateEvery: 50 * time.Millisecond, Liveness: 4}
	for _, o := range others {
		pc.Peers = append(pc.Peers, broker.Peer{Name: o.name, Cloud: o.cloud, State: o.state})
	}
	return pc
}

// startStoppable is start with a way to stop the broker before the test
// ends (a cluster dying).
func startStoppable(t *testing.T, cfg broker.Config, setup func(*broker.Broker)) (*env, func()) {
	t.Helper()
	br, err := broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(br)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- br.Run(ctx) }()
	select {
	case <-br.Ready():
	case err := <-errc:
		t.Fatalf("Run: %v", err)
	}
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	t.Cleanup(func() { _ = zctx.Term() })
	return &env{t: t, b: br, ep: br.Endpoints()[0], zctx: zctx}, stop
}

// TestPeeringForwardsDurableJobs: cluster A has jobs for "echo" and no
// worker; cluster B has an echo worker and advertises it. A forwards the
// job to B, B's worker answers, and the answer reaches A's Source. B never
// forwards what it got from a peer (no loops). When B dies holding a job,
// A fails it back to its Source once B has been silent for its liveness.
func TestPeeringForwardsDurableJobs(t *testing.T) {
	a := cluster{"A", freeTCP(t), freeTCP(t)}
	b := cluster{"B", freeTCP(t), freeTCP(t)}
	cfgA, cfgB := testConfig(t), testConfig(t)
	cfgA.Peering, cfgB.Peering = peeringOf(a, b), peeringOf(b, a)
	// The raw test worker does not heartbeat: keep it registered.
	cfgB.HeartbeatInterval, cfgB.LeaseTimeout = 5*time.Second, 20*time.Second
	srcA := newFakeSource()
	eA := start(t, cfgA, func(br *broker.Broker) { br.SetSource(srcA) })
	eB, stopB := startStoppable(t, cfgB, nil)
	w := eB.worker("wb", "echo")
	eB.waitWorkers("echo", 1)

	// A learns B's spare capacity.
	eA.waitStats("B advertises echo", func(st broker.Stats) bool {
		return len(st.Peers) == 1 && st.Peers[0].Alive && st.Peers[0].Spare["echo"] == 1
	})
	// A has no echo worker, but B serves echo: A's Source is told so (a
	// cloud front must not fail its tickets for want of a worker).
	srcA.expectWorkers(t, "echo=1")
	srcA.add("echo", "T1", "hello", "")
	eA.b.Wake("echo")
	route, body := w.request()
	if !equal(body, []string{"hello", ""}) {
		t.Fatalf("B's worker got %q", body)
	}
	w.reply(route, "HELLO")
	c := srcA.nextCompleted(t)
	if string(c.lease.Token) != "T1" || !equal(c.reply, []string{"HELLO"}) {
		t.Fatalf("A's Completed(%+v, %q)", c.lease, c.reply)
	}
	eA.b.Release(c.lease.ID) // a peer lease: nothing to free, no harm
	if st := eA.stats(); st.JobsForwarded != 1 || st.JobsCompleted != 1 {
		t.Fatalf("A counters %+v", st.Counters)
	}
	if st := eB.stats(); st.CloudRequests != 1 || st.JobsForwarded != 0 {
		t.Fatalf("B counters %+v", st.Counters)
	}

	// A worker FAIL at B comes back to A as a failure.
	eA.waitStats("B advertises echo again", func(st broker.Stats) bool {
		return len(st.Peers) == 1 && st.Peers[0].Spare["echo"] == 1 && st.Peers[0].Reserved["echo"] == 0
	})
	srcA.add("echo", "T2", "x")
	eA.b.Wake("echo")
	route, _ = w.request()
	w.send("", hdrWorker, "\x0f", route, "", "boom")
	if f := srcA.nextFailed(t); string(f.lease.Token) != "T2" || !strings.Contains(f.reason, "boom") {
		t.Fatalf("Failed(%+v, %q)", f.lease, f.reason)
	}

	// B dies holding a job: A hands it back when B goes silent.
	eA.waitStats("B advertises echo again", func(st broker.Stats) bool {
		return len(st.Peers) == 1 && st.Peers[0].Spare["echo"] == 1 && st.Peers[0].Reserved["echo"] == 0
	})
	srcA.add("echo", "T3", "y")
	eA.b.Wake("echo")
	w.request()
	stopB()
	f := srcA.nextFailed(t)
	if string(f.lease.Token) != "T3" || !strings.Contains(f.reason, "peer B lost") {
		t.Fatalf("Failed(%+v, %q)", f.lease, f.reason)
	}
	if st := eA.stats(); st.PeerLeasesLost != 1 || st.Peers[0].Alive {
		t.Fatalf("after B died: %+v %+v", st.Counters, st.Peers)
	}
	srcA.expectWorkers(t, "echo=0")
}

// TestPeeringReservesAdvertisedCapacity: B advertises one idle worker;
// A has three jobs; A sends only one (it reserved the unit) until B's
// answer comes back: busy stays busy.
func TestPeeringReservesAdvertisedCapacity(t *testing.T) {
	a := cluster{"A", freeTCP(t), freeTCP(t)}
	b := cluster{"B", freeTCP(t), freeTCP(t)}
	cfgA, cfgB := testConfig(t), testConfig(t)
	cfgA.Peering, cfgB.Peering = peeringOf(a, b), peeringOf(b, a)
	// The raw test worker does not heartbeat: keep it registered.
	cfgB.HeartbeatInterval, cfgB.LeaseTimeout = 5*time.Second, 20*time.Second
	srcA := newFakeSource()
	eA := start(t, cfgA, func(br *broker.Broker) { br.SetSource(srcA) })
	eB := start(t, cfgB, nil)
	w := eB.worker("wb", "echo")
	eB.waitWorkers("echo", 1)
	eA.waitStats("B advertises echo", func(st broker.Stats) bool {
		return len(st.Peers) == 1 && st.Peers[0].Spare["echo"] == 1
	})
	for _, tk := range []string{"T1", "T2", "T3"} {
		srcA.add("echo", tk, tk)
	}
	eA.b.Wake("echo")
	for i := range 3 {
		route, body := w.request()
		if st := eA.stats(); st.JobsForwarded != uint64(i+1) {
			t.Fatalf("forwarded %d jobs for one unit of capacity", st.JobsForwarded)
		}
		w.reply(route, strings.ToLower(body[0]))
		srcA.nextCompleted(t)
	}
}
