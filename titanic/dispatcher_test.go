package titanic

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/store"
)

// These tests drive the dispatcher alone, as broker/state_test.go drives
// the broker's protocol state: events in, decisions out, on a clock the
// script sets. No store, broker, goroutine or timer is involved; what the
// Service would do about a decision (commit, read, wake) is printed.
//
// A script is one event per line, "event args -> want", the want being
// what the event decided, printed by dtest.run; an event without "->"
// must decide nothing worth printing. Events:
//
//	at DUR                          the clock, from the start
//	submit NAME SVC [high|low] [due=DUR] [deadline=DUR] [nobody] [attempts=N]
//	next SVC                        a dispatch: the ticket, or -; load, expired
//	replied NAME | failed NAME      a worker's answer, or a failed attempt, of
//	                                its latest dispatch (NAME stale: the one before)
//	requeue NAME                    the requeue failed decided was committed
//	forget NAME                     its reply or failure was committed
//	cancel NAME [SVC]               a cancel (or close) was committed (SVC:
//	                                of a ticket on disk, in the ready index)
//	schedule | reap                 the schedule's and the reaper's passes
//	pause SVC | resume SVC | workers SVC N
//	recover SVC N                   a start over N ready tickets on disk
//	read SVC                        the normal level's window read, if any
//	                                (the other windows read nothing)
//	loaded SVC NAME[:DL]...         that read's outcome: these tickets (and their bodies);
//	                                DL: a deadline, from the start
//	dread SVC                       the deadline window's read, if any
//	dloaded SVC NAME:DL...          its outcome: these tickets, deadlines from the start
//	bodies SVC                      the loader's body reads: how many were taken
//	counts SVC                      pending, delayed, in flight

var t0 = time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)

type dtest struct {
	t     *testing.T
	d     *dispatcher
	now   time.Time
	seq   uint64
	ids   map[string]store.ID
	names map[store.ID]string
	ent   map[string]*entry
	due   map[string]time.Time // what failed decided, for requeue
	reads map[string]windowReading
	seqs  map[string]uint64
	tags  map[string][]uint64 // each ticket's dispatches, oldest first
}

func newDtest(t *testing.T, window, deadlines int) *dtest {
	cfg := dispatchConfig{
		window:          window,
		deadlineWindow:  deadlines,
		bodyCache:       1 << 20,
		noWorkerTimeout: time.Minute,
		retry:           retryConfig{maxAttempts: 3, base: time.Second, max: time.Minute},
		// The longest pause: the jitter's top.
		jitter: func(n time.Duration) time.Duration { return n - 1 },
	}
	return &dtest{
		t: t, d: newDispatcher(cfg), now: t0,
		ids: map[string]store.ID{}, names: map[store.ID]string{}, ent: map[string]*entry{},
		due: map[string]time.Time{}, reads: map[string]windowReading{}, seqs: map[string]uint64{},
		tags: map[string][]uint64{},
	}
}

// tag is the dispatch a "replied" or "failed" line names: the ticket's
// latest, or with a second word "stale" the one before it.
func (dt *dtest) tag(args []string) uint64 {
	tags := dt.tags[args[0]]
	back := 1
	if len(args) > 1 && args[1] == "stale" {
		back = 2
	}
	if len(tags) < back {
		return 0
	}
	return tags[len(tags)-back]
}

// seq is name's Seq: a new one the first time it is named.
func (dt *dtest) seqOf(name string) uint64 {
	n, ok := dt.seqs[name]
	if !ok {
		dt.seq++
		n = dt.seq
		dt.seqs[name] = n
	}
	return n
}

// queued is a ticket a window read finds: NAME, or NAME:DL with a
// deadline DL from the start.
func (dt *dtest) queued(svc, arg string, deadlines bool) store.QueuedTicket {
	name, dl, _ := strings.Cut(arg, ":")
	seq := dt.seqOf(name)
	t := store.QueuedTicket{
		Ticket: store.Ticket{ID: dt.id(name), Service: svc, Seq: seq, State: store.StatePending, Updated: dt.now},
		Key:    store.Key{Seq: seq},
	}
	if dl != "" {
		t.Deadline = t0.Add(dt.dur(dl))
		if deadlines {
			t.Key.At = store.TimeKey(t.Deadline)
		}
	}
	return t
}

