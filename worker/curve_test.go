package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/broker/curve"
)

// A worker with CURVE keys registers with a CURVE broker that allows its
// key; one whose key is not allowed never does.
func TestCurveWorker(t *testing.T) {
	if !zmq.HasCurve() {
		t.Skip("skipping: libzmq built without CURVE")
	}
	const interval = 50 * time.Millisecond
	server, _ := curve.NewKeyPair()
	good, _ := curve.NewKeyPair()
	bad, _ := curve.NewKeyPair()
	b, err := broker.New(broker.Config{
		Endpoints:         []string{"tcp://127.0.0.1:*"},
		HeartbeatInterval: interval,
		Logger:            testLogger(t),
		Curve:             &broker.CurveConfig{Server: server, Allow: func(k string) bool { return k == good.Public }},
	})
	if err != nil {
		t.Fatalf("broker.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	brokerErr := make(chan error, 1)
	go func() { brokerErr <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-brokerErr:
			if err != nil {
				t.Errorf("broker Run: %v", err)
			}
		case <-time.After(wait):
			t.Errorf("broker did not stop within %s", wait)
		}
	})
	select {
	case <-b.Ready():
	case err := <-brokerErr:
		t.Fatalf("broker Run: %v", err)
	case <-time.After(wait):
		t.Fatalf("broker not ready within %s", wait)
	}
	ep := b.Endpoints()[0]
	workers := func(service string) int {
		sctx, scancel := context.WithTimeout(context.Background(), wait)
		defer scancel()
		st, err := b.Stats(sctx)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := st.Service(service)
		return s.Workers
	}

	startWorker(t, Config{Brokers: []string{ep}, Service: "denied", HeartbeatInterval: interval, ReconnectDelay: interval,
		Curve: &CurveClient{ServerPublic: server.Public, Public: bad.Public, Secret: bad.Secret}}, echo)
	startWorker(t, Config{Brokers: []string{ep}, Service: "allowed", HeartbeatInterval: interval,
		Curve: &CurveClient{ServerPublic: server.Public, Public: good.Public, Secret: good.Secret}}, echo)

	deadline := time.Now().Add(wait)
	for workers("allowed") != 1 || b.AuthStats().Denied == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("within %s: allowed workers %d, auth %+v; want 1 and a denial", wait, workers("allowed"), b.AuthStats())
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	time.Sleep(5 * interval)
	if n := workers("denied"); n != 0 {
		t.Fatalf("%d workers registered with a key not allowed", n)
	}
}

func TestCurveWorkerConfig(t *testing.T) {
	if !zmq.HasCurve() {
		t.Skip("skipping: libzmq built without CURVE")
	}
	a, _ := curve.NewKeyPair()
	b, _ := curve.NewKeyPair()
	_, err := New(Config{Brokers: []string{"tcp://127.0.0.1:1"}, Service: "s",
		Curve: &CurveClient{ServerPublic: b.Public, Public: a.Public, Secret: b.Secret}}, echo)
	if !errors.Is(err, ErrConfig) || !errors.Is(err, curve.ErrBadKey) {
		t.Fatalf("mismatched pair: %v; want ErrConfig and ErrBadKey", err)
	}
}
