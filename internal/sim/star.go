package sim

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/titanicmq/titanic/binarystar"
	"github.com/titanicmq/titanic/titanic/ha"
)

// clock is the fake clock of Binary Star: the schedule moves it one
// heartbeat per step.
type clock struct{ now atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Unix(0, c.now.Load()) }
func (c *clock) advance(d time.Duration) { c.now.Add(int64(d)) }

// heartbeat is one step of the fake clock; a peer is dead after
// missedBeats silent steps (binarystar.DefaultMissed).
const (
	heartbeat   = time.Second
	missedBeats = binarystar.DefaultMissed
)

// star is Binary Star for ha.Pair in the simulation: binarystar's FSM on
// the fake clock, fed the peer's states by the schedule's steps. It plays
// the part of binarystar.Node: ClientRequest is the vote, and poke is
// called after each change of state or of the peer's liveness (the Node's
// OnChange and OnPeer).
type star struct {
	clock   *clock
	poke    func()
	running atomic.Bool

	mu    sync.Mutex
	fsm   *binarystar.FSM
	heard bool // the peer was heard since the start
	alive bool // as last reported
}

var _ ha.Star = (*star)(nil)

func newStar(role binarystar.Role, c *clock, poke func()) (*star, error) {
	f, err := binarystar.NewFSM(role, missedBeats*heartbeat)
	if err != nil {
		return nil, err
	}
	f.Start(c.Now())
	return &star{clock: c, poke: poke, fsm: f}, nil
}

func (s *star) State() binarystar.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fsm.State()
}

func (s *star) PeerAlive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.heard && !s.fsm.PeerExpired(s.clock.Now())
}

func (s *star) ClientRequest() bool {
	if !s.running.Load() {
		return false
	}
	s.mu.Lock()
	res, err := s.fsm.Handle(binarystar.EventClientRequest, s.clock.Now())
	s.mu.Unlock()
	if err != nil {
		return false
	}
	if res.Changed {
		s.poke()
	}
	return res.Accepted
}

// AllowBackupVote implements ha.Star, as binarystar.Node does.
func (s *star) AllowBackupVote(on bool) {
	s.mu.Lock()
	s.fsm.SetBackupVote(on)
	s.mu.Unlock()
}

// Run stands for the Node's socket loop: the steps feed the FSM.
func (s *star) Run(ctx context.Context) error {
	s.running.Store(true)
	<-ctx.Done()
	s.running.Store(false)
	return nil
}

// hear delivers the peer's state.
func (s *star) hear(peer binarystar.State) {
	if !s.running.Load() {
		return
	}
	s.mu.Lock()
	res, err := s.fsm.Handle(binarystar.PeerEvent(peer), s.clock.Now())
	s.heard = true
	changed := err == nil && res.Changed || !s.alive
	s.alive = true
	s.mu.Unlock()
	if changed {
		s.poke()
	}
}

// tick notices the peer's death once the clock has moved past its expiry.
func (s *star) tick() {
	s.mu.Lock()
	died := s.alive && s.fsm.PeerExpired(s.clock.Now())
	if died {
		s.alive = false
	}
	s.mu.Unlock()
	if died {
		s.poke()
	}
}
