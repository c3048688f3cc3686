package titanic

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// fakeUsage is a store whose used bytes the test sets.
type fakeUsage struct{ used int64 }

func (u *fakeUsage) Usage() (store.Usage, error) { return store.Usage{FileSize: u.used}, nil }

// newTestAdmission is an admission over cfg (filled), a fake clock and a
// fake store size, without a broker or a store.
func newTestAdmission(t *testing.T, cfg Config) (*admission, *fakeClock, *fakeUsage, *counters) {
	t.Helper()
	clock := newFakeClock()
	cfg.Now = clock.Now
	cfg.fill()
	usage := &fakeUsage{}
	stats := &counters{}
	return newAdmission(cfg, stats, usage, slog.New(slog.NewTextHandler(io.Discard, nil))), clock, usage, stats
}

// refusalText is the text frame of a refusal ("" when out is nil).
func refusalText(out [][]byte) string {
	if len(out) < 2 {
		return ""
	}
	return string(out[1])
}

// client is the one client the tests' requests come from (routes are
// the broker's to make).
var client broker.Client

func TestAdmissionInflight(t *testing.T) {
	a, _, _, stats := newTestAdmission(t, Config{PerClientInflight: 2})
	c1 := client
	for i := range 2 {
		if out := a.admit(c1, false); out != nil {
			t.Fatalf("request %d of 2 refused: %q", i+1, out)
		}
	}
	out := a.admit(c1, false)
	if len(out) == 0 || string(out[0]) != tsp.CodeError || !strings.Contains(refusalText(out), "2 requests in flight") {
		t.Fatalf("third request in flight: %q, want 500 busy: 2 requests in flight", out)
	}
	a.release(c1)
	if out := a.admit(c1, false); out != nil {
		t.Fatalf("request after a release refused: %q", out)
	}
	if got := stats.busy.Load(); got != 1 {
		t.Fatalf("busy = %d, want 1", got)
	}
}

func TestAdmissionRate(t *testing.T) {
	a, clock, _, _ := newTestAdmission(t, Config{SubmitRate: 10, SubmitBurst: 3, PerClientInflight: Unlimited})
	c := client
	for i := range 3 {
		if out := a.admit(c, true); out != nil {
			t.Fatalf("submit %d of the burst refused: %q", i+1, out)
		}
	}
	if out := a.admit(c, true); !strings.Contains(refusalText(out), "over 10 submits/s") {
		t.Fatalf("submit past the burst: %q, want busy over 10 submits/s", out)
	}
	if out := a.admit(c, false); out != nil {
		t.Fatalf("a lookup took a submit token: %q", out)
	}
	clock.add(100 * time.Millisecond) // one token at 10/s
	if out := a.admit(c, true); out != nil {
		t.Fatalf("submit after a refill refused: %q", out)
	}
	if out := a.admit(c, true); out == nil {
		t.Fatal("second submit after one token's refill admitted")
	}
}

// TestAdmissionPrune: a client with a request in flight is kept; once
// it has none and its bucket refilled, it is forgotten.
func TestAdmissionPrune(t *testing.T) {
	a, clock, _, _ := newTestAdmission(t, Config{SubmitRate: 10})
	tracked := func() bool {
		a.limits.mu.Lock()
		defer a.limits.mu.Unlock()
		_, ok := a.limits.clients[client]
		return ok
	}
	a.admit(client, true)
	clock.add(time.Second)
	a.pruneClients()
	if !tracked() {
		t.Fatal("a client with a request in flight was forgotten")
	}
	a.release(client)
	a.pruneClients()
	if tracked() {
		t.Fatal("an idle client with a full bucket was kept")
	}
}

func TestAdmissionBody(t *testing.T) {
	a, _, _, stats := newTestAdmission(t, Config{MaxBody: 10})
	if a.bodyTooLarge(10) {
		t.Fatal("a body at the limit is too large")
	}
	if !a.bodyTooLarge(11) {
		t.Fatal("a body over the limit is not too large")
	}
	if got := stats.badRequests.Load(); got != 1 {
		t.Fatalf("badRequests = %d, want 1", got)
	}
	u, _, _, _ := newTestAdmission(t, Config{MaxBody: Unlimited})
	if u.bodyTooLarge(1 << 30) {
		t.Fatal("Unlimited MaxBody refused a body")
	}
}

