package binarystar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/titanicmq/titanic/internal/harness"
)

// bound is the longest any wait in these tests may take.
const bound = 5 * time.Second

const testHeartbeat = 50 * time.Millisecond

// testMissed gives a 200 ms peer timeout: short, yet four heartbeats of
// slack, so that a loaded test machine (-race) does not lose its peer.
const testMissed = 4

// logSink sends a node's log to the test log and keeps it for assertions.
type logSink struct {
	mu    sync.Mutex
	t     testing.TB
	lines []string
	done  bool
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	line := strings.TrimRight(string(p), "\n")
	s.lines = append(s.lines, line)
	if !s.done { // t.Log after the test has ended panics
		s.t.Log(line)
	}
	return len(p), nil
}

func (s *logSink) contains(sub string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

// freeEndpoint returns an endpoint whose port stays this test's until it
// ends (the peer must know a PUB's port before it binds, so "tcp://...:*"
// will not do; a port picked by listening and closing may be handed out
// again, to this test or another, before its node binds it).
func freeEndpoint(t *testing.T) string {
	t.Helper()
	return harness.ReservedEndpoint(t)
}

type change struct{ old, new State }

// running is a Node whose Run goroutine the test started.
type running struct {
	*Node
	name    string
	cancel  context.CancelFunc
	errc    chan error // Run's result, once
	changes chan change
	logs    *logSink
}

func testConfig(role Role, local, peer string) Config {
	return Config{Role: role, Local: local, Peer: peer, Heartbeat: testHeartbeat, Missed: testMissed}
}

// start runs a node until the test ends (or stop is called).
func start(t *testing.T, name string, cfg Config) *running {
	t.Helper()
	sink := &logSink{t: t}
	t.Cleanup(func() { sink.mu.Lock(); sink.done = true; sink.mu.Unlock() })
	cfg.Logger = slog.New(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
	r := &running{name: name, errc: make(chan error, 1), changes: make(chan change, 64), logs: sink}
	cfg.OnChange = func(old, new State) { r.changes <- change{old, new} }
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("%s: New: %v", name, err)
	}
	r.Node = n
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.errc <- n.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	select {
	case <-n.Ready():
	case err := <-r.errc:
		t.Fatalf("%s: Run returned before Ready: %v", name, err)
	case <-time.After(bound):
		t.Fatalf("%s: not ready after %v", name, bound)
	}
	return r
}

// stop cancels Run and waits for it; it fails the test if Run does not
// return nil. Calling it again is harmless.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case <-r.Done():
	case <-time.After(bound):
		t.Fatalf("%s: Run still running %v after cancel", r.name, bound)
	}
	select {
	case err := <-r.errc:
		if err != nil {
			t.Errorf("%s: Run: %v", r.name, err)
		}
	default: // already collected
	}
}

// waitFor polls cond until it holds, failing after bound with what.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", bound, what)
		}
		<-tick.C
	}
}

func (r *running) waitState(t *testing.T, want State) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s to be %v (is %v)", r.name, want, r.State()), func() bool { return r.State() == want })
}

// expectChanges checks the OnChange calls seen so far, in order.
func (r *running) expectChanges(t *testing.T, want ...change) {
	t.Helper()
	for _, w := range want {
		select {
		case got := <-r.changes:
			if got != w {
				t.Fatalf("%s: change %v→%v, want %v→%v", r.name, got.old, got.new, w.old, w.new)
			}
		case <-time.After(bound):
			t.Fatalf("%s: no change %v→%v", r.name, w.old, w.new)
		}
	}
	select {
	case got := <-r.changes:
		t.Fatalf("%s: unexpected change %v→%v", r.name, got.old, got.new)
	default:
	}
}

// runErr waits for Run's result.
func (r *running) runErr(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.errc:
		return err
	case <-time.After(bound):
		t.Fatalf("%s: Run did not return", r.name)
		return nil
	}
}

