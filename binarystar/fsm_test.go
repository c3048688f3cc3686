package binarystar

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

const testTimeout = 2 * time.Second

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// reach returns a started machine of role in state, driven there by the
// events a real pair would deliver, with every event at t0: its peer
// expiry is t0 + testTimeout.
func reach(t *testing.T, role Role, state State) *FSM {
	t.Helper()
	f, err := NewFSM(role, testTimeout)
	if err != nil {
		t.Fatalf("NewFSM(%v): %v", role, err)
	}
	f.Start(t0)
	var path []Event
	switch {
	case state == role.initial():
	case role == Primary && state == StateActive:
		path = []Event{EventPeerBackup}
	case role == Primary && state == StatePassive:
		path = []Event{EventPeerActive}
	case role == Backup && state == StatePassive:
		path = []Event{EventPeerActive}
	case role == Backup && state == StateActive:
		path = []Event{EventPeerActive, EventPeerPrimary}
	default:
		t.Fatalf("a %v never is in %v", role, state)
	}
	for _, ev := range path {
		if _, err := f.Handle(ev, t0); err != nil {
			t.Fatalf("reach %v %v: %v: %v", role, state, ev, err)
		}
	}
	if f.State() != state {
		t.Fatalf("reach %v %v: got %v", role, state, f.State())
	}
	return f
}