func (dt *dtest) id(name string) store.ID {
	id, ok := dt.ids[name]
	if !ok {
		id = store.NewID()
		dt.ids[name], dt.names[id] = id, name
	}
	return id
}

func (dt *dtest) dur(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		dt.t.Fatalf("duration %q: %v", s, err)
	}
	return d
}

// fx prints effects.
func (dt *dtest) fx(fx effects) string {
	var out []string
	for _, v := range fx.fail {
		out = append(out, "fail "+dt.names[v.e.id]+": "+v.reason)
	}
	for _, s := range fx.wake {
		out = append(out, "wake "+s)
	}
	for _, s := range fx.load {
		out = append(out, "load "+s)
	}
	return strings.Join(out, "; ")
}

func (dt *dtest) at(d time.Duration) string { return "+" + d.String() }

// step runs one event and prints its decision.
func (dt *dtest) step(ev string, args []string) string {
	switch ev {
	case "at":
		dt.now = t0.Add(dt.dur(args[0]))
		return ""
	case "submit":
		name, svc := args[0], args[1]
		e := &entry{id: dt.id(name), service: svc, seq: dt.seqOf(name), queued: dt.now}
		var lc store.Lifecycle
		body := [][]byte{[]byte(name)}
		for _, a := range args[2:] {
			k, v, _ := strings.Cut(a, "=")
			switch k {
			case "high":
				lc.Priority = store.PriorityHigh
			case "low":
				lc.Priority = store.PriorityLow
			case "due":
				lc.Due = dt.now.Add(dt.dur(v))
			case "deadline":
				lc.Deadline = dt.now.Add(dt.dur(v))
			case "attempts":
				n, _ := strconv.Atoi(v)
				lc.Retry.MaxAttempts = n
			case "nobody":
				body = nil
			default:
				dt.t.Fatalf("submit: unknown %q", a)
			}
		}
		e.withLifecycle(lc, 0)
		dt.ent[name] = e
		ready, kick, took := dt.d.enlist(e, body, dt.now)
		var fx effects
		if ready {
			fx.wakeService(svc)
		}
		fx.kick = kick
		if !took {
			return "held already"
		}
		return dt.fx(fx)
	case "next":
		r := dt.d.next(args[0], dt.now)
		var out []string
		for _, v := range r.expired {
			out = append(out, "fail "+dt.names[v.e.id]+": "+v.reason)
		}
		if r.ok {
			dt.tags[dt.names[r.id]] = append(dt.tags[dt.names[r.id]], r.job.Tag)
			out = append(out, fmt.Sprintf("%s#%d", dt.names[r.id], r.attempts))
		} else {
			out = append(out, "-")
		}
		if r.load {
			out = append(out, "load")
		}
		return strings.Join(out, "; ")
	case "replied":
		if _, ok := dt.d.replied(dt.id(args[0]), dt.tag(args)); !ok {
			return "no lease"
		}
		return "ok"
	case "failed":
		_, r, ok := dt.d.attemptFailed(dt.id(args[0]), dt.tag(args), "boom", dt.now)
		switch {
		case !ok:
			return "no lease"
		case r.fail != "":
			return "fail: " + r.fail
		case r.due.IsZero():
			dt.due[args[0]] = time.Time{}
			return "requeue now"
		}
		dt.due[args[0]] = r.due
		return "requeue " + dt.at(r.due.Sub(t0))
	case "requeue":
		due := dt.due[args[0]]
		return dt.fx(dt.d.requeue(dt.ent[args[0]], due, due, store.StatePending, dt.now))
	case "forget":
		dt.d.forget(dt.id(args[0]))
		return ""
	case "cancel":
		res := store.Result{ID: dt.id(args[0])}
		if len(args) > 1 {
			res.Service, res.Unqueued = args[1], store.QueueReady
		}
		dt.d.forgetResult(res)
		return ""
	case "schedule":
		fx, next, ok := dt.d.schedule(dt.now)
		out := dt.fx(fx)
		if ok {
			out = strings.TrimPrefix(out+"; next "+dt.at(next.Sub(t0)), "; ")
		}
		return out
	case "reap":
		return dt.fx(dt.d.reap(dt.now))
	case "pause", "resume":
		dt.d.setPaused(args[0], ev == "pause")
		return ""
	case "workers":
		n, _ := strconv.Atoi(args[1])
		dt.d.setWorkers(args[0], n, dt.now)
		return ""
	case "recover":
		n, _ := strconv.Atoi(args[1])
		dt.d.recover(map[string]store.Counts{args[0]: {Pending: n}}, dt.now)
		return ""
	case "read":
		// The other windows (high, low, delayed) find nothing on disk.
		for _, w := range []int{0, 2, whichDelayed, whichDeadline} {
			if rd, ok := dt.d.windowRead(args[0], w); ok {
				dt.d.windowLoaded(rd, nil, nil, dt.now)
			}
		}
		rd, ok := dt.d.windowRead(args[0], 1)
		if !ok {
			return "none"
		}
		dt.reads[args[0]] = rd
		after := "-"
		if rd.Started {
			after = strconv.FormatUint(rd.After.Seq, 10)
		}
		return fmt.Sprintf("after %s limit %d", after, rd.Limit)
	case "loaded":
		rd := dt.reads[args[0]]
		var got []store.QueuedTicket
		for _, a := range args[1:] {
			got = append(got, dt.queued(args[0], a, false))
		}
		again, _, fx, err := dt.d.windowLoaded(rd, got, nil, dt.now)
		if err != nil {
			return "error " + err.Error()
		}
		// The loader reads the bodies of what it read.
		dt.bodies(args[0])
		out := dt.fx(fx)
		if again {
			out = strings.TrimPrefix(out+"; again", "; ")
		}
		return out
	case "dread":
		rd, ok := dt.d.windowRead(args[0], whichDeadline)
		if !ok {
			return "none"
		}
		dt.reads["deadline "+args[0]] = rd
		after := "-"
		if rd.Started {
			after = dt.at(time.Unix(0, rd.After.At).Sub(t0))
		}
		return fmt.Sprintf("after %s limit %d", after, rd.Limit)
	case "dloaded":
		var got []store.QueuedTicket
		for _, a := range args[1:] {
			got = append(got, dt.queued(args[0], a, true))
		}
		again, _, fx, err := dt.d.windowLoaded(dt.reads["deadline "+args[0]], got, nil, dt.now)
		if err != nil {
			return "error " + err.Error()
		}
		out := dt.fx(fx)
		if again {
			out = strings.TrimPrefix(out+"; again", "; ")
		}
		return out
	case "bodies":
		return strconv.Itoa(dt.bodies(args[0]))
	case "counts":
		per, leased := dt.d.counts(true)
		c := per[args[0]]
		return fmt.Sprintf("pending %d delayed %d inflight %d leased %d", c.pending, c.delayed, c.inFlight, leased)
	}
	dt.t.Fatalf("unknown event %q", ev)
	return ""
}