func TestPairFailoverAndRestart(t *testing.T) {
	pEP, bEP := freeEndpoint(t), freeEndpoint(t)
	pCfg := testConfig(Primary, pEP, bEP)
	p := start(t, "primary", pCfg)
	b := start(t, "backup", testConfig(Backup, bEP, pEP))

	// Start: the primary goes active, the backup passive.
	p.waitState(t, StateActive)
	b.waitState(t, StatePassive)
	p.expectChanges(t, change{StatePrimary, StateActive})
	b.expectChanges(t, change{StateBackup, StatePassive})
	waitFor(t, "both to hear their peer", func() bool { return p.PeerAlive() && b.PeerAlive() })
	if !p.ClientRequest() {
		t.Fatal("active primary refused a client")
	}
	if b.ClientRequest() {
		t.Fatal("passive backup accepted a client while the primary is alive")
	}

	// Kill the primary. Silence alone must not make the backup active.
	p.stop(t)
	if p.ClientRequest() {
		t.Fatal("stopped primary accepted a client")
	}
	waitFor(t, "backup to notice the primary's silence", func() bool { return !b.PeerAlive() })
	if s := b.State(); s != StatePassive {
		t.Fatalf("backup went %v on silence alone", s)
	}
	// The client vote.
	if !b.ClientRequest() {
		t.Fatal("backup refused the client vote after the primary expired")
	}
	if s := b.State(); s != StateActive {
		t.Fatalf("backup is %v after accepting the vote", s)
	}
	b.expectChanges(t, change{StatePassive, StateActive})

	// Restart the primary: it hears the active backup and goes passive.
	p2 := start(t, "primary-2", pCfg)
	p2.waitState(t, StatePassive)
	p2.expectChanges(t, change{StatePrimary, StatePassive})
	waitFor(t, "backup to hear the restarted primary", b.PeerAlive)
	if p2.ClientRequest() {
		t.Fatal("restarted passive primary accepted a client")
	}
	if !b.ClientRequest() || b.State() != StateActive {
		t.Fatalf("backup should stay active, is %v", b.State())
	}
	b.expectChanges(t)
	for _, r := range []*running{b, p2} {
		select {
		case err := <-r.errc:
			t.Fatalf("%s: Run returned: %v", r.name, err)
		default:
		}
		if st := r.Stats(); st.Sent == 0 || st.Received == 0 || st.Malformed != 0 || st.SendErrors != 0 {
			t.Errorf("%s: stats %+v", r.name, st)
		}
	}
}

func TestPrimaryAloneTakesClientVote(t *testing.T) {
	// A longer heartbeat, so that "refused at once" holds on a slow machine.
	cfg := testConfig(Primary, freeEndpoint(t), freeEndpoint(t))
	cfg.Heartbeat = 250 * time.Millisecond
	cfg.Missed = 2
	before := time.Now()
	p := start(t, "primary", cfg)
	ready := time.Now()
	if p.ClientRequest() {
		if time.Since(before) < p.PeerTimeout() {
			t.Fatal("primary accepted a client before the peer timeout")
		}
		t.Skip("machine too slow to check the refusal")
	}
	if s := p.State(); s != StatePrimary {
		t.Fatalf("state %v, want PRIMARY", s)
	}
	// Wait out the timeout itself: the expiry was armed before Ready.
	time.Sleep(time.Until(ready.Add(p.PeerTimeout())))
	if !p.ClientRequest() {
		t.Fatal("primary refused the client after the peer timeout")
	}
	if s := p.State(); s != StateActive {
		t.Fatalf("state %v, want ACTIVE", s)
	}
	p.expectChanges(t, change{StatePrimary, StateActive})
}

func TestBackupAloneNeverServes(t *testing.T) {
	b := start(t, "backup", testConfig(Backup, freeEndpoint(t), freeEndpoint(t)))
	ready := time.Now()
	time.Sleep(time.Until(ready.Add(b.PeerTimeout() + testHeartbeat)))
	if b.ClientRequest() {
		t.Fatal("backup that never saw its primary accepted a client")
	}
	if s := b.State(); s != StateBackup {
		t.Fatalf("state %v, want BACKUP", s)
	}
}

// fakePeer is a raw PUB socket standing in for a peer; only the test
// goroutine uses it.
type fakePeer struct {
	zctx *zmq.Context
	pub  *zmq.Socket
}

