package broker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker"
)

// These tests run the durable-work hooks against a fake Source, with raw
// MDP workers.

func startWithSource(t *testing.T, cfg broker.Config) (*env, *fakeSource) {
	t.Helper()
	src := newFakeSource()
	e := start(t, cfg, func(b *broker.Broker) { b.SetSource(src) })
	return e, src
}

func TestSourceCompletedAndRelease(t *testing.T) {
	e, src := startWithSource(t, testConfig(t))
	src.add("echo", "T1", "job", "one")
	w := e.worker("w", "echo")
	src.expectWorkers(t, "echo=1")
	token, body := w.request()
	if token != "T1" || !equal(body, []string{"job", "one"}) {
		t.Fatalf("worker got token %q body %q, want T1 [job one]", token, body)
	}
	w.reply("T1", "done")
	c := src.nextCompleted(t)
	if c.lease.Token == nil || string(c.lease.Token) != "T1" || c.lease.Service != "echo" || !equal(c.reply, []string{"done"}) {
		t.Fatalf("Completed(%+v, %q)", c.lease, c.reply)
	}
	// Until Release, the worker gets no new work, even when woken.
	src.add("echo", "T2", "two")
	e.b.Wake("echo")
	st := e.stats() // commands run in order: Wake has run
	if st.JobsDispatched != 1 || st.Leases != 1 {
		t.Fatalf("before Release: %d jobs dispatched, %d leases; want 1, 1", st.JobsDispatched, st.Leases)
	}
	if s, _ := st.Service("echo"); s.Busy != 1 {
		t.Fatalf("before Release: %+v, want the worker busy", s)
	}
	e.b.Release(c.lease.ID + 1000) // unknown: no-op
	e.b.Release(c.lease.ID)
	if token, body := w.request(); token != "T2" || !equal(body, []string{"two"}) {
		t.Fatalf("after Release: token %q body %q, want T2", token, body)
	}
	e.b.Release(c.lease.ID) // twice: no-op
	st = e.stats()
	if st.JobsDispatched != 2 || st.JobsCompleted != 1 {
		t.Fatalf("counters %+v", st.Counters)
	}
}

func TestSourceDurableRedelivered(t *testing.T) {
	var b *broker.Broker
	src := newFakeSource()
	// Like titanic: a failed job goes back to pending, then Wake.
	src.onFailed = func(l broker.Lease) {
		src.add(l.Service, string(l.Token), "again")
		b.Wake(l.Service)
	}
	e := start(t, testConfig(t), func(br *broker.Broker) { b = br; br.SetSource(src) })
	w1 := e.worker("w1", "echo")
	src.expectWorkers(t, "echo=1")
	w2 := e.worker("w2", "echo")
	src.expectWorkers(t, "echo=2")
	src.add("echo", "T1", "first")
	b.Wake("echo")
	if token, _ := w1.request(); token != "T1" {
		t.Fatalf("w1 got %q", token)
	}
	w1.send("", hdrWorker, cDisc)
	f := src.nextFailed(t)
	if string(f.lease.Token) != "T1" || f.reason != "worker disconnected" {
		t.Fatalf("Failed(%+v, %q)", f.lease, f.reason)
	}
	src.expectWorkers(t, "echo=1")
	if token, body := w2.request(); token != "T1" || !equal(body, []string{"again"}) {
		t.Fatalf("w2 got %q %q, want the job again", token, body)
	}
	w2.reply("T1", "ok")
	if c := src.nextCompleted(t); c.lease.ID == f.lease.ID {
		t.Fatalf("redelivery reused lease %d", c.lease.ID)
	}
}

func TestSourceLeaseLostWhenWorkerDiesSilently(t *testing.T) {
	cfg := testConfig(t)
	e, src := startWithSource(t, cfg)
	src.add("echo", "T1", "x")
	w := e.worker("w", "echo")
	w.request()
	// The worker heartbeats while busy for a while, then dies silently.
	stop := make(chan struct{})
	wait := w.beatUntil(cfg.HeartbeatInterval, stop)
	time.Sleep(3 * cfg.HeartbeatInterval) // let it heartbeat while busy: part of the scenario
	close(stop)
	wait()
	stopped := time.Now()
	f := src.nextFailed(t)
	if !strings.HasPrefix(f.reason, "worker expired") {
		t.Fatalf("Failed reason %q, want worker expired", f.reason)
	}
	// It heartbeated while busy, so heartbeat expiry applied, not
	// LeaseTimeout.
	if took := f.at.Sub(stopped); took >= cfg.LeaseTimeout {
		t.Fatalf("lease lost %s after the worker went silent, want well under LeaseTimeout %s", took, cfg.LeaseTimeout)
	}
	src.expectWorkers(t, "echo=1")
	src.expectWorkers(t, "echo=0")
	if st := e.stats(); st.WorkersExpired != 1 || st.JobsFailed != 1 || st.Leases != 0 {
		t.Fatalf("counters %+v, leases %d", st.Counters, st.Leases)
	}
}