func TestFSMTransitions(t *testing.T) {
	type tc struct {
		role     Role
		state    State
		event    Event
		at       time.Duration // after t0
		want     State
		accepted bool
		sameRole bool
		err      error
	}
	var cases []tc
	// Ignored peer events: no change, nothing accepted.
	ignored := func(role Role, s State, ev Event, sameRole bool) {
		cases = append(cases, tc{role: role, state: s, event: ev, at: time.Second, want: s, sameRole: sameRole})
	}
	move := func(role Role, s State, ev Event, want State) {
		cases = append(cases, tc{role: role, state: s, event: ev, at: time.Second, want: want})
	}
	// vote adds CLIENT_REQUEST just before, at and after the peer expiry.
	vote := func(role Role, s State, beforeWant, atWant State, acceptAtExpiry bool) {
		cases = append(cases,
			tc{role: role, state: s, event: EventClientRequest, at: 0, want: beforeWant},
			tc{role: role, state: s, event: EventClientRequest, at: testTimeout - time.Nanosecond, want: beforeWant},
			tc{role: role, state: s, event: EventClientRequest, at: testTimeout, want: atWant, accepted: acceptAtExpiry},
			tc{role: role, state: s, event: EventClientRequest, at: time.Hour, want: atWant, accepted: acceptAtExpiry},
		)
	}

	// PRIMARY (primary role only)
	ignored(Primary, StatePrimary, EventPeerPrimary, true)
	move(Primary, StatePrimary, EventPeerBackup, StateActive)
	move(Primary, StatePrimary, EventPeerActive, StatePassive)
	ignored(Primary, StatePrimary, EventPeerPassive, false)
	vote(Primary, StatePrimary, StatePrimary, StateActive, true)

	// BACKUP (backup role only)
	ignored(Backup, StateBackup, EventPeerPrimary, false)
	ignored(Backup, StateBackup, EventPeerBackup, true)
	move(Backup, StateBackup, EventPeerActive, StatePassive)
	ignored(Backup, StateBackup, EventPeerPassive, false)
	vote(Backup, StateBackup, StateBackup, StateBackup, false)

	for _, role := range []Role{Primary, Backup} {
		// ACTIVE
		ignored(role, StateActive, EventPeerPrimary, role == Primary)
		ignored(role, StateActive, EventPeerBackup, role == Backup)
		// A healed split brain: the backup yields, the primary stays.
		if role == Backup {
			move(role, StateActive, EventPeerActive, StatePassive)
		} else {
			ignored(role, StateActive, EventPeerActive, false)
		}
		ignored(role, StateActive, EventPeerPassive, false)
		vote(role, StateActive, StateActive, StateActive, true)
		// ACTIVE accepts before expiry too.
		for i := range cases {
			c := &cases[i]
			if c.role == role && c.state == StateActive && c.event == EventClientRequest {
				c.accepted = true
			}
		}

		// PASSIVE
		move(role, StatePassive, EventPeerPrimary, StateActive)
		move(role, StatePassive, EventPeerBackup, StateActive)
		ignored(role, StatePassive, EventPeerActive, false)
		// Both passive (a backup yielded to a stale ACTIVE): the
		// primary takes over.
		if role == Primary {
			move(role, StatePassive, EventPeerPassive, StateActive)
		} else {
			ignored(role, StatePassive, EventPeerPassive, false)
		}
		vote(role, StatePassive, StatePassive, StateActive, true)
	}
	// SameRole for PASSIVE: the peer's starting state equals ours.
	for i := range cases {
		c := &cases[i]
		if c.state == StatePassive && c.err == nil && c.event.fromPeer() {
			c.sameRole = State(c.event) == c.role.initial()
		}
	}

	seen := map[[2]uint8]bool{}
	for _, c := range cases {
		seen[[2]uint8{uint8(c.state), uint8(c.event)}] = true
		name := fmt.Sprintf("%v/%v/%v/+%v", c.role, c.state, c.event, c.at)
		t.Run(name, func(t *testing.T) {
			f := reach(t, c.role, c.state)
			now := t0.Add(c.at)
			res, err := f.Handle(c.event, now)
			if !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
				t.Fatalf("error = %v, want %v", err, c.err)
			}
			if f.State() != c.want {
				t.Errorf("state = %v, want %v (%s)", f.State(), c.want, res.Message)
			}
			if res.Event != c.event || res.From != c.state || res.To != f.State() {
				t.Errorf("result event/from/to = %v/%v/%v, want %v/%v/%v",
					res.Event, res.From, res.To, c.event, c.state, f.State())
			}
			if res.Changed != (c.want != c.state) {
				t.Errorf("changed = %v, want %v", res.Changed, c.want != c.state)
			}
			if res.Accepted != c.accepted {
				t.Errorf("accepted = %v, want %v (%s)", res.Accepted, c.accepted, res.Message)
			}
			if res.SameRole != c.sameRole {
				t.Errorf("same role = %v, want %v", res.SameRole, c.sameRole)
			}
			if err == nil && res.Message == "" {
				t.Errorf("empty message")
			}
			// Peer events prove the peer alive; client requests do not.
			wantExpiry := t0.Add(testTimeout)
			if c.event.fromPeer() {
				wantExpiry = now.Add(testTimeout)
			}
			if !f.PeerExpiry().Equal(wantExpiry) {
				t.Errorf("peer expiry = %v, want %v", f.PeerExpiry(), wantExpiry)
			}
		})
	}
	for s := StatePrimary; s <= StatePassive; s++ {
		for ev := EventPeerPrimary; ev <= EventClientRequest; ev++ {
			if !seen[[2]uint8{uint8(s), uint8(ev)}] {
				t.Errorf("no case for %v × %v", s, ev)
			}
		}
	}
}

func TestFSMUnknownEvent(t *testing.T) {
	f := reach(t, Primary, StatePassive)
	for _, ev := range []Event{0, 6, 255} {
		res, err := f.Handle(ev, t0.Add(time.Hour))
		if !errors.Is(err, ErrUnknownEvent) {
			t.Errorf("%v: error %v, want ErrUnknownEvent", ev, err)
		}
		if res.Accepted || res.Changed || f.State() != StatePassive || !f.PeerExpiry().Equal(t0.Add(testTimeout)) {
			t.Errorf("%v changed the machine: %+v", ev, res)
		}
	}
	// Not fatal: the machine still works.
	if res, err := f.Handle(EventClientRequest, t0.Add(time.Hour)); err != nil || !res.Accepted {
		t.Errorf("after unknown events: %+v, %v", res, err)
	}
}