func newFakePeer(t *testing.T, endpoint string) *fakePeer {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := zctx.NewSocket(zmq.PUB)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePeer{zctx: zctx, pub: pub}
	t.Cleanup(func() {
		_ = pub.Close()
		_ = zctx.Term()
	})
	if err := pub.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	if err := pub.Bind(endpoint); err != nil {
		t.Fatalf("fake peer bind %s: %v", endpoint, err)
	}
	return f
}

// sendUntil publishes msg (its frames) every few milliseconds, since a SUB
// misses what is sent before it has connected, until cond holds.
func (f *fakePeer) sendUntil(t *testing.T, what string, cond func() bool, msg ...string) {
	t.Helper()
	deadline := time.Now().Add(bound)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v sending %q, waiting for %s", bound, msg, what)
		}
		parts := make([]any, len(msg))
		for i, m := range msg {
			parts[i] = m
		}
		if _, err := f.pub.SendMessageDontwait(parts...); err != nil {
			t.Fatalf("fake peer send: %v", err)
		}
		<-tick.C
	}
}

// Two actives that hear each other (a healed split brain): the primary
// stays active and keeps running, the backup yields and goes passive.
func TestDualActivePrimaryStays(t *testing.T) {
	fakeEP := freeEndpoint(t)
	fake := newFakePeer(t, fakeEP)
	n := start(t, "primary", testConfig(Primary, freeEndpoint(t), fakeEP))
	fake.sendUntil(t, "primary to go active", func() bool { return n.State() == StateActive }, "BSTAR1 2")
	fake.sendUntil(t, "the primary to log the healed split", func() bool { return n.logs.contains("split brain healed") }, "BSTAR1 3")
	select {
	case <-n.Done():
		t.Fatalf("the primary stopped on dual actives: %v", n.runErr(t))
	default:
	}
	if n.State() != StateActive || !n.ClientRequest() {
		t.Fatalf("primary state %v after dual actives, want ACTIVE and serving", n.State())
	}
}

func TestDualActiveBackupYields(t *testing.T) {
	fakeEP := freeEndpoint(t)
	fake := newFakePeer(t, fakeEP)
	n := start(t, "backup", testConfig(Backup, freeEndpoint(t), fakeEP))
	fake.sendUntil(t, "backup to go passive", func() bool { return n.State() == StatePassive }, "BSTAR1 3")
	// The primary falls silent; a client votes the backup active.
	deadline := time.Now().Add(10 * time.Second)
	for !n.ClientRequest() {
		if time.Now().After(deadline) {
			t.Fatal("backup not voted active after its peer fell silent")
		}
		time.Sleep(testHeartbeat / 2)
	}
	if n.State() != StateActive {
		t.Fatalf("backup %v after the vote, want ACTIVE", n.State())
	}
	// The primary is heard again, active: the backup yields.
	fake.sendUntil(t, "backup to yield", func() bool { return n.State() == StatePassive }, "BSTAR1 3")
	select {
	case <-n.Done():
		t.Fatalf("the backup stopped on dual actives: %v", n.runErr(t))
	default:
	}
	if n.ClientRequest() {
		t.Fatal("a backup that yielded still accepts clients")
	}
}

// Both passive and hearing each other: the primary takes over.
func TestDualPassivePrimaryTakesOver(t *testing.T) {
	fakeEP := freeEndpoint(t)
	fake := newFakePeer(t, fakeEP)
	n := start(t, "primary", testConfig(Primary, freeEndpoint(t), fakeEP))
	fake.sendUntil(t, "primary to go passive", func() bool { return n.State() == StatePassive }, "BSTAR1 3")
	fake.sendUntil(t, "primary to take over", func() bool { return n.State() == StateActive }, "BSTAR1 4")
	select {
	case <-n.Done():
		t.Fatalf("the primary stopped on dual passives: %v", n.runErr(t))
	default:
	}
}

