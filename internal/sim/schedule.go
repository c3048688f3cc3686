package sim

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Mode is the deployment simulated.
type Mode uint8

// The two replicated modes.
const (
	Pair  Mode = 1 // two nodes: Binary Star decides, raft (two voters) replicates
	Group Mode = 2 // three nodes: raft elects
)

func (m Mode) String() string {
	switch m {
	case Pair:
		return "pair"
	case Group:
		return "group"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

func (m Mode) nodes() int {
	if m == Pair {
		return 2
	}
	return 3
}

// Kind is what a fault action does.
type Kind uint8

// Fault actions.
const (
	Cut      Kind = iota + 1 // From no longer reaches To (one way)
	Heal                     // From reaches To again
	Crash                    // node From stops (role loop, replica, store closed)
	Restart                  // node From starts again from its directories
	Vote                     // a client request at node From (pair: the Binary Star vote)
	CutRaft                  // From's raft no longer reaches To's (one way); Binary Star and admin requests still pass
	HealRaft                 // From's raft reaches To's again
)

// Action is one fault of a schedule step.
type Action struct {
	Kind     Kind
	From, To int
}

func (a Action) String() string {
	switch a.Kind {
	case Cut:
		return fmt.Sprintf("cut %d->%d", a.From, a.To)
	case Heal:
		return fmt.Sprintf("heal %d->%d", a.From, a.To)
	case Crash:
		return fmt.Sprintf("crash %d", a.From)
	case Restart:
		return fmt.Sprintf("restart %d", a.From)
	case Vote:
		return fmt.Sprintf("vote %d", a.From)
	case CutRaft:
		return fmt.Sprintf("cut raft %d->%d", a.From, a.To)
	case HealRaft:
		return fmt.Sprintf("heal raft %d->%d", a.From, a.To)
	}
	return fmt.Sprintf("action(%d)", uint8(a.Kind))
}

// Schedule is everything a seed decides about a run.
type Schedule struct {
	Seed  int64
	Mode  Mode
	Nodes int
	// Step is the real time between two steps; each step is also one
	// Binary Star heartbeat on the fake clock.
	Step time.Duration
	// Steps holds the faults of each step: the steps asked for, and, in
	// half the pair schedules, a tail where only the raft link is cut
	// (see raftCuts).
	Steps [][]Action
	// Traffic: how many clients, workers and lookers run, and their mean
	// pause between two operations.
	Clients, Workers, Lookers int
	Pause                     time.Duration
	// Keyed is the share of submits that carry an idempotency key.
	Keyed float64
	// WorkerDeath is the share of jobs whose worker dies before it
	// answers (the job is redelivered).
	WorkerDeath float64
	// SmallSnapshots makes raft snapshot and compact its log often.
	SmallSnapshots bool
}

// DefaultSteps is the length of a schedule.
const DefaultSteps = 60

// NewSchedule draws the schedule of seed: steps steps of faults (0:
// DefaultSteps) and the traffic's pace.
func NewSchedule(mode Mode, seed int64, steps int) Schedule {
	if steps <= 0 {
		steps = DefaultSteps
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x7173696d)) // "qsim"
	n := mode.nodes()
	s := Schedule{
		Seed: seed, Mode: mode, Nodes: n,
		Step:           time.Duration(15+rng.IntN(36)) * time.Millisecond,
		Steps:          make([][]Action, steps),
		Clients:        1 + rng.IntN(3),
		Workers:        1 + rng.IntN(2),
		Lookers:        1 + rng.IntN(2),
		Pause:          time.Duration(5+rng.IntN(30)) * time.Millisecond,
		Keyed:          []float64{0, 0.5, 1}[rng.IntN(3)],
		WorkerDeath:    []float64{0, 0.1, 0.3}[rng.IntN(3)],
		SmallSnapshots: rng.IntN(2) == 0,
	}
	g := gen{rng: rng, n: n, s: &s, up: make([]bool, n), downAt: make([]int, n), cut: make([][]bool, n)}
	for i := range n {
		g.up[i] = true
		g.cut[i] = make([]bool, n)
	}
	// Fault density varies between schedules: some are calm, some storms.
	heat := 0.5 + rng.Float64()
	for step := range steps {
		g.step(step, heat)
	}
	if mode == Pair {
		// Cuts of the raft link alone come from a stream of their own,
		// added to the faults above: those are the same as before they
		// came, for every seed.
		rc := raftCuts{rng: rand.New(rand.NewPCG(uint64(seed), 0x72637574)), s: &s} // "rcut"
		for step := range steps {
			rc.step(step, heat)
		}
		rc.tail(steps)
	}
	return s
}

// withoutRaftCuts returns the schedule without its cuts of the raft
// link alone and its tail (see raftCuts): steps long (0: DefaultSteps).
func (s Schedule) withoutRaftCuts(steps int) Schedule {
	if steps <= 0 {
		steps = DefaultSteps
	}
	out := s
	out.Steps = make([][]Action, min(steps, len(s.Steps)))
	for i := range out.Steps {
		for _, a := range s.Steps[i] {
			if a.Kind != CutRaft && a.Kind != HealRaft {
				out.Steps[i] = append(out.Steps[i], a)
			}
		}
	}
	return out
}

// raftCuts draws a pair schedule's cuts of the raft link alone: Binary
// Star hears the peer and admin requests pass, so the active node, whose
// raft elects nobody, asks the passive to stand down and goes on alone
// (titanic/ha/raftcut.go). One way or both ways; some heal before the
// active gives up on raft (ha's raftCutWait: 300 ms with the simulation's
// raft timeouts, 6 to 20 steps), some after, some only when the schedule
// is over.
//
// Within the schedule they mostly overlap the other faults (a cut of
// every link, a crash), which Binary Star sees: so half the schedules
// end with a tail in which every other fault is healed, every node runs,
// and only the raft link is cut, while the traffic goes on.
type raftCuts struct {
	rng   *rand.Rand
	s     *Schedule
	until int // the step the current cut heals at (-1: at the end)
}

func (rc *raftCuts) step(step int, heat float64) {
	if step < rc.until || rc.until < 0 || rc.rng.Float64() >= 0.03*heat {
		return
	}
	rc.cut(step, 2+rc.rng.IntN(40), rc.rng.IntN(5) == 0)
}

// cut cuts the raft link one way or both at step, healed length steps
// later unless atEnd.
func (rc *raftCuts) cut(step, length int, atEnd bool) {
	links := [][2]int{{0, 1}, {1, 0}}
	switch rc.rng.IntN(3) {
	case 0:
		links = links[:1] // the primary's raft does not reach the backup's
	case 1:
		links = links[1:] // the backup's does not reach the primary's
	}
	heal := step + length
	if atEnd {
		heal = -1 // healed with everything when the schedule is over
	}
	for _, l := range links {
		rc.add(step, Action{Kind: CutRaft, From: l[0], To: l[1]})
		if heal >= 0 {
			rc.add(heal, Action{Kind: HealRaft, From: l[0], To: l[1]})
		}
	}
	rc.until = heal
}

// tail adds, to half the schedules, steps after the last of the others'
// (from step on) in which the raft link alone is cut: it starts with
// every other link healed and every node restarted, and its cut heals
// in its second half or with everything at the end. Clients vote at
// either node meanwhile, and in a third of the tails a node crashes
// during the cut and restarts a few steps later.
func (rc *raftCuts) tail(step int) {
	if rc.rng.IntN(2) != 0 {
		return
	}
	length := 15 + rc.rng.IntN(46)
	rc.s.Steps = append(rc.s.Steps, make([][]Action, length)...)
	for a := range 2 {
		rc.add(step, Action{Kind: Heal, From: a, To: 1 - a})
		rc.add(step, Action{Kind: HealRaft, From: a, To: 1 - a})
		rc.add(step, Action{Kind: Restart, From: a})
	}
	rc.cut(step, length/2+rc.rng.IntN(length/2+1), rc.rng.IntN(3) == 0)
	if rc.rng.IntN(3) == 0 {
		// A node dies during the cut: the active after its passive
		// stood down must not be replaced by that passive, which lacks
		// what the active took alone.
		at := step + length/3 + rc.rng.IntN(length-length/3)
		a := rc.rng.IntN(2)
		rc.add(at, Action{Kind: Crash, From: a})
		rc.add(at+2+rc.rng.IntN(10), Action{Kind: Restart, From: a})
	}
	for k := range length {
		// Clients that move on to the other node vote there.
		if rc.rng.Float64() < 0.3 {
			rc.add(step+k, Action{Kind: Vote, From: rc.rng.IntN(2)})
		}
	}
}

func (rc *raftCuts) add(step int, a Action) {
	if step < len(rc.s.Steps) {
		rc.s.Steps[step] = append(rc.s.Steps[step], a)
	}
}

type gen struct {
	rng    *rand.Rand
	n      int
	s      *Schedule
	up     []bool
	downAt []int
	cut    [][]bool
}

func (g *gen) add(step int, a Action) {
	if step < len(g.s.Steps) {
		g.s.Steps[step] = append(g.s.Steps[step], a)
	}
}

func (g *gen) chance(p float64) bool { return g.rng.Float64() < p }

// pair returns two different nodes.
func (g *gen) pair() (int, int) {
	a := g.rng.IntN(g.n)
	b := (a + 1 + g.rng.IntN(g.n-1)) % g.n
	return a, b
}

func (g *gen) step(step int, heat float64) {
	switch {
	case g.s.Mode == Pair && g.chance(0.06*heat):
		// A split brain in the making: the link is cut both ways, and
		// clients that cannot reach the active vote at the other node
		// until the link heals. Whether both serve depends on who
		// votes when (and on raft); the schedule only makes it likely.
		length := 4 + g.rng.IntN(14)
		g.cutLink(step, 0, 1)
		g.cutLink(step, 1, 0)
		for k := 1; k <= length; k++ {
			if g.chance(0.5) {
				g.add(step+k, Action{Kind: Vote, From: g.rng.IntN(2)})
			}
		}
		g.add(step+length, Action{Kind: Heal, From: 0, To: 1})
		g.add(step+length, Action{Kind: Heal, From: 1, To: 0})
		// The generator's view of the links is approximate past this
		// step; the runner applies whatever it is given.
		g.cut[0][1], g.cut[1][0] = false, false
	case g.chance(0.05 * heat):
		a, b := g.pair()
		g.cutLink(step, a, b)
		g.cutLink(step, b, a)
	case g.chance(0.05 * heat):
		a, b := g.pair()
		g.cutLink(step, a, b)
	case g.s.Mode == Group && g.chance(0.03*heat):
		// Isolate one node from both others.
		a := g.rng.IntN(g.n)
		for b := range g.n {
			if b != a {
				g.cutLink(step, a, b)
				g.cutLink(step, b, a)
			}
		}
	}
	if g.chance(0.1) {
		a, b := g.pair()
		if g.cut[a][b] {
			g.cut[a][b] = false
			g.add(step, Action{Kind: Heal, From: a, To: b})
		}
	}
	if g.chance(0.03) {
		for a := range g.n {
			for b := range g.n {
				if g.cut[a][b] {
					g.cut[a][b] = false
					g.add(step, Action{Kind: Heal, From: a, To: b})
				}
			}
		}
	}
	down := 0
	for i := range g.n {
		if !g.up[i] {
			down++
		}
	}
	if g.chance(0.04*heat) && down < g.n-1+boolInt(g.s.Mode == Pair) {
		a := g.rng.IntN(g.n)
		if g.up[a] {
			g.up[a], g.downAt[a] = false, step
			g.add(step, Action{Kind: Crash, From: a})
		}
	}
	for a := range g.n {
		if !g.up[a] && step-g.downAt[a] >= 2 && g.chance(0.12) {
			g.up[a] = true
			g.add(step, Action{Kind: Restart, From: a})
		}
	}
	if g.s.Mode == Pair && g.chance(0.3) {
		g.add(step, Action{Kind: Vote, From: g.rng.IntN(2)})
	}
}

func (g *gen) cutLink(step, a, b int) {
	if !g.cut[a][b] {
		g.cut[a][b] = true
		g.add(step, Action{Kind: Cut, From: a, To: b})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// String lists the schedule, one step with faults per line.
func (s Schedule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s seed %d: %d steps of %s, %d clients (keyed %.0f%%), %d workers (death %.0f%%), %d lookers, pause %s, small snapshots %v\n",
		s.Mode, s.Seed, len(s.Steps), s.Step, s.Clients, 100*s.Keyed, s.Workers, 100*s.WorkerDeath, s.Lookers, s.Pause, s.SmallSnapshots)
	for i, st := range s.Steps {
		if len(st) == 0 {
			continue
		}
		acts := make([]string, len(st))
		for k, a := range st {
			acts[k] = a.String()
		}
		fmt.Fprintf(&b, "  %3d: %s\n", i, strings.Join(acts, ", "))
	}
	return b.String()
}
