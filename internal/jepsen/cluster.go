package jepsen

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/internal/netns"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// Timing of every broker: MDP heartbeats every 200ms, raft heartbeat and
// election timeout 300ms, Binary Star heartbeat 200ms (the peer is lost
// after 400ms); tickets may be dispatched many times across faults before
// they fail for good.
var brokerFlags = []string{"--heartbeat", "200ms", "--raft-timeout", "300ms", "--max-attempts", "100", "--log-level", "info"}

// node is one broker host and every process that ran on it.
type node struct {
	name string
	host *netns.Host
	dir  string
	args []string

	mu    sync.Mutex
	lives []*life
}

// life is one process of a node.
type life struct {
	proc    *netns.Process // nil when it could not be started at all
	started time.Time
	killed  bool      // by the nemesis (or the end of the run)
	exitAt  time.Time // set when the process exits
	done    chan struct{}
}

func (n *node) endpoint() string { return n.host.Endpoint(5555) }

// start runs the node's broker again on its own data. An error means the
// broker exited (or stayed silent) before it was ready; the life is still
// recorded, with its log.
func (n *node) start(t testing.TB) error {
	t.Helper()
	n.mu.Lock()
	name := fmt.Sprintf("%s-%d", n.name, len(n.lives))
	n.mu.Unlock()
	l := &life{started: time.Now(), done: make(chan struct{})}
	p, err := n.host.TryBroker(t, name, n.dir, n.args...)
	l.proc = p
	n.mu.Lock()
	n.lives = append(n.lives, l)
	n.mu.Unlock()
	go func() {
		_ = p.Wait()
		n.mu.Lock()
		l.exitAt = time.Now()
		n.mu.Unlock()
		close(l.done)
	}()
	return err
}

// current is the node's last life.
func (n *node) current() *life {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.lives) == 0 {
		return nil
	}
	return n.lives[len(n.lives)-1]
}

// running reports whether the node's current process is alive.
func (n *node) running() bool {
	l := n.current()
	if l == nil {
		return false
	}
	select {
	case <-l.done:
		return false
	default:
		return true
	}
}

// kill SIGKILLs the current process and waits for it.
func (n *node) kill() {
	l := n.current()
	if l == nil {
		return
	}
	n.mu.Lock()
	l.killed = true
	n.mu.Unlock()
	l.proc.Kill()
}

// tail is the end of the current life's log, for messages.
func (n *node) tail() string {
	l := n.current()
	if l == nil {
		return "(never started)"
	}
	return l.proc.Tail()
}

// --- status -------------------------------------------------------------

// status is a node's answer to titanic.cluster.
type status struct {
	ID, State, Leader     string
	Term, Commit, Applied uint64
	Voters                []string
}

// clusterStatus asks one node for titanic.cluster, once.
func clusterStatus(ctx context.Context, zctx *zmq.Context, n *node) (status, error) {
	c := newRawClient(zctx, []string{n.endpoint()}, []string{n.name}, 300*time.Millisecond)
	defer c.Close()
	rep, _, err := c.call(ctx, tsp.SvcCluster, []byte{})
	if err != nil {
		return status{}, err
	}
	if len(rep) == 0 || string(rep[0]) != "200" {
		return status{}, fmt.Errorf("titanic.cluster answered %q", rep)
	}
	kv := map[string][]string{}
	for _, f := range rep[1:] {
		k, v, _ := strings.Cut(string(f), "=")
		kv[k] = append(kv[k], v)
	}
	one := func(k string) string { return cmp.Or(append(kv[k], "")...) }
	num := func(k string) uint64 { x, _ := strconv.ParseUint(one(k), 10, 64); return x }
	st := status{ID: one("id"), State: one("state"), Leader: one("leader"), Term: num("term"), Commit: num("commit"), Applied: num("applied")}
	for _, m := range kv["member"] {
		// id,addr,voter|nonvoter
		if f := strings.Split(m, ","); len(f) == 3 && f[2] == "voter" {
			st.Voters = append(st.Voters, f[0])
		}
	}
	return st, nil
}

// errBehind: a follower has not applied everything yet. When the
// leader's last entries change the configuration (which the store does
// not count as applied), only a new write lets it catch up.
var errBehind = errors.New("behind")

// wholeness tracks one wait for a whole cluster: the leader first seen
// and its commit index then, which every follower must reach.
type wholeness struct {
	leader string
	target uint64
}

