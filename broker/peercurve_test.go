package broker_test

import (
	"strings"
	"testing"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/broker/curve"
)

// curvePeers is two clusters peered over CURVE: A has a Source and no
// worker, B an echo worker (itself a CURVE client of B).
type curvePeers struct {
	a, b   cluster
	kA, kB curve.KeyPair
	eA, eB *env
	srcA   *fakeSource
}

func mustKeyPair(t *testing.T) curve.KeyPair {
	t.Helper()
	kp, err := curve.NewKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// startCurvePeers starts A and B; before is called with B's cloud
// endpoint before either starts.
func startCurvePeers(t *testing.T, before func(bCloud string)) *curvePeers {
	t.Helper()
	needCurve(t)
	p := &curvePeers{a: cluster{"A", freeTCP(t), freeTCP(t)}, b: cluster{"B", freeTCP(t), freeTCP(t)},
		kA: mustKeyPair(t), kB: mustKeyPair(t), srcA: newFakeSource()}
	wk := mustKeyPair(t)
	cfgA, cfgB := testConfig(t), testConfig(t)
	cfgA.Peering, cfgB.Peering = peeringOf(p.a, p.b), peeringOf(p.b, p.a)
	cfgA.Peering.Peers[0].Public, cfgB.Peering.Peers[0].Public = p.kB.Public, p.kA.Public
	cfgA.Curve = &broker.CurveConfig{Server: p.kA, Allow: func(string) bool { return false }}
	cfgB.Curve = &broker.CurveConfig{Server: p.kB, Allow: func(k string) bool { return k == wk.Public }}
	if before != nil {
		before(p.b.cloud)
	}
	p.eA = start(t, cfgA, func(br *broker.Broker) { br.SetSource(p.srcA) })
	p.eB = start(t, cfgB, nil)
	runWorker(t, p.eB.ep, "echo", &curve.ClientKeys{ServerPublic: p.kB.Public, Public: wk.Public, Secret: wk.Secret})
	p.eB.waitWorkers("echo", 1)
	p.eA.waitStats("B's capacity heard over CURVE", func(st broker.Stats) bool {
		return len(st.Peers) == 1 && st.Peers[0].Alive && st.Peers[0].Spare["echo"] == 1
	})
	return p
}

// forward has A forward a job to B and returns B's worker's answer.
func (p *curvePeers) forward(t *testing.T, token, body string) []string {
	t.Helper()
	p.srcA.add("echo", token, body)
	p.eA.b.Wake("echo")
	c := p.srcA.nextCompleted(t)
	if string(c.lease.Token) != token {
		t.Fatalf("completed %s, want %s", c.lease.Token, token)
	}
	p.eA.b.Release(c.lease.ID)
	return c.reply
}

// With CURVE on and the peers' keys given, clusters peer over CURVE:
// work goes to the peer and its answer comes back. A connection to the
// cloud endpoint with a key that is not a peer's is refused at its
// handshake, and what it sends is never served: before, with CURVE on,
// the peering links took plain connections, and a job sent to the cloud
// endpoint under a peer's name was served.
func TestPeeringOverCurve(t *testing.T) {
	p := startCurvePeers(t, nil)
	if got := p.forward(t, "T1", "hello"); !equal(got, []string{"echo:hello"}) {
		t.Fatalf("A's Completed reply %q", got)
	}
	if st := p.eB.stats(); st.CloudRequests != 1 {
		t.Fatalf("B served %d cloud requests, want 1", st.CloudRequests)
	}

	stranger := mustKeyPair(t)
	denied := p.eB.b.AuthStats().Denied
	sk, err := p.eB.zctx.NewSocket(zmq.DEALER)
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Close()
	_ = sk.SetLinger(0)
	_ = sk.SetIdentity("A") // a peer's name
	ck := curve.ClientKeys{ServerPublic: p.kB.Public, Public: stranger.Public, Secret: stranger.Secret}
	if err := ck.Apply(sk); err != nil {
		t.Fatal(err)
	}
	if err := sk.Connect(p.b.cloud); err != nil {
		t.Fatal(err)
	}
	if _, err := sk.SendMessage("", "TPEER01", "REQUEST", "forged.1", "echo", "forged"); err != nil {
		t.Fatal(err)
	}
	(&curveEnv{env: p.eB}).waitDenied(denied + 1)
	// The worker is idle and B would have served a request by now, had it
	// come (the denial is the handshake the request waited on).
	if st := p.eB.stats(); st.CloudRequests != 1 {
		t.Fatalf("B served %d cloud requests after a stranger's, want 1 (the peer's)", st.CloudRequests)
	}
	// The peers' own links still carry work.
	if got := p.forward(t, "T2", "again"); !equal(got, []string{"echo:again"}) {
		t.Fatalf("A's Completed reply %q", got)
	}
}

// Peering keys for some peers and not others, or without the broker's
// own key pair, are refused: the links are CURVE for all or none.
func TestPeeringCurveConfigValidation(t *testing.T) {
	needCurve(t)
	k := mustKeyPair(t)
	self := cluster{"A", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2"}
	b := cluster{"B", "tcp://127.0.0.1:3", "tcp://127.0.0.1:4"}
	c := cluster{"C", "tcp://127.0.0.1:5", "tcp://127.0.0.1:6"}
	for _, tc := range []struct {
		name  string
		setup func(*broker.Config)
		want  string
	}{
		{"mixed", func(cfg *broker.Config) { cfg.Peering.Peers[0].Public = k.Public }, "1 of 2 peers have a CURVE key"},
		{"no own keys", func(cfg *broker.Config) {
			cfg.Curve = nil
			cfg.Peering.Peers[0].Public, cfg.Peering.Peers[1].Public = k.Public, k.Public
		}, "need the broker's CURVE key pair"},
		{"bad key", func(cfg *broker.Config) {
			cfg.Peering.Peers[0].Public, cfg.Peering.Peers[1].Public = "short", k.Public
		}, "peer B: public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Curve = &broker.CurveConfig{Server: k, Allow: func(string) bool { return true }}
			cfg.Peering = peeringOf(self, b, c)
			tc.setup(&cfg)
			_, err := broker.New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error with %q", err, tc.want)
			}
		})
	}
}
