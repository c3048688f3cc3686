package broker_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/broker/curve"
	tclient "github.com/titanicmq/titanic/client"
	tworker "github.com/titanicmq/titanic/worker"
)

// denyTimeout is how long a shut-out client waits for each try: nothing
// can come, so it only needs to be long enough for an allowed one.
const denyTimeout = 400 * time.Millisecond

// curveEnv is a broker running with CURVE and an allowlist directory.
type curveEnv struct {
	*env
	server   curve.KeyPair
	keyDir   string // every identity's key files
	allowDir string
	allow    *curve.Allowlist
}

func needCurve(t testing.TB) {
	t.Helper()
	if !zmq.HasCurve() {
		t.Skip("skipping: libzmq built without CURVE")
	}
}

// startCurve runs a broker with CURVE whose allowlist starts empty.
func startCurve(t *testing.T) *curveEnv {
	t.Helper()
	needCurve(t)
	keyDir, allowDir := t.TempDir(), t.TempDir()
	server, err := curve.Keygen(keyDir, "broker")
	if err != nil {
		t.Fatalf("Keygen: %v", err)
	}
	allow, err := curve.Load(allowDir)
	if err != nil {
		t.Fatalf("allowlist: %v", err)
	}
	cfg := testConfig(t)
	cfg.Curve = &broker.CurveConfig{Server: server, Allow: allow.Allowed}
	return &curveEnv{env: start(t, cfg, nil), server: server, keyDir: keyDir, allowDir: allowDir, allow: allow}
}

// identity makes a key pair named name; allowed puts its .pub on the
// allowlist (and reloads it).
func (c *curveEnv) identity(name string, allowed bool) *curve.ClientKeys {
	c.t.Helper()
	kp, err := curve.Keygen(c.keyDir, name)
	if err != nil {
		c.t.Fatalf("Keygen %s: %v", name, err)
	}
	if allowed {
		c.admit(name)
	}
	return &curve.ClientKeys{ServerPublic: c.server.Public, Public: kp.Public, Secret: kp.Secret}
}

// admit copies name.pub to the allowlist directory and reloads it.
func (c *curveEnv) admit(name string) {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.keyDir, name+".pub"))
	if err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.allowDir, name+".pub"), b, 0o644); err != nil {
		c.t.Fatal(err)
	}
	if err := c.allow.Reload(); err != nil {
		c.t.Fatalf("Reload: %v", err)
	}
}

// waitDenied waits until the broker has denied at least n handshakes.
func (c *curveEnv) waitDenied(n uint64) curve.ZAPStats {
	c.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		st := c.b.AuthStats()
		if st.Denied >= n {
			return st
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the broker denied %d handshakes within %s, want at least %d (stats %+v)", st.Denied, waitFor, n, st)
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
}

// newClient returns a client of endpoint (keys nil: plain).
func newClient(t *testing.T, endpoint string, keys *curve.ClientKeys, timeout time.Duration) *tclient.Client {
	t.Helper()
	cfg := tclient.Config{Brokers: []string{endpoint}, Timeout: timeout, Retries: 1, Curve: keys}
	cfg.Logger = testConfig(t).Logger
	c, err := tclient.New(cfg)
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// runWorker runs an echo worker for service until the test ends: it
// answers "echo:" + each body frame.
func runWorker(t *testing.T, endpoint, service string, keys *curve.ClientKeys) *tworker.Worker {
	t.Helper()
	cfg := tworker.Config{
		Brokers:           []string{endpoint},
		Service:           service,
		HeartbeatInterval: 50 * time.Millisecond, // testConfig's
		ReconnectDelay:    50 * time.Millisecond,
		Logger:            testConfig(t).Logger,
		Curve:             keys,
	}
	w, err := tworker.New(cfg, func(_ context.Context, req [][]byte) ([][]byte, error) {
		out := make([][]byte, len(req))
		for i, f := range req {
			out[i] = append([]byte("echo:"), f...)
		}
		return out, nil
	})
	if err != nil {
		t.Fatalf("worker.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("worker Run: %v", err)
			}
		case <-time.After(waitFor):
			t.Errorf("worker Run did not return within %s", waitFor)
		}
	})
	return w
}

// request sends a plain MDP request and returns the reply's first frame.
func request(t *testing.T, c *tclient.Client, service, body string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	rep, err := c.Request(ctx, service, [][]byte{[]byte(body)})
	if err != nil {
		return "", err
	}
	if len(rep) != 1 {
		t.Fatalf("reply of %d frames: %q", len(rep), rep)
	}
	return string(rep[0]), nil
}

func TestCurveAllowedClientAndWorker(t *testing.T) {
	e := startCurve(t)
	runWorker(t, e.ep, "echo", e.identity("worker", true))
	e.waitWorkers("echo", 1)
	c := newClient(t, e.ep, e.identity("alice", true), 2*time.Second)
	got, err := request(t, c, "echo", "hello over CURVE")
	if err != nil {
		t.Fatalf("allowed client: %v", err)
	}
	if got != "echo:hello over CURVE" {
		t.Fatalf("reply %q", got)
	}
	st := e.b.AuthStats()
	if st.Allowed < 2 || st.Denied != 0 {
		t.Errorf("auth stats %+v: want the worker and the client allowed, no denial", st)
	}
	t.Logf("auth stats %+v", st)
}

