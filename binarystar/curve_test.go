package binarystar

import (
	"errors"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker/curve"
)

func curvePair(t *testing.T) (curve.KeyPair, curve.KeyPair) {
	t.Helper()
	if !zmq.HasCurve() {
		t.Skip("skipping: libzmq built without CURVE")
	}
	a, err := curve.NewKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	b, err := curve.NewKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

func curveOf(own curve.KeyPair, peer string) *CurveConfig {
	return &CurveConfig{Public: own.Public, Secret: own.Secret, PeerPublic: peer}
}

// subscriber connects a SUB to endpoint (keys nil: plain) and reports
// whether it receives a state message within d.
func subscriber(t *testing.T, endpoint string, keys *curve.ClientKeys, d time.Duration) bool {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := zctx.Term(); err != nil {
			t.Errorf("term: %v", err)
		}
	}()
	sub, err := zctx.NewSocket(zmq.SUB)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if keys != nil {
		if err := keys.Apply(sub); err != nil {
			t.Fatal(err)
		}
	}
	if err := setupSub(sub, endpoint, d, curveWireSize, 0, 0); err != nil {
		t.Fatal(err)
	}
	_, err = sub.RecvBytes(0) // the receive timeout is d
	return err == nil
}

// A pair with CURVE on its link works as a plain one; only the peer's key
// may subscribe to a node's state.
func TestPairOverCurve(t *testing.T) {
	pk, bk := curvePair(t)
	pEP, bEP := freeEndpoint(t), freeEndpoint(t)
	pCfg := testConfig(Primary, pEP, bEP)
	pCfg.Curve = curveOf(pk, bk.Public)
	bCfg := testConfig(Backup, bEP, pEP)
	bCfg.Curve = curveOf(bk, pk.Public)
	p := start(t, "primary", pCfg)
	b := start(t, "backup", bCfg)
	p.waitState(t, StateActive)
	b.waitState(t, StatePassive)
	waitFor(t, "both to hear their peer over CURVE", func() bool { return p.PeerAlive() && b.PeerAlive() })

	stranger, _ := curvePair(t)
	if subscriber(t, pEP, nil, 300*time.Millisecond) {
		t.Error("a plain SUB received the primary's state")
	}
	if subscriber(t, pEP, &curve.ClientKeys{ServerPublic: pk.Public, Public: stranger.Public, Secret: stranger.Secret}, 300*time.Millisecond) {
		t.Error("a SUB with an unknown key received the primary's state")
	}
	// Control: the backup's key is let in.
	if !subscriber(t, pEP, &curve.ClientKeys{ServerPublic: pk.Public, Public: bk.Public, Secret: bk.Secret}, bound) {
		t.Error("a SUB with the backup's key received nothing")
	}
	if !p.logs.contains("connection denied") {
		t.Error("the primary did not log the denied key")
	}
}

// Keys that do not match: the nodes never hear each other (and say
// nothing is wrong with the FSM: silence alone changes nothing).
func TestPairCurveWrongPeerKey(t *testing.T) {
	pk, bk := curvePair(t)
	wrong, _ := curvePair(t)
	pEP, bEP := freeEndpoint(t), freeEndpoint(t)
	pCfg := testConfig(Primary, pEP, bEP)
	pCfg.Curve = curveOf(pk, bk.Public)
	bCfg := testConfig(Backup, bEP, pEP)
	bCfg.Curve = curveOf(bk, wrong.Public) // expects another primary
	p := start(t, "primary", pCfg)
	b := start(t, "backup", bCfg)
	time.Sleep(4 * p.PeerTimeout())
	if p.PeerAlive() || b.PeerAlive() {
		t.Fatalf("peer alive with mismatched keys: primary %v backup %v", p.PeerAlive(), b.PeerAlive())
	}
	if r := p.Stats().Received + b.Stats().Received; r != 0 {
		t.Fatalf("%d states received across mismatched keys", r)
	}
}

// A stray plain publisher at the peer's endpoint cannot inject a state
// into a node whose link is CURVE.
func TestPairCurveRejectsPlainPublisher(t *testing.T) {
	pk, bk := curvePair(t)
	pEP, bEP := freeEndpoint(t), freeEndpoint(t)
	pCfg := testConfig(Primary, pEP, bEP)
	pCfg.Curve = curveOf(pk, bk.Public)
	fake := newFakePeer(t, bEP)
	p := start(t, "primary", pCfg)
	until := time.Now().Add(4 * p.PeerTimeout())
	fake.sendUntil(t, "time to pass", func() bool { return time.Now().After(until) }, string(encodeState(StateActive)))
	st := p.Stats()
	if st.Received != 0 || st.Malformed != 0 || p.PeerAlive() {
		t.Fatalf("plain publisher got through: stats %+v, peer alive %v", st, p.PeerAlive())
	}
	if s := p.State(); s != StatePrimary {
		t.Fatalf("primary is %v after the stray publisher's states", s)
	}
}

func TestCurveConfigInvalid(t *testing.T) {
	pk, bk := curvePair(t)
	base := testConfig(Primary, "tcp://127.0.0.1:5003", "tcp://127.0.0.1:5004")
	for name, cc := range map[string]*CurveConfig{
		"short peer key":  {Public: pk.Public, Secret: pk.Secret, PeerPublic: "abc"},
		"mismatched pair": {Public: pk.Public, Secret: bk.Secret, PeerPublic: bk.Public},
		"no secret":       {Public: pk.Public, PeerPublic: bk.Public},
	} {
		c := base
		c.Curve = cc
		if _, err := New(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: New: %v, want ErrConfig", name, err)
		}
	}
	c := base
	c.Curve = curveOf(pk, bk.Public)
	if _, err := New(c); err != nil {
		t.Errorf("valid keys: %v", err)
	}
}
