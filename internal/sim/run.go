package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/titanicmq/titanic/store"
	"github.com/titanicmq/titanic/store/replica"
	"github.com/titanicmq/titanic/titanic/ha"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// Options configure a run.
type Options struct {
	Mode Mode
	Seed int64
	// Steps is the schedule's length (0: DefaultSteps), without the tail
	// of raft cuts half the pair schedules add (see Schedule.Steps).
	Steps int
	// NoRaftCuts leaves the cuts of the raft link alone (and the tail)
	// out of the schedule: the seed's schedule as it was before they
	// came, for the regressions found on it.
	NoRaftCuts bool
	// NoFence switches the pair's fencing off (replica.Config
	// FenceStride 0, which also leaves the solo journal empty), as the
	// first wave ran: the two sides of a split brain can then lead the
	// same term, and raft's log matching cannot tell them apart.
	NoFence bool
	// FailTransfers makes every raft leadership transfer of the pair's
	// role loops fail (ha.PairConfig.TransferLeadership), as on a raft
	// instance stuck by hashicorp/raft#696: a passive node that leads
	// raft must then step down for the pair to converge.
	FailTransfers bool
	// LeadPassive, once the schedule is over and the traffic stopped,
	// moves the pair's raft leadership from the serving node to its
	// passive peer (a real raft transfer), as an election the passive
	// wins does (under CPU load, issue 9): the role loops must give it
	// back. With FailTransfers they cannot transfer it, and only the
	// passive's step-down makes the pair converge.
	LeadPassive bool
	// RaftTimeout, when set, replaces raft's heartbeat and election
	// timeouts (100 ms; the lease is half of it), as a broker's 1 s
	// defaults: under -race a 50 ms lease lapses now and then, and the
	// elections that follow can hide a leader that holds on.
	RaftTimeout time.Duration
	// Settle bounds the wait for the run to settle once the faults are
	// healed (0: DefaultSettle).
	Settle time.Duration
	// Dir holds the nodes' directories; required.
	Dir string
	// Logger receives the nodes' logs and the run's own; nil: discarded.
	Logger *slog.Logger
}

// Result is what a run did and what the checker made of it.
type Result struct {
	Schedule Schedule
	History  *History
	Report   Report
	// Exits lists the role loops that stopped on their own (the
	// broker would exit), with their errors.
	Exits []string
	// TransferFailures counts the transfers FailTransfers failed.
	TransferFailures int
	// ClusterVersions is each node's cluster version at the end (0: down
	// or unknown); VersionStep is the first step at which a node's was
	// store.OpsRecordVersion (-1: never). Below it, a pair's handover
	// leaves out the adopted tickets' attempts (store.AdoptHistoryVersion).
	ClusterVersions []int
	VersionStep     int
	Took            time.Duration
}

// ErrConfig: invalid Options.
var ErrConfig = errors.New("sim: invalid options")

type cluster struct {
	opts  Options
	sched Schedule
	log   *slog.Logger
	net   *network
	clock clock
	nodes []*node
	peers []replica.Peer
	hist  *History

	leaseMu sync.Mutex
	leases  map[lease]bool

	scheduled chan struct{} // closed when the schedule's last step is done
	// draining: the traffic stopped; workers take the jobs left as fast
	// as they can, and none dies.
	draining atomic.Bool
	exitMu   sync.Mutex
	exits    []string
	// failedTransfers counts the transfers FailTransfers failed.
	failedTransfers atomic.Int64
	// versionStep: see Result.VersionStep (the stepper's).
	versionStep int
}

// DefaultSettle bounds the wait, once every fault is healed, for the run
// to settle: one node serving, at the current cluster version, the
// replicas caught up, every acknowledged ticket answered.
const DefaultSettle = 45 * time.Second

// finalFor bounds the final lookups: an answer that does not come within
// it is missing (Unanswered).
const finalFor = 15 * time.Second