func TestSourceFailCommand(t *testing.T) {
	e, src := startWithSource(t, testConfig(t))
	src.add("echo", "T1", "x")
	src.add("echo", "T2", "y")
	w := e.worker("w", "echo")
	w.request()
	w.send("", hdrWorker, cFail, "T1", "", "cannot do it")
	f := src.nextFailed(t)
	if string(f.lease.Token) != "T1" || f.reason != "worker: cannot do it" {
		t.Fatalf("Failed(%+v, %q)", f.lease, f.reason)
	}
	// The worker is idle again and gets the next job.
	if token, _ := w.request(); token != "T2" {
		t.Fatalf("after FAIL, worker got %q, want T2", token)
	}
}

// A REPLY for a token the worker does not hold is a valid but unexpected
// command: 7/MDP answers it DISCONNECT, and the job it held fails its
// attempt at once (a worker that believes it answered would otherwise
// heartbeat with the job held for good).
func TestSourceStaleTokenReply(t *testing.T) {
	e, src := startWithSource(t, testConfig(t))
	src.add("echo", "T1", "x")
	w := e.worker("w", "echo")
	w.request()
	w.reply("OLD-TOKEN", "stale")
	w.disconnected()
	if f := src.nextFailed(t); string(f.lease.Token) != "T1" || !strings.Contains(f.reason, "protocol error: REPLY for a request it does not hold") {
		t.Fatalf("Failed(%s, %q)", f.lease.Token, f.reason)
	}
	if st := e.stats(); st.StaleReplies != 1 || st.JobsCompleted != 0 {
		t.Fatalf("counters %+v", st.Counters)
	}
}

func TestSourceBusyHeartbeatingWorkerKeepsLease(t *testing.T) {
	cfg := testConfig(t)
	cfg.LeaseTimeout = 300 * time.Millisecond
	e, src := startWithSource(t, cfg)
	src.add("echo", "T1", "long job")
	w := e.worker("w", "echo")
	w.request()
	stop := make(chan struct{})
	wait := w.beatUntil(cfg.HeartbeatInterval, stop)
	time.Sleep(3 * cfg.LeaseTimeout) // the job runs longer than LeaseTimeout: part of the scenario
	close(stop)
	wait()
	src.noFailure(t)
	w.reply("T1", "finally")
	if c := src.nextCompleted(t); !equal(c.reply, []string{"finally"}) {
		t.Fatalf("Completed with %q", c.reply)
	}
	if st := e.stats(); st.LeasesExpired != 0 || st.WorkersExpired != 0 {
		t.Fatalf("counters %+v", st.Counters)
	}
}

func TestSourceBusySilentWorkerLosesLease(t *testing.T) {
	cfg := testConfig(t)
	cfg.LeaseTimeout = 300 * time.Millisecond
	e, src := startWithSource(t, cfg)
	src.add("echo", "T1", "x")
	w := e.worker("w", "echo")
	w.request()
	// Like the Guide's synchronous worker: no heartbeat while busy. It
	// outlives Interval × Liveness (150 ms), but not LeaseTimeout.
	got := time.Now()
	f := src.nextFailed(t)
	if !strings.HasPrefix(f.reason, "lease timeout") {
		t.Fatalf("Failed reason %q, want lease timeout", f.reason)
	}
	if took := f.at.Sub(got); took < cfg.LeaseTimeout-20*time.Millisecond {
		t.Fatalf("lease lost after %s, before LeaseTimeout %s", took, cfg.LeaseTimeout)
	}
	w.disconnected()
	// Its late reply is not a reply any more: the broker disconnects it.
	w.reply("T1", "late")
	w.disconnected()
	st := e.stats()
	if st.LeasesExpired != 1 || st.JobsCompleted != 0 {
		t.Fatalf("counters %+v", st.Counters)
	}
}

func TestSourceAlternatesWithPlainQueue(t *testing.T) {
	e, src := startWithSource(t, testConfig(t))
	for _, tok := range []string{"J1", "J2", "J3"} {
		src.add("echo", tok, "job")
	}
	c := e.dealer("client")
	c.send("", hdrClient, "echo", "p1")
	c.send("", hdrClient, "echo", "p2")
	e.waitStats("2 queued requests", func(st broker.Stats) bool {
		s, _ := st.Service("echo")
		return s.Queued == 2
	})
	w := e.worker("w", "echo")
	var order []string
	for range 5 {
		token, body := w.request()
		if strings.HasPrefix(token, "J") {
			order = append(order, token)
			w.reply(token, "r")
			e.b.Release(src.nextCompleted(t).lease.ID)
		} else {
			order = append(order, body[0])
			w.reply(token, "r")
			c.expect("", hdrClient, "echo", "r")
		}
	}
	want := "p1 J1 p2 J2 J3"
	if got := strings.Join(order, " "); got != want {
		t.Fatalf("dispatch order %q, want %q", got, want)
	}
}

func TestSourceWorkersCount(t *testing.T) {
	e, src := startWithSource(t, testConfig(t))
	w1 := e.worker("w1", "echo")
	src.expectWorkers(t, "echo=1")
	w2 := e.worker("w2", "echo")
	src.expectWorkers(t, "echo=2")
	w1.send("", hdrWorker, cDisc)
	src.expectWorkers(t, "echo=1")
	w2.send("", hdrWorker, cDisc)
	src.expectWorkers(t, "echo=0")
}