// TestAdmissionQuota: the quota refuses on the usage last read (after a
// commit), not on every submit.
func TestAdmissionQuota(t *testing.T) {
	a, _, usage, _ := newTestAdmission(t, Config{Quota: 1000})
	usage.used = 1000
	if out := a.refuseSubmit(false); out != nil {
		t.Fatalf("refused before the usage was read: %q", out)
	}
	a.refreshUsage()
	if out := a.refuseSubmit(false); !strings.Contains(refusalText(out), "store full: 1000 of 1000 bytes used") {
		t.Fatalf("at the quota: %q, want store full", out)
	}
	usage.used = 999
	a.refreshUsage()
	if out := a.refuseSubmit(false); out != nil {
		t.Fatalf("under the quota: %q", out)
	}
}

// TestAdmissionDisk: the reserve refuses submits once free space minus
// the bodies admitted since the last reading is under it, and a reading
// is taken at most every diskCheckEvery on the admission path.
func TestAdmissionDisk(t *testing.T) {
	disk := &fakeDisk{free: 20 << 20, total: 1 << 40}
	a, clock, _, stats := newTestAdmission(t, Config{DiskReserve: 10 << 20, DiskPaths: []string{"/data"}, Statfs: disk.statfs})
	a.refreshDisk(true)
	if out := a.refuseSubmit(false); out != nil {
		t.Fatalf("10 MiB over the reserve: %q", out)
	}
	a.diskSubmitted(6 << 20)
	a.diskCommitted(6<<20, true)
	a.diskSubmitted(6 << 20) // not committed yet: counted all the same
	out := a.refuseSubmit(false)
	if !strings.Contains(refusalText(out), "disk full") {
		t.Fatalf("12 MiB admitted into a 10 MiB margin: %q, want disk full", out)
	}
	if got := stats.diskRefused.Load(); got != 1 {
		t.Fatalf("diskRefused = %d, want 1", got)
	}
	a.diskCommitted(6<<20, false)
	disk.set(100 << 20)
	calls := disk.calls
	a.refuseSubmit(false)
	if disk.calls != calls {
		t.Fatal("statfs read again within diskCheckEvery")
	}
	clock.add(diskCheckEvery)
	if out := a.refuseSubmit(false); out != nil {
		t.Fatalf("after space returned and a new reading: %q", out)
	}
	if st := a.diskStatus(); st.Full || st.Free != 100<<20 || st.Reserve != 10<<20 {
		t.Fatalf("status %+v, want not full, 100 MiB free, 10 MiB reserve", st)
	}
}

func TestAdmissionUnread(t *testing.T) {
	a, _, _, _ := newTestAdmission(t, Config{})
	if out := a.refuseSubmit(false); out != nil {
		t.Fatalf("a reading client refused: %q", out)
	}
	if out := a.refuseSubmit(true); !strings.Contains(refusalText(out), unreadRefusal) {
		t.Fatalf("an unread client: %q, want busy: %s", out, unreadRefusal)
	}
}

// TestAdmissionPresence: hello connects, a silent client is disconnected
// after PresenceTimeout, bye disconnects; each change is published once.
func TestAdmissionPresence(t *testing.T) {
	var events []tsp.Event
	n := notifierFunc(func(e tsp.Event) { events = append(events, e) })
	a, clock, _, _ := newTestAdmission(t, Config{PresenceTimeout: 10 * time.Second, Notifier: n})
	if out := a.hello([][]byte{[]byte("a")}, false); string(out[0]) != tsp.CodeOK {
		t.Fatalf("hello: %q", out)
	}
	a.hello([][]byte{[]byte("b")}, false)
	clock.add(6 * time.Second)
	a.hello([][]byte{[]byte("a")}, false) // seen again: no event
	clock.add(6 * time.Second)
	a.expirePresence()
	if cs := a.clients(); len(cs) != 1 || cs[0].ID != "a" {
		t.Fatalf("clients after b's timeout: %+v, want a", cs)
	}
	a.hello([][]byte{[]byte("a")}, true)
	if cs := a.clients(); len(cs) != 0 {
		t.Fatalf("clients after bye: %+v", cs)
	}
	var got []string
	for _, e := range events {
		got = append(got, e.Client+" "+e.State)
	}
	want := "a connected,b connected,b disconnected,a disconnected"
	if strings.Join(got, ",") != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	if out := a.hello(nil, false); string(out[0]) != tsp.CodeUnknown {
		t.Fatalf("hello without an id: %q, want 400", out)
	}
}

type notifierFunc func(tsp.Event)

func (f notifierFunc) Publish(e tsp.Event) { f(e) }