// Run runs the schedule of opts.Seed and checks its history. The error
// is the harness's own (a node that cannot be opened at the start);
// whatever the nodes do wrong is in the Report.
func Run(ctx context.Context, opts Options) (Result, error) {
	start := time.Now()
	if opts.Mode != Pair && opts.Mode != Group || opts.Dir == "" {
		return Result{}, fmt.Errorf("%w: mode %v, dir %q", ErrConfig, opts.Mode, opts.Dir)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	sched := NewSchedule(opts.Mode, opts.Seed, opts.Steps)
	if opts.NoRaftCuts {
		sched = sched.withoutRaftCuts(opts.Steps)
	}
	c := &cluster{
		opts: opts, sched: sched, log: opts.Logger.With("component", "sim"),
		net: newNetwork(sched.Nodes), hist: &History{}, leases: map[lease]bool{},
		scheduled: make(chan struct{}), versionStep: -1,
	}
	for i := range sched.Nodes {
		id := fmt.Sprintf("n%d", i+1)
		var tag byte
		if opts.Mode == Pair {
			id, tag = "primary", ha.PrimaryTag
			if i == 1 {
				id, tag = "backup", ha.BackupTag
			}
		}
		c.nodes = append(c.nodes, &node{c: c, idx: i, id: id, tag: tag, dir: filepath.Join(opts.Dir, id), log: opts.Logger.With("node", id)})
		c.peers = append(c.peers, replica.Peer{ID: id, Addr: string(c.net.addrs[i])})
	}
	c.log.Info("schedule", "text", sched.String())
	for _, n := range c.nodes {
		if err := n.start(); err != nil {
			c.stopAll()
			return Result{}, fmt.Errorf("start %s: %w", n.id, err)
		}
	}

	steps, stopSteps := context.WithCancel(ctx)
	stepped := make(chan struct{})
	go func() {
		defer close(stepped)
		c.stepper(steps)
	}()
	traffic, stopTraffic := context.WithCancel(ctx)
	work, stopWork := context.WithCancel(ctx)
	var clients, others sync.WaitGroup
	for i := range sched.Clients {
		clients.Go(func() { c.client(traffic, ctx, i) })
	}
	for i := range sched.Lookers {
		others.Go(func() { c.looker(traffic, i) })
	}
	for i := range sched.Workers {
		others.Go(func() { c.worker(work, i) })
	}

	select {
	case <-c.scheduled:
	case <-ctx.Done():
	}
	stopTraffic()
	c.draining.Store(true)
	clients.Wait()
	c.log.Info("traffic stopped", "since_start", time.Since(start))
	if opts.LeadPassive && opts.Mode == Pair {
		c.leadPassive(ctx)
	}
	settled := c.settle(ctx)
	c.log.Info("settle over", "settled", settled, "since_start", time.Since(start))
	stopWork()
	others.Wait()
	c.finish(ctx, settled)
	c.log.Info("final answers taken", "since_start", time.Since(start))
	stopSteps()
	<-stepped
	versions := make([]int, len(c.nodes))
	for i, n := range c.nodes {
		if inc := n.current(); inc != nil {
			versions[i], _ = inc.rep.ClusterVersion(ctx)
		}
	}
	c.stopAll()

	res := Result{Schedule: sched, History: c.hist, Report: Check(c.hist), Exits: c.exits, TransferFailures: int(c.failedTransfers.Load()),
		ClusterVersions: versions, VersionStep: c.versionStep, Took: time.Since(start)}
	c.log.Info("done", "took", res.Took, "report", res.Report.String())
	return res, ctx.Err()
}

// stepper runs the schedule, one step per Step: its faults, then one
// Binary Star heartbeat. After the last step it heals every link and
// keeps every node running, and goes on beating until ctx is done.
func (c *cluster) stepper(ctx context.Context) {
	t := time.NewTicker(c.sched.Step)
	defer t.Stop()
	lastTry := map[int]int{}
	for step := 0; ; step++ {
		c.reap()
		switch {
		case step < len(c.sched.Steps):
			for _, a := range c.sched.Steps[step] {
				c.apply(step, a)
			}
		case step == len(c.sched.Steps):
			c.log.Info("schedule over: healing every link, restarting every node", "step", step)
			c.net.healAll()
			close(c.scheduled)
		}
		if step >= len(c.sched.Steps) {
			for _, n := range c.nodes {
				if n.current() == nil && step-lastTry[n.idx] >= 10 {
					lastTry[n.idx] = step
					c.apply(step, Action{Kind: Restart, From: n.idx})
				}
			}
		}
		c.beat()
		if c.versionStep < 0 {
			for _, n := range c.nodes {
				if inc := n.current(); inc != nil {
					if v, _ := inc.rep.ClusterVersion(ctx); v >= store.OpsRecordVersion {
						c.versionStep = step
						c.log.Info("cluster version raised to the current ops record version", "step", step, "node", n.id, "cluster_version", v)
						break
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// apply carries out one fault.
func (c *cluster) apply(step int, a Action) {
	n := c.nodes[a.From]
	switch a.Kind {
	case Cut:
		c.net.set(a.From, a.To, true)
	case Heal:
		c.net.set(a.From, a.To, false)
	case CutRaft:
		c.net.setRaft(a.From, a.To, true)
	case HealRaft:
		c.net.setRaft(a.From, a.To, false)
	case Crash:
		if n.current() == nil {
			return
		}
		if err := n.stop(); err != nil {
			c.exit(n, "crashed", err)
		}
	case Restart:
		if n.current() != nil {
			return
		}
		if err := n.start(); err != nil {
			c.exit(n, "cannot restart", err)
			return
		}
	case Vote:
		inc := n.current()
		if inc == nil || inc.pair == nil {
			return
		}
		ok := inc.pair.Admit(tsp.SvcSubmit)
		c.log.Info("step", "step", step, "action", a.String(), "admitted", ok, "star", inc.star.State().String())
		return
	}
	c.log.Info("step", "step", step, "action", a.String(), "cuts", strings.Join(c.net.cuts(), ", "))
}

// reap stops the nodes whose role loop ended on its own: the broker would
// exit (a replica that failed, Binary Star's error).
func (c *cluster) reap() {
	for _, n := range c.nodes {
		inc := n.current()
		if inc == nil {
			continue
		}
		select {
		case <-inc.done:
		default:
			continue
		}
		err := n.stop()
		if err == nil {
			err = errors.New("stopped without an error")
		}
		c.exit(n, "role loop ended", err)
	}
}

func (c *cluster) exit(n *node, what string, err error) {
	msg := fmt.Sprintf("%s: %s: %v", n.id, what, err)
	c.log.Warn("node exit", "node", n.id, "what", what, "err", err)
	c.exitMu.Lock()
	c.exits = append(c.exits, msg)
	c.exitMu.Unlock()
}

// beat moves the fake clock one heartbeat and carries each running
// node's Binary Star state to the peers it reaches.
func (c *cluster) beat() {
	c.clock.advance(heartbeat)
	if c.sched.Mode != Pair {
		return
	}
	incs := make([]*incarnation, len(c.nodes))
	for i, n := range c.nodes {
		incs[i] = n.current()
	}
	for a, from := range incs {
		for b, to := range incs {
			if a != b && from != nil && to != nil && c.net.reaches(a, b) {
				to.star.hear(from.star.State())
			}
		}
	}
	for _, inc := range incs {
		if inc != nil {
			inc.star.tick()
		}
	}
}

func (c *cluster) stopAll() {
	for _, n := range c.nodes {
		if err := n.stop(); err != nil {
			c.log.Debug("stop", "node", n.id, "err", err)
		}
	}
}

// settle waits until one node serves, every node is a voter that has
// applied what it has, and every acknowledged ticket is finished (or
// missing: lost) there. It reports whether that happened in time.
func (c *cluster) settle(ctx context.Context) bool {
	settleFor := c.opts.Settle
	if settleFor <= 0 {
		settleFor = DefaultSettle
	}
	deadline := time.Now().Add(settleFor)
	nextDump := time.Now().Add(10 * time.Second)
	for {
		why := c.unsettled(ctx, true)
		if why == "" {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.hist.stuck(fmt.Sprintf("not settled %s after the schedule: %s", settleFor, why))
			c.logStates("not settled: " + why)
			return false
		}
		if time.Now().After(nextDump) {
			nextDump = time.Now().Add(10 * time.Second)
			c.logStates("settling: " + why)
		}
		time.Sleep(c.sched.Step)
	}
}

// logStates logs each node's state: its role's (Binary Star, caught up,
// stand-down, withheld vote, halted or failed replica) and its raft's.
func (c *cluster) logStates(why string) {
	for _, n := range c.nodes {
		inc := n.current()
		if inc == nil {
			c.log.Warn("node state", "why", why, "node", n.id, "up", false)
			continue
		}
		st := inc.rep.Status()
		attrs := []any{"why", why, "node", n.id, "up", true, "raft", st.State, "term", st.Term,
			"last", st.LastIndex, "commit", st.CommitIndex, "applied", st.AppliedIndex, "leader", st.LeaderID}
		if ms, err := inc.rep.Members(); err == nil {
			attrs = append(attrs, "members", fmt.Sprintf("%+v", ms))
		}
		if inc.pair != nil {
			attrs = append(attrs, inc.pair.Describe()...)
		}
		c.log.Warn("node state", attrs...)
	}
}

// leadPassive moves raft leadership from the serving node of the pair to
// its passive peer (Options.LeadPassive). It waits for the run to have
// settled first (one node serving, both voters caught up), and gives up,
// saying so in the log, if that or the transfer does not come in time:
// the run goes on as it is, and Result.TransferFailures tells a test
// whether the passive led.
func (c *cluster) leadPassive(ctx context.Context) {
	deadline := time.Now().Add(DefaultSettle)
	for why := c.unsettled(ctx, false); why != ""; why = c.unsettled(ctx, false) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.log.Warn("lead passive: the pair did not settle first", "why", why)
			return
		}
		time.Sleep(c.sched.Step)
	}
	for try := 0; time.Now().Before(deadline) && ctx.Err() == nil; try++ {
		for i, n := range c.nodes {
			inc, peer := n.current(), c.nodes[1-i].current()
			if inc == nil || peer == nil || !inc.serving() || !inc.rep.IsLeader() {
				continue
			}
			err := inc.rep.TransferLeadership(peer.n.id, string(c.net.addrs[peer.n.idx]))
			c.log.Info("lead passive: raft leadership moved to the passive node", "from", n.id, "to", peer.n.id, "try", try, "err", err)
			if err != nil {
				continue
			}
			// settle comes next: it must not take the node that served a
			// moment ago, before its role loop has seen the change, for
			// the pair having converged.
			for inc.serving() && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			return
		}
		time.Sleep(c.sched.Step)
	}
	c.log.Warn("lead passive: no transfer to the passive node succeeded")
}

// unsettled says what keeps the run from having settled ("" when it has).
func (c *cluster) unsettled(ctx context.Context, tickets bool) string {
	var serving []*incarnation
	for _, n := range c.nodes {
		inc := n.current()
		if inc == nil {
			return n.id + " is down"
		}
		if inc.serving() {
			serving = append(serving, inc)
		}
	}
	if len(serving) != 1 {
		return fmt.Sprintf("%d nodes serve", len(serving))
	}
	l := serving[0]
	ms, err := l.rep.Members()
	if err != nil {
		return fmt.Sprintf("%s: members: %v", l.n.id, err)
	}
	voters := 0
	for _, m := range ms {
		if m.Voter {
			voters++
		}
	}
	if voters != len(c.nodes) {
		return fmt.Sprintf("%s's raft has %d voters: %+v", l.n.id, voters, ms)
	}
	if v, err := l.rep.ClusterVersion(ctx); err != nil || v < store.OpsRecordVersion {
		// Every node runs this build and reports it: the leader raises
		// the cluster version, as a broker's does.
		return fmt.Sprintf("%s's cluster version is %d, not %d (%v)", l.n.id, v, store.OpsRecordVersion, err)
	}
	applied, err := l.st.AppliedIndex(ctx)
	if err != nil {
		return fmt.Sprintf("%s: applied index: %v", l.n.id, err)
	}
	for _, n := range c.nodes {
		inc := n.current()
		if a, err := inc.st.AppliedIndex(ctx); err != nil || a != applied {
			return fmt.Sprintf("%s applied %d of the %d %s applied (%v)", n.id, a, applied, l.n.id, err)
		}
	}
	if !tickets {
		return ""
	}
	c.hist.mu.Lock()
	acks := append([]Ack(nil), c.hist.Acks...)
	c.hist.mu.Unlock()
	open := 0
	for _, a := range acks {
		t, err := l.rep.Get(ctx, a.Ticket)
		if err == nil && !t.State.Final() {
			open++
		}
	}
	if open > 0 {
		return fmt.Sprintf("%d acknowledged tickets unfinished on %s", open, l.n.id)
	}
	return ""
}

// finish takes the final answers and the stores' contents.
func (c *cluster) finish(ctx context.Context, settled bool) {
	// Workers are gone; what they applied last reaches every replica.
	deadline := time.Now().Add(10 * time.Second)
	for settled {
		why := c.unsettled(ctx, false)
		if why == "" {
			break
		}
		if time.Now().After(deadline) {
			c.hist.stuck("replicas did not catch up after the workers stopped: " + why)
			settled = false
		}
		time.Sleep(c.sched.Step)
	}
	c.hist.Final = map[store.ID]Answer{}
	rng := c.actorRand("final", 0)
	deadline = time.Now().Add(finalFor)
	for _, a := range c.hist.Acks {
		if _, ok := c.hist.Final[a.Ticket]; ok {
			continue
		}
		for time.Now().Before(deadline) {
			if inc := c.pickServing(rng); inc != nil {
				if l := c.lookup(ctx, inc, a.Ticket); l.Kind != Refused && l.Kind != NotReady {
					c.hist.Final[a.Ticket] = l.Answer
					break
				}
			}
			time.Sleep(c.sched.Step)
		}
	}
	if !settled {
		return
	}
	// The stores are read one after the other, and a write may still be
	// on its way: a worker stopped while its reply was in flight was
	// told ErrUncertain at once (replica.Node.Apply returns when its ctx
	// ends), and raft commits the entry all the same. Read between two
	// nodes' applying it, the stores looked different (the leader read
	// first, without the reply, the follower after, with it: seed
	// 30016 under -race on a loaded machine). So the stores count only
	// if every node's applied index was the same before and after all
	// of them were read.
	deadline = time.Now().Add(10 * time.Second)
	for try := 0; ; try++ {
		before, err := c.appliedIndexes(ctx)
		if err != nil {
			c.hist.stuck(err.Error())
			return
		}
		stores := map[string]map[store.ID]Stored{}
		for _, n := range c.nodes {
			inc := n.current()
			got, err := contents(ctx, inc.st)
			if err == nil {
				err = inc.st.Check(ctx)
			}
			if err != nil {
				c.hist.stuck(fmt.Sprintf("%s's store: %v", n.id, err))
				return
			}
			stores[n.id] = got
		}
		after, err := c.appliedIndexes(ctx)
		if err != nil {
			c.hist.stuck(err.Error())
			return
		}
		if slices.Equal(before, after) && slices.Min(after) == slices.Max(after) {
			c.hist.Stores = stores
			return
		}
		if time.Now().After(deadline) {
			c.hist.stuck(fmt.Sprintf("the replicas' applied indexes kept moving while their stores were read: %v, then %v", before, after))
			return
		}
		c.log.Info("stores read while entries were applied; again", "before", fmt.Sprint(before), "after", fmt.Sprint(after), "try", try)
		time.Sleep(c.sched.Step)
	}
}

// appliedIndexes returns every node's applied index (all are running).
func (c *cluster) appliedIndexes(ctx context.Context) ([]uint64, error) {
	out := make([]uint64, len(c.nodes))
	for i, n := range c.nodes {
		inc := n.current()
		if inc == nil {
			return nil, fmt.Errorf("%s is down", n.id)
		}
		a, err := inc.st.AppliedIndex(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: applied index: %w", n.id, err)
		}
		out[i] = a
	}
	return out, nil
}

// contents reads every ticket of st.
func contents(ctx context.Context, st *store.BoltStore) (map[store.ID]Stored, error) {
	out := map[store.ID]Stored{}
	var after store.ID
	for {
		page, err := st.List(ctx, store.Filter{After: after, Limit: 1000})
		if err != nil {
			return nil, fmt.Errorf("list: %w", err)
		}
		for _, t := range page {
			s := Stored{State: t.State}
			if t.State == store.StateDone {
				_, rep, err := st.Reply(ctx, t.ID)
				if err != nil {
					return nil, fmt.Errorf("reply of %s: %w", t.ID, err)
				}
				parts := make([]string, len(rep))
				for i, f := range rep {
					parts[i] = string(f)
				}
				s.Reply = strings.Join(parts, "|")
			}
			out[t.ID] = s
			after = t.ID
		}
		if len(page) < 1000 {
			return out, nil
		}
	}
}