// check returns the index of the leader when every node runs and
// answered (sts[i] is node i's status, errs[i] why it has none), exactly
// one leads with every node as a voter, and the others follow it and have
// applied what it had committed when it was first seen leading.
func (w *wholeness) check(names []string, sts []status, errs []error) (int, error) {
	leader := -1
	for i, st := range sts {
		if errs[i] != nil {
			return -1, fmt.Errorf("%s: %w", names[i], errs[i])
		}
		if st.State == "Leader" {
			if leader >= 0 {
				return -1, fmt.Errorf("%s and %s both lead (terms %d, %d)", names[leader], names[i], sts[leader].Term, st.Term)
			}
			leader = i
		}
	}
	if leader < 0 {
		return -1, errors.New("no leader")
	}
	ls := sts[leader]
	if len(ls.Voters) != len(sts) {
		return -1, fmt.Errorf("leader %s has voters %v", names[leader], ls.Voters)
	}
	if ls.ID != w.leader {
		w.leader, w.target = ls.ID, ls.Commit
	}
	for i, st := range sts {
		if i == leader {
			continue
		}
		if st.Leader != ls.ID {
			return -1, fmt.Errorf("%s follows %q, not %s", names[i], st.Leader, ls.ID)
		}
		if st.Applied < w.target {
			return -1, fmt.Errorf("%w: %s applied %d of %d", errBehind, names[i], st.Applied, w.target)
		}
	}
	return leader, nil
}

// --- logs ---------------------------------------------------------------

var (
	logTime    = regexp.MustCompile(`^time=(\S+)`)
	servingMsg = regexp.MustCompile(`msg="(not )?serving:`)
	// aloneMsg and joinedMsg are the lines that start and end a node's
	// branch: its raft with itself as the only voter (see FSolo).
	aloneMsg  = regexp.MustCompile(`msg="(raft reformed with this node as the only voter|only voter of its raft)`)
	joinedMsg = regexp.MustCompile(`msg="(peer added as a voter in this term|member joined|the active peer added this node|raft state moved aside)`)
)

// lifeOps reads a node's lives back: the intervals in which it served
// (FServe, by its log), when it became its raft's only voter and when it
// met its peer again (FSolo), and its exits nobody asked for (FExit). Lives still
// running end at now.
func (n *node) lifeOps(now time.Time) []Op {
	n.mu.Lock()
	lives := slices.Clone(n.lives)
	n.mu.Unlock()
	var ops []Op
	for _, l := range lives {
		n.mu.Lock()
		end, killed := l.exitAt, l.killed
		n.mu.Unlock()
		if end.IsZero() {
			end = now
		} else if !killed {
			ops = append(ops, Op{Time: end, Process: n.name, Type: OK, F: FExit, Node: n.name, Value: exitReason(l.proc.Log)})
		}
		var from time.Time
		serving := false
		harness.ForEachLine(l.proc.Log, func(line string) {
			m := servingMsg.FindStringSubmatch(line)
			solo := ""
			switch {
			case aloneMsg.MatchString(line):
				solo = "alone"
			case joinedMsg.MatchString(line):
				solo = "joined"
			}
			if m == nil && solo == "" {
				return
			}
			tm := logTime.FindStringSubmatch(line)
			if tm == nil {
				return
			}
			at, err := time.Parse(time.RFC3339Nano, tm[1])
			if err != nil {
				return
			}
			if solo != "" {
				ops = append(ops, Op{Time: at, Process: n.name, Type: OK, F: FSolo, Node: n.name, Value: solo})
				return
			}
			switch {
			case m[1] == "" && !serving:
				serving, from = true, at
			case m[1] != "" && serving:
				serving = false
				ops = append(ops, Op{Time: from, End: at, Process: n.name, Type: OK, F: FServe, Node: n.name})
			}
		})
		if serving {
			ops = append(ops, Op{Time: from, End: end, Process: n.name, Type: OK, F: FServe, Node: n.name})
		}
	}
	return ops
}

// exitReason names why a broker exited, from its log: the error line
// titanic prints last ("titanic broker: ...") or a panic, shortened to
// what matters.
func exitReason(path string) string {
	var last string
	harness.ForEachLine(path, func(line string) {
		if strings.HasPrefix(line, "titanic ") || strings.HasPrefix(line, "panic: ") {
			last = line
		}
	})
	switch {
	case last == "":
		return "exited without an error line"
	case strings.Contains(last, "dual active"):
		return "dual actives"
	case strings.Contains(last, "dual passive"):
		return "dual passives"
	case strings.Contains(last, "diverged"):
		return "store diverged"
	}
	if len(last) > 120 {
		last = last[:120] + "..."
	}
	return last
}