// An unknown key gets nothing through: no request, no MMI lookup. Its
// handshakes are denied and counted. Once its .pub is added and the
// allowlist reloaded, the same key works.
func TestCurveUnknownKeyThenReload(t *testing.T) {
	e := startCurve(t)
	runWorker(t, e.ep, "echo", e.identity("worker", true))
	e.waitWorkers("echo", 1)
	mallory := e.identity("mallory", false)
	c := newClient(t, e.ep, mallory, denyTimeout)

	if got, err := request(t, c, "echo", "let me in"); !errors.Is(err, tclient.ErrUnavailable) {
		t.Fatalf("unknown key: reply %q, err %v; want ErrUnavailable (nothing through)", got, err)
	}
	if got, err := request(t, c, "mmi.service", "echo"); !errors.Is(err, tclient.ErrUnavailable) {
		t.Fatalf("unknown key, MMI lookup: reply %q, err %v; want ErrUnavailable", got, err)
	}
	auth := e.waitDenied(1)
	st := e.stats()
	if st.Requests != 0 || st.MMIRequests != 0 || st.RequestsDispatched != 0 {
		t.Fatalf("the broker received requests from a denied key: %+v", st.Counters)
	}
	t.Logf("denied as expected: auth stats %+v", auth)

	e.admit("mallory")
	if e.allow.Len() != 2 {
		t.Fatalf("allowlist holds %d keys after adding mallory, want 2", e.allow.Len())
	}
	got, err := request(t, c, "echo", "now allowed")
	if err != nil {
		t.Fatalf("after Reload: %v", err)
	}
	if got != "echo:now allowed" {
		t.Fatalf("after Reload: reply %q", got)
	}
}

// A client without CURVE cannot talk to a CURVE broker: its handshake
// fails on the mechanism.
func TestCurvePlainClientGetsNothing(t *testing.T) {
	e := startCurve(t)
	runWorker(t, e.ep, "echo", e.identity("worker", true))
	e.waitWorkers("echo", 1)
	c := newClient(t, e.ep, nil, denyTimeout)
	if got, err := request(t, c, "echo", "plain text"); !errors.Is(err, tclient.ErrUnavailable) {
		t.Fatalf("plain client: reply %q, err %v; want ErrUnavailable", got, err)
	}
	// A raw plain DEALER too: no answer to a well-formed MMI request.
	p := e.dealer("raw plain")
	p.send("", hdrClient, "mmi.service", "echo")
	if m := p.recvWithin(denyTimeout); m != nil {
		t.Fatalf("plain raw peer got %q", m)
	}
	if st := e.stats(); st.Requests != 0 || st.MMIRequests != 0 {
		t.Fatalf("the broker received requests over plain TCP: %+v", st.Counters)
	}
}

// A worker with an unknown key cannot register: the broker's worker count
// stays 0, while an allowed worker registers at once.
func TestCurveUnknownWorkerCannotRegister(t *testing.T) {
	e := startCurve(t)
	w := runWorker(t, e.ep, "secret.work", e.identity("rogue", false))
	e.waitDenied(1)
	// Several heartbeat intervals (50ms) for a READY to show, were it
	// let through.
	time.Sleep(300 * time.Millisecond)
	st := e.stats()
	if st.Workers != 0 {
		t.Fatalf("a worker with an unknown key registered: %d workers", st.Workers)
	}
	if s, ok := st.Service("secret.work"); ok {
		t.Fatalf("the broker knows the rogue's service: %+v", s)
	}
	if ws := w.Stats(); ws.Requests != 0 {
		t.Fatalf("the rogue worker received %d requests", ws.Requests)
	}
	// Control: the same service with an allowed key registers.
	runWorker(t, e.ep, "secret.work", e.identity("good", true))
	e.waitWorkers("secret.work", 1)
	if st := e.stats(); st.Workers != 1 {
		t.Fatalf("%d workers, want only the allowed one", st.Workers)
	}
}

func TestCurveConfigValidation(t *testing.T) {
	needCurve(t)
	good, _ := curve.NewKeyPair()
	other, _ := curve.NewKeyPair()
	allow := func(string) bool { return true }
	cases := []struct {
		name string
		cc   broker.CurveConfig
		want string
	}{
		{"no allow", broker.CurveConfig{Server: good}, "no Allow function"},
		{"short key", broker.CurveConfig{Server: curve.KeyPair{Public: "abc", Secret: good.Secret}, Allow: allow}, "3 characters"},
		{"mismatch", broker.CurveConfig{Server: curve.KeyPair{Public: good.Public, Secret: other.Secret}, Allow: allow}, "does not belong"},
		{"empty", broker.CurveConfig{Allow: allow}, "0 characters"},
		{"small max message", broker.CurveConfig{Server: good, Allow: allow}, "CURVE handshakes need at least"},
	}
	for _, c := range cases {
		cfg := testConfig(t)
		if c.name == "small max message" {
			cfg.MaxMsgSize = 512
		}
		cc := c.cc
		cfg.Curve = &cc
		_, err := broker.New(cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: New: %v; want an error saying %q", c.name, err, c.want)
		}
	}
	// Clients and workers check their keys too.
	if _, err := tclient.New(tclient.Config{Curve: &curve.ClientKeys{ServerPublic: "x", Public: good.Public, Secret: good.Secret}}); !errors.Is(err, tclient.ErrConfig) {
		t.Errorf("client with a bad server key: %v", err)
	}
	_, err := tworker.New(tworker.Config{Brokers: []string{"tcp://127.0.0.1:1"}, Service: "s",
		Curve: &curve.ClientKeys{ServerPublic: good.Public, Public: good.Public, Secret: other.Secret}},
		func(context.Context, [][]byte) ([][]byte, error) { return nil, nil })
	if !errors.Is(err, tworker.ErrConfig) {
		t.Errorf("worker with a mismatched pair: %v", err)
	}
}
