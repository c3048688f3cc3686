package broker_test

import (
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker"
)

// TestPeerLeaseExpires: a peer that advertises capacity but drops the
// forwarded request (its state never counts it as held) does not keep the
// job: after PeeringConfig.LeaseTimeout it fails back to the Source for
// redelivery, and the peer's reserved unit is released.
func TestPeerLeaseExpires(t *testing.T) {
	a := cluster{"A", freeTCP(t), freeTCP(t)}
	b := cluster{"B", freeTCP(t), freeTCP(t)}
	cfgA := testConfig(t)
	cfgA.Peering = peeringOf(a, b)
	cfgA.Peering.LeaseTimeout = 500 * time.Millisecond
	srcA := newFakeSource()
	eA := start(t, cfgA, func(br *broker.Broker) { br.SetSource(srcA) })

	// B: a raw cloud frontend that drops what it gets, and a state
	// publisher that advertises one echo worker and holds nothing.
	front, err := eA.zctx.NewSocket(zmq.ROUTER)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := eA.zctx.NewSocket(zmq.PUB)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*zmq.Socket{front, pub} {
		_ = s.SetLinger(0)
		t.Cleanup(func() { s.Close() })
	}
	_ = front.SetIdentity("B")
	if err := front.Bind(b.cloud); err != nil {
		t.Fatal(err)
	}
	if err := pub.Bind(b.state); err != nil {
		t.Fatal(err)
	}
	_ = front.SetRcvtimeo(20 * time.Millisecond)
	requests := 0
	deadline := time.Now().Add(waitFor)
	var failed failure
	srcA.add("echo", "T1", "hello")
	for done := false; !done; {
		if time.Now().After(deadline) {
			t.Fatalf("no expiry within %s; %d requests dropped", waitFor, requests)
		}
		_, _ = pub.SendMessage("TPEER01", "STATE", "B", "run1", "echo", "1")
		if msg, err := front.RecvMessage(0); err == nil && len(msg) >= 4 && msg[3] == "REQUEST" {
			requests++ // dropped
		}
		eA.b.Wake("echo")
		select {
		case f := <-srcA.failed:
			failed, done = f, true
		default:
		}
	}
	if string(failed.lease.Token) != "T1" || !strings.Contains(failed.reason, "lease expired") {
		t.Fatalf("Failed(%+v, %q)", failed.lease, failed.reason)
	}
	if requests != 1 {
		t.Fatalf("the peer got %d requests before the expiry, want 1", requests)
	}
	st := eA.waitStats("B's unit released", func(st broker.Stats) bool {
		return len(st.Peers) == 1 && st.Peers[0].Reserved["echo"] == 0
	})
	if st.PeerLeasesExpired != 1 || st.PeerLeasesLost != 0 {
		t.Fatalf("counters %+v", st.Counters)
	}
}