// bodies does the loader's body reads of svc; it returns how many the
// dispatcher took.
func (dt *dtest) bodies(svc string) int {
	n := 0
	for _, e := range dt.d.bodiesWanted(svc, 100) {
		dt.ent[dt.names[e.id]] = e
		if dt.d.bodyLoaded(e, store.Ticket{Body: [][]byte{[]byte(dt.names[e.id])}}, nil) {
			n++
		}
	}
	return n
}

// run runs a script and reports every decision that differs from its want.
func (dt *dtest) run(script string) {
	dt.t.Helper()
	for i, line := range strings.Split(strings.TrimSpace(script), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		ev, want, _ := strings.Cut(line, "->")
		f := strings.Fields(ev)
		got := dt.step(f[0], f[1:])
		if w := strings.TrimSpace(want); got != w {
			dt.t.Errorf("line %d %q: got %q, want %q", i+1, strings.TrimSpace(ev), got, w)
		}
	}
}

func TestDispatcher(t *testing.T) {
	cases := []struct {
		name      string
		window    int // 0: large
		deadlines int // the deadline window; 0: DeadlineWindow
		script    string
	}{
		{name: "fifo", script: `
			submit a s -> wake s
			submit b s -> wake s
			submit c t -> wake t
			next s -> a#1
			next s -> b#1
			next s -> -
			next t -> c#1
			next u -> -`},
		{name: "priorities take turns 4:2:1", script: `
			submit h1 s high -> wake s
			submit h2 s high -> wake s
			submit h3 s high -> wake s
			submit h4 s high -> wake s
			submit h5 s high -> wake s
			submit n1 s -> wake s
			submit n2 s -> wake s
			submit n3 s -> wake s
			submit l1 s low -> wake s
			submit l2 s low -> wake s
			next s -> h1#1
			next s -> h2#1
			next s -> h3#1
			next s -> h4#1
			next s -> n1#1
			next s -> n2#1
			next s -> l1#1
			# A new round.
			next s -> h5#1
			# High is out of work: its turns go to the others.
			next s -> n3#1
			next s -> l2#1
			next s -> -`},
		{name: "a body not in memory waits for the loader", script: `
			submit a s nobody -> wake s
			next s -> -; load
			bodies s -> 1
			next s -> a#1`},
		{name: "due times", script: `
			submit later s due=10s
			submit soon s due=5s
			submit now s -> wake s
			counts s -> pending 1 delayed 2 inflight 0 leased 0
			next s -> now#1
			next s -> -
			schedule -> next +5s
			at 5s
			schedule -> wake s; next +10s
			next s -> soon#1
			at 20s
			schedule -> wake s
			next s -> later#1`},
		{name: "a delayed ticket joins its level at its submit position", script: `
			submit d s due=1s
			submit a s -> wake s
			at 1s
			schedule -> wake s
			next s -> d#1
			next s -> a#1`},
		{name: "deadlines", script: `
			submit a s deadline=5s -> wake s
			submit b s deadline=5s -> wake s
			submit c s due=1s deadline=2s
			next s -> a#1
			# Dispatched: a no longer expires; b does.
			at 5s
			schedule -> fail c: expired: not dispatched by 2026-01-02T15:00:02Z; fail b: expired: not dispatched by 2026-01-02T15:00:05Z
			next s -> -
			# Taken out to fail, b and c count as leased until forgotten.
			counts s -> pending 0 delayed 0 inflight 3 leased 3
			forget b
			forget c
			counts s -> pending 0 delayed 0 inflight 1 leased 1`},
		{name: "next fails a head past its deadline before the schedule does", script: `
			submit a s deadline=1s -> wake s
			submit b s -> wake s
			at 2s
			next s -> fail a: expired: not dispatched by 2026-01-02T15:00:01Z; b#1`},
		{name: "requeue with backoff, then the last attempt fails", script: `
			submit a s -> wake s
			next s -> a#1
			failed a -> requeue +1s
			requeue a
			counts s -> pending 0 delayed 1 inflight 0 leased 0
			next s -> -
			at 1s
			schedule -> wake s
			next s -> a#2
			failed a -> requeue +3s
			requeue a
			at 3s
			schedule -> wake s
			next s -> a#3
			failed a -> fail: attempt 3 of 3 failed: boom
			failed b -> no lease`},
		{name: "an older dispatch's lease ending late does not end the current one", script: `
			submit a s -> wake s
			next s -> a#1
			failed a -> requeue +1s
			requeue a
			at 1s
			schedule -> wake s
			next s -> a#2
			failed a stale -> no lease
			replied a stale -> no lease
			counts s -> pending 0 delayed 0 inflight 1 leased 1
			replied a -> ok`},
		{name: "a ticket's own attempts", script: `
			submit a s attempts=1 -> wake s
			next s -> a#1
			failed a -> fail: attempt 1 of 1 failed: boom`},
		{name: "a reply holds the lease until its commit", script: `
			submit a s -> wake s
			next s -> a#1
			replied a -> ok
			replied a -> no lease
			failed a -> no lease
			counts s -> pending 0 delayed 0 inflight 1 leased 0
			forget a
			counts s -> pending 0 delayed 0 inflight 0 leased 0`},
		{name: "cancel pending, delayed and leased", script: `
			submit a s -> wake s
			submit b s -> wake s
			submit c s due=1m
			next s -> a#1
			cancel a
			cancel b
			cancel c
			counts s -> pending 0 delayed 0 inflight 0 leased 0
			next s -> -
			replied a -> no lease
			at 2m
			schedule ->`},
		{name: "pause and resume", script: `
			submit a s -> wake s
			pause s
			next s -> -
			at 2h
			reap ->
			resume s
			next s -> a#1`},
		{name: "no worker", script: `
			submit a s -> wake s
			at 30s
			workers s 1
			reap ->
			at 5m
			workers s 0
			at 5m30s
			reap ->
			# A minute after its service lost its last worker.
			at 6m
			reap -> fail a: no worker for service "s" within 1m0s
			next s -> -`},
		{name: "refill at the low-water mark", window: 4, script: `
			recover s 10
			next s -> -; load
			read s -> after - limit 4
			read s -> none
			loaded s t1 t2 t3 t4
			# A window of 4 holds more than half: no read.
			read s -> none
			next s -> t1#1
			# Two left: the low-water mark.
			next s -> t2#1; load
			read s -> after 4 limit 2
			loaded s t5 t6
			next s -> t3#1
			next s -> t4#1; load
			counts s -> pending 6 delayed 0 inflight 4 leased 4`},
		{name: "a window full leaves new tickets on disk", window: 2, script: `
			submit a s -> wake s
			submit b s -> wake s
			submit c s
			counts s -> pending 3 delayed 0 inflight 0 leased 0
			next s -> a#1; load
			next s -> b#1; load
			read s -> after 2 limit 2
			loaded s c
			next s -> c#1`},
		{name: "a read races a cancel on disk: the cancelled ticket is not queued", window: 2, script: `
			recover s 4
			read s -> after - limit 2
			# Committed after the read's snapshot, applied before its outcome.
			cancel x s
			loaded s x y
			next s -> y#1; load
			counts s -> pending 2 delayed 0 inflight 1 leased 1`},
		{name: "a ticket waiting on disk expires at its deadline", window: 2, script: `
			submit a s -> wake s
			submit b s -> wake s
			submit c s deadline=5s
			submit d s deadline=9s
			counts s -> pending 4 delayed 0 inflight 0 leased 0
			schedule -> next +5s
			at 5s
			# As one in memory would: out of the queue while its failure commits.
			schedule -> fail c: expired: not dispatched by 2026-01-02T15:00:05Z; next +9s
			counts s -> pending 3 delayed 0 inflight 1 leased 1
			next s -> a#1; load
			forget c
			counts s -> pending 2 delayed 0 inflight 1 leased 1
			# A read of the window that began before the failure committed.
			read s -> after 2 limit 1
			loaded s c:5s
			next s -> b#1; load`},
		{name: "a delayed ticket waiting on disk expires at its deadline", window: 1, script: `
			submit a s due=1m
			submit b s due=1m deadline=2m
			counts s -> pending 0 delayed 2 inflight 0 leased 0
			at 2m
			schedule -> fail b: expired: not dispatched by 2026-01-02T15:02:00Z; wake s; load s
			counts s -> pending 1 delayed 0 inflight 1 leased 1`},
		{name: "read into memory and dispatched before its deadline, it does not expire", window: 2, script: `
			submit a s -> wake s
			submit b s -> wake s
			submit c s deadline=5s
			next s -> a#1; load
			next s -> b#1; load
			read s -> after 2 limit 2
			loaded s c:5s
			next s -> c#1
			replied c -> ok
			forget c
			at 5s
			schedule ->`},
		{name: "cancelled on disk, it does not expire", window: 2, script: `
			submit a s -> wake s
			submit b s -> wake s
			submit c s deadline=5s
			cancel c s
			counts s -> pending 2 delayed 0 inflight 0 leased 0
			at 5s
			schedule ->`},
		{name: "the deadline window refills at its low-water mark", deadlines: 4, script: `
			recover s 10
			dread s -> after - limit 4
			dread s -> none
			dloaded s t1:1s t2:2s t3:3s t4:4s
			dread s -> none
			at 2s
			schedule -> fail t1: expired: not dispatched by 2026-01-02T15:00:01Z; fail t2: expired: not dispatched by 2026-01-02T15:00:02Z; load s; next +3s
			dread s -> after +4s limit 2
			dloaded s t5:5s t6:6s
			counts s -> pending 8 delayed 0 inflight 2 leased 2
			at 6s
			schedule -> fail t3: expired: not dispatched by 2026-01-02T15:00:03Z; fail t4: expired: not dispatched by 2026-01-02T15:00:04Z; fail t5: expired: not dispatched by 2026-01-02T15:00:05Z; fail t6: expired: not dispatched by 2026-01-02T15:00:06Z; load s`},
		{name: "a read of the deadline index races a ticket left on disk", window: 2, deadlines: 4, script: `
			recover s 10
			dread s -> after - limit 4
			submit x s deadline=1s
			# The snapshot did not have x: the read keeps what comes before it.
			dloaded s t1:2s t2:3s -> again
			dread s -> after - limit 4
			dloaded s x:1s t1:2s t2:3s
			at 1s
			schedule -> fail x: expired: not dispatched by 2026-01-02T15:00:01Z; next +2s`},
		{name: "tickets in memory are not watched", window: 4, deadlines: 4, script: `
			recover s 2
			dread s -> after - limit 4
			read s -> after - limit 4
			loaded s a:1s b:2s
			dloaded s a:1s b:2s
			next s -> a#1
			at 3s
			schedule -> fail b: expired: not dispatched by 2026-01-02T15:00:02Z
			counts s -> pending 0 delayed 0 inflight 2 leased 2`},
		{name: "the deadline window stays bounded: the latest go back to disk", window: 1, deadlines: 2, script: `
			submit a s -> wake s
			submit b s deadline=9s
			submit c s deadline=8s
			submit d s deadline=1s
			dread s -> none
			at 1s
			schedule -> fail d: expired: not dispatched by 2026-01-02T15:00:01Z; load s; next +8s
			dread s -> after +8s limit 1
			dloaded s b:9s
			at 9s
			schedule -> fail c: expired: not dispatched by 2026-01-02T15:00:08Z; fail b: expired: not dispatched by 2026-01-02T15:00:09Z; load s
			dread s -> after +9s limit 2
			dloaded s
			dread s -> none
			counts s -> pending 1 delayed 0 inflight 3 leased 3`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := c.window
			if w == 0 {
				w = DefaultWindow
			}
			newDtest(t, w, c.deadlines).run(c.script)
		})
	}
}

// The dispatcher's services and its reset: a node that stops serving
// drops every ticket but keeps its pauses.
func TestDispatcherReset(t *testing.T) {
	dt := newDtest(t, DefaultWindow, 0)
	dt.run(`
		submit a s -> wake s
		submit b t -> wake t
		pause t`)
	got := dt.d.services()
	slices.Sort(got)
	if !slices.Equal(got, []string{"s", "t"}) {
		t.Fatalf("services %q", got)
	}
	dt.d.reset(dt.now)
	if n := len(dt.d.services()); n != 0 {
		t.Fatalf("%d services after reset", n)
	}
	if !dt.d.isPaused("t") {
		t.Fatal("reset dropped a pause")
	}
	dt.run(`next s -> -`)
}

// A ticket left on disk takes no room in the body cache: it would never
// be counted out of it.
func TestDispatcherCacheOnDisk(t *testing.T) {
	dt := newDtest(t, 1, 0)
	dt.run(`
		submit a s -> wake s
		submit b s
		submit c s`)
	if dt.d.cached != 1 {
		t.Fatalf("%d bytes cached, want 1 (a's body only)", dt.d.cached)
	}
}