func TestMalformedStateDropped(t *testing.T) {
	fakeEP := freeEndpoint(t)
	fake := newFakePeer(t, fakeEP)
	n := start(t, "primary", testConfig(Primary, freeEndpoint(t), fakeEP))
	bad := [][]string{
		{"3"}, // the Guide's bare format
		{"BSTAR1 9"},
		{"BSTAR2 2"},
		{"BSTAR1 2", "extra"},
		{""},
	}
	for i, msg := range bad {
		want := uint64(i + 1)
		fake.sendUntil(t, fmt.Sprintf("%q to be counted", msg),
			func() bool { return n.Stats().Malformed >= want }, msg...)
	}
	// Garbage is no sign of life and no event.
	if n.PeerAlive() || n.State() != StatePrimary || n.Stats().Received != 0 {
		t.Fatalf("malformed messages had an effect: alive %v state %v stats %+v", n.PeerAlive(), n.State(), n.Stats())
	}
	if !n.logs.contains("malformed state message dropped") {
		t.Error("malformed message not logged")
	}
	// The node still listens: a valid BACKUP makes it active.
	fake.sendUntil(t, "primary to go active", func() bool { return n.State() == StateActive }, "BSTAR1 2")
	if !n.PeerAlive() || n.Stats().Received == 0 {
		t.Fatalf("valid state not seen: alive %v stats %+v", n.PeerAlive(), n.Stats())
	}
}

func TestSameRolePairIsReported(t *testing.T) {
	aEP, bEP := freeEndpoint(t), freeEndpoint(t)
	a := start(t, "primary-a", testConfig(Primary, aEP, bEP))
	b := start(t, "primary-b", testConfig(Primary, bEP, aEP))
	waitFor(t, "both to hear their peer", func() bool { return a.PeerAlive() && b.PeerAlive() })
	waitFor(t, "the misconfiguration to be logged", func() bool {
		return a.logs.contains("same role") && b.logs.contains("same role")
	})
	// As in the Guide, two primaries ignore each other and never serve.
	for _, r := range []*running{a, b} {
		if r.ClientRequest() || r.State() != StatePrimary {
			t.Errorf("%s: state %v, or accepted a client", r.name, r.State())
		}
	}
}

func TestNodeConfig(t *testing.T) {
	good := Config{Role: Primary, Local: "tcp://127.0.0.1:5003", Peer: "tcp://127.0.0.1:5004"}
	n, err := New(good)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if n.PeerTimeout() != 2*time.Second || n.State() != StatePrimary || n.PeerAlive() {
		t.Fatalf("defaults: timeout %v state %v alive %v", n.PeerTimeout(), n.State(), n.PeerAlive())
	}
	if n.ClientRequest() {
		t.Fatal("ClientRequest before Run accepted")
	}
	for name, mut := range map[string]func(*Config){
		"no role":          func(c *Config) { c.Role = 0 },
		"bad role":         func(c *Config) { c.Role = 7 },
		"no local":         func(c *Config) { c.Local = " " },
		"no peer":          func(c *Config) { c.Peer = "" },
		"self peer":        func(c *Config) { c.Peer = c.Local },
		"negative beat":    func(c *Config) { c.Heartbeat = -time.Second },
		"negative missed":  func(c *Config) { c.Missed = -1 },
		"several at once":  func(c *Config) { c.Local, c.Peer = "", "" },
		"backup self peer": func(c *Config) { c.Role, c.Peer = Backup, c.Local },
	} {
		c := good
		mut(&c)
		if _, err := New(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: New: %v, want ErrConfig", name, err)
		}
	}
}

func TestRunErrors(t *testing.T) {
	n, err := New(Config{Role: Backup, Local: "bogus://nowhere", Peer: "tcp://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "bogus://nowhere") {
		t.Fatalf("Run with a bad endpoint: %v", err)
	}
	select {
	case <-n.Done():
	default:
		t.Fatal("Done not closed after Run returned")
	}
	if err := n.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Run: %v, want ErrClosed", err)
	}

	// A cancelled context ends Run cleanly.
	m, err := New(testConfig(Primary, freeEndpoint(t), freeEndpoint(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatalf("Run with a cancelled context: %v", err)
	}
}