func TestFSMImplicitStart(t *testing.T) {
	f, err := NewFSM(Primary, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if !f.PeerExpiry().IsZero() || f.PeerExpired(t0) {
		t.Fatalf("unstarted machine: expiry %v, expired %v", f.PeerExpiry(), f.PeerExpired(t0))
	}
	// The first event starts the clock, so a request at once is refused:
	// a server that has just come up has not had time to hear its peer.
	res, err := f.Handle(EventClientRequest, t0)
	if err != nil || res.Accepted || f.State() != StatePrimary {
		t.Fatalf("first request: %+v, %v, state %v", res, err, f.State())
	}
	if !f.PeerExpiry().Equal(t0.Add(testTimeout)) {
		t.Fatalf("expiry %v, want %v", f.PeerExpiry(), t0.Add(testTimeout))
	}
	if res, _ := f.Handle(EventClientRequest, t0.Add(testTimeout)); !res.Accepted || f.State() != StateActive {
		t.Fatalf("request after timeout: %+v, state %v", res, f.State())
	}
}

func TestNewFSMInvalid(t *testing.T) {
	for _, c := range []struct {
		role    Role
		timeout time.Duration
	}{{0, time.Second}, {3, time.Second}, {Primary, 0}, {Backup, -time.Second}} {
		if _, err := NewFSM(c.role, c.timeout); !errors.Is(err, ErrConfig) {
			t.Errorf("NewFSM(%v, %v): %v, want ErrConfig", c.role, c.timeout, err)
		}
	}
	f, err := NewFSM(Backup, time.Second)
	if err != nil || f.Role() != Backup || f.State() != StateBackup || f.PeerTimeout() != time.Second {
		t.Fatalf("NewFSM(Backup): %+v, %v", f, err)
	}
}

// TestFSMPairStory runs both machines of a pair through start, failover
// and manual fail-back, delivering each one's state to the other as the
// Node would.
func TestFSMPairStory(t *testing.T) {
	p, _ := NewFSM(Primary, testTimeout)
	b, _ := NewFSM(Backup, testTimeout)
	now := t0
	p.Start(now)
	b.Start(now)
	deliver := func(from, to *FSM) {
		t.Helper()
		if _, err := to.Handle(PeerEvent(from.State()), now); err != nil {
			t.Fatalf("%v → %v: %v", from.State(), to.State(), err)
		}
	}
	expect := func(step string, ps, bs State) {
		t.Helper()
		if p.State() != ps || b.State() != bs {
			t.Fatalf("%s: primary %v backup %v, want %v %v", step, p.State(), b.State(), ps, bs)
		}
	}
	request := func(f *FSM) bool {
		res, err := f.Handle(EventClientRequest, now)
		if err != nil {
			t.Fatalf("client request: %v", err)
		}
		return res.Accepted
	}

	deliver(b, p) // primary hears BACKUP
	deliver(p, b) // backup hears ACTIVE
	expect("start", StateActive, StatePassive)
	if !request(p) || request(b) {
		t.Fatal("start: only the primary may serve")
	}

	// The primary dies. The backup waits for the timeout and a client.
	now = now.Add(testTimeout - time.Millisecond)
	if request(b) {
		t.Fatal("backup accepted before the peer expired")
	}
	now = now.Add(time.Millisecond)
	expect("primary silent", StateActive, StatePassive)
	if !request(b) {
		t.Fatal("backup refused the client vote after the peer expired")
	}

	// The primary restarts: it must not go active on a client request
	// before it has heard the active backup, and then goes passive.
	p, _ = NewFSM(Primary, testTimeout)
	p.Start(now)
	if request(p) {
		t.Fatal("restarted primary accepted at once")
	}
	deliver(p, b) // backup (active) hears PRIMARY: ignored
	deliver(b, p) // primary hears ACTIVE
	expect("primary restarted", StatePassive, StateActive)
	deliver(p, b)

	// Manual fail-back: stop the backup; the primary takes the vote.
	now = now.Add(testTimeout)
	if !request(p) {
		t.Fatal("primary refused the vote after the backup stopped")
	}
	b, _ = NewFSM(Backup, testTimeout)
	b.Start(now)
	deliver(b, p) // primary (active) hears BACKUP: ignored
	deliver(p, b)
	expect("fail-back", StateActive, StatePassive)
}

func TestStrings(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{Primary.String(), "primary"},
		{Backup.String(), "backup"},
		{Role(0).String(), "Role(0)"},
		{StatePrimary.String(), "PRIMARY"},
		{StateBackup.String(), "BACKUP"},
		{StateActive.String(), "ACTIVE"},
		{StatePassive.String(), "PASSIVE"},
		{State(9).String(), "State(9)"},
		{EventPeerPrimary.String(), "PEER_PRIMARY"},
		{EventPeerBackup.String(), "PEER_BACKUP"},
		{EventPeerActive.String(), "PEER_ACTIVE"},
		{EventPeerPassive.String(), "PEER_PASSIVE"},
		{EventClientRequest.String(), "CLIENT_REQUEST"},
		{Event(0).String(), "Event(0)"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	// The numbers are the wire's and the Guide's.
	if StatePrimary != 1 || StateBackup != 2 || StateActive != 3 || StatePassive != 4 || EventClientRequest != 5 {
		t.Fatal("state or event numbers changed")
	}
	for s := StatePrimary; s <= StatePassive; s++ {
		if PeerEvent(s).String() != "PEER_"+s.String() {
			t.Errorf("PeerEvent(%v) = %v", s, PeerEvent(s))
		}
	}
}

func TestWire(t *testing.T) {
	for s := StatePrimary; s <= StatePassive; s++ {
		b := encodeState(s)
		if want := fmt.Sprintf("BSTAR1 %d", s); string(b) != want {
			t.Errorf("encode %v = %q, want %q", s, b, want)
		}
		if got, ok := parseState(b); !ok || got != s {
			t.Errorf("parse %q = %v, %v", b, got, ok)
		}
	}
	for _, bad := range []string{
		"", "3", "BSTAR1", "BSTAR1 ", "BSTAR1 0", "BSTAR1 5", "BSTAR1 9", "BSTAR1 x",
		"BSTAR1 33", "BSTAR1 3 ", " BSTAR1 3", "BSTAR2 3", "bstar1 3", "BSTAR1\t3",
	} {
		if s, ok := parseState([]byte(bad)); ok {
			t.Errorf("parse %q accepted as %v", bad, s)
		}
	}
}

func FuzzParseState(f *testing.F) {
	f.Add([]byte("BSTAR1 3"))
	f.Add([]byte("BSTAR1 7"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, ok := parseState(b)
		if !ok {
			return
		}
		if !s.valid() || string(encodeState(s)) != string(b) {
			t.Fatalf("parse %q = %v: not the canonical form", b, s)
		}
	})
}

// A state message of a newer pair protocol is told apart from garbage, so
// that the log names the peer's newer release; this build never parses it
// as a state.
func TestNewerWire(t *testing.T) {
	for _, tc := range []struct {
		frame string
		v     int
		newer bool
	}{
		{"BSTAR2 3", 2, true},
		{"BSTAR12 anything", 12, true},
		{"BSTAR1 3", 1, false},
		{"BSTAR0 3", 0, false},
		{"BSTAR 3", 0, false},
		{"BSTAR2", 0, false},
		{"BSTARx 3", 0, false},
		{"bstar2 3", 0, false},
		{"", 0, false},
	} {
		v, newer := newerWire([]byte(tc.frame))
		if newer != tc.newer || newer && v != tc.v {
			t.Errorf("newerWire(%q) = %d, %v; want %d, %v", tc.frame, v, newer, tc.v, tc.newer)
		}
	}
}

// A backup allowed to be voted (it went on alone and restarted with its
// peer still down, see SetBackupVote) is made active by a client request
// once the peer has been silent for the timeout, as a primary is; not
// before, and never without the allowance (the Guide's backup).
func TestFSMBackupVote(t *testing.T) {
	const timeout = time.Second
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name   string
		vote   bool
		after  time.Duration
		active bool
	}{
		{"without the allowance", false, 2 * timeout, false},
		{"allowed, peer not silent long enough", true, timeout / 2, false},
		{"allowed, peer silent for the timeout", true, timeout, true},
	} {
		f, err := NewFSM(Backup, timeout)
		if err != nil {
			t.Fatal(err)
		}
		f.Start(t0)
		f.SetBackupVote(tc.vote)
		res, err := f.Handle(EventClientRequest, t0.Add(tc.after))
		if err != nil {
			t.Fatal(err)
		}
		if res.Accepted != tc.active || (f.State() == StateActive) != tc.active {
			t.Errorf("%s: accepted %v, state %v; want active %v", tc.name, res.Accepted, f.State(), tc.active)
		}
	}
}
