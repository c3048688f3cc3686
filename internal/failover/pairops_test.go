package failover

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
)

// wipe empties a stopped node's data directory, as a replaced disk would
// leave it.
func wipe(t *testing.T, n *node) {
	t.Helper()
	entries, err := os.ReadDir(n.dir)
	if err != nil {
		t.Fatalf("wipe %s: %v", n.name, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(n.dir, e.Name())); err != nil {
			t.Fatalf("wipe %s: %v", n.name, err)
		}
	}
}

// takeOverAlone kills the active, waits for the passive to serve the
// load alone and checks every ack so far against it alone (the killed
// node's data cannot hide a loss), then restarts the killed node and
// waits for the pair to be whole.
// earlier are acks of an earlier load, checked with ld's.
func takeOverAlone(t *testing.T, p pairRun, ld *load, earlier []ack, active, passive *node) {
	t.Helper()
	active.kill()
	ld.progress(t, 50, 30*time.Second, fmt.Sprintf("acks after killing the active %s (%s must take over)", active.name, passive.name), p.dg)
	acks := append(slices.Clone(earlier), ld.finish(t, p.dg)...)
	checkAcks(t, p.ctx, []string{passive.endpoint()}, acks, p.dg)
	active.start(t)
	waitPairHealthy(t, p.ctx, p.primary, p.backup, 60*time.Second)
	checkAcks(t, p.ctx, p.brokers, acks, p.dg)
	checkOneServerPerTerm(t, p.primary, p.backup)
}

// TestPairPassiveDiskReplaced stops the passive, empties its data
// directory (a replaced disk) and starts it again while the active
// serves. README (Restore): a node with an empty data directory receives
// its peers' state through raft. Once the pair is whole again the
// emptied node must hold every acknowledged ticket: the active is killed
// and every ack is checked against the emptied node alone.
func TestPairPassiveDiskReplaced(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
	}{
		// The default timings: the active reforms raft alone while the
		// passive is away.
		{"reformed", nil},
		// A raft timeout long enough that the active keeps its term
		// and its membership across the passive's restart: the emptied
		// node comes back as a voter the active still counts.
		{"inTerm", inTermFlags},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := loadedPair(t, pairLoad{flags: tc.flags, workers: 3, clients: 4, timeout: clientTimeout, acks: 100, acksWithin: 60 * time.Second, wholeWithin: 60 * time.Second})
			active, passive := p.active, p.passive
			p.ld.progress(t, 100, 30*time.Second, "acks before the passive's disk is replaced", p.dg)
			passive.kill()
			wipe(t, passive)
			passive.start(t)
			if a, _ := waitPairHealthy(t, p.ctx, p.primary, p.backup, 60*time.Second); a != active {
				t.Fatalf("%s became active across the passive's disk replacement, want %s%s", a.name, active.name, p.dg())
			}
			p.ld.progress(t, 100, 30*time.Second, "acks after the emptied passive rejoined", p.dg)
			takeOverAlone(t, p, p.ld, nil, active, passive)
		})
	}
}

// inTermFlags are the brokers' flags for a restart of the passive
// inside the active's term: a raft timeout long enough that the active
// keeps its term and membership (as TestPairPassiveRestartInTerm).
var inTermFlags = []string{"--pair-heartbeat", "200ms", "--heartbeat", "200ms", "--raft-timeout", "6s", "--log-level", "debug"}

// TestPairPassiveLosesPartOfItsDirectory removes one part of the
// stopped passive's data directory, its raft directory or its data
// file (an operator's mistake, a lost volume), and starts it again while
// the active serves, then kills the active once the pair is whole: the
// passive must serve every acknowledged ticket, or refuse to start or to
// count as caught up; never take over without them.
func TestPairPassiveLosesPartOfItsDirectory(t *testing.T) {
	for _, lost := range []string{"raft", "titanic.db"} {
		for _, tc := range []struct {
			name  string
			flags []string
		}{{"reformed", nil}, {"inTerm", inTermFlags}} {
			t.Run(lost+"/"+tc.name, func(t *testing.T) {
				if tc.name == "inTerm" {
					// 10 s each; the reformed variant loses the same part.
					longOnly(t)
				}
				p := loadedPair(t, pairLoad{flags: tc.flags, workers: 3, clients: 4, timeout: clientTimeout, acks: 100, acksWithin: 60 * time.Second, wholeWithin: 60 * time.Second})
				active, passive := p.active, p.passive
				p.ld.progress(t, 100, 30*time.Second, "acks before the passive loses "+lost, p.dg)
				passive.kill()
				if err := os.RemoveAll(filepath.Join(passive.dir, lost)); err != nil {
					t.Fatal(err)
				}
				passive.start(t)
				if a, _ := waitPairHealthy(t, p.ctx, p.primary, p.backup, 60*time.Second); a != active {
					t.Fatalf("%s became active after the passive lost %s, want %s%s", a.name, lost, active.name, p.dg())
				}
				p.ld.progress(t, 100, 30*time.Second, "acks after the passive rejoined", p.dg)
				takeOverAlone(t, p, p.ld, nil, active, passive)
			})
		}
	}
}

// TestPairActivePausedLongerThanFailover SIGSTOPs the active for longer
// than the failover timeout (the passive takes over), then SIGCONTs it:
// it wakes as a second active. While it is frozen the operator's read
// commands are run against both nodes. Every ticket either acknowledged must
// survive, and the pair must serve again by itself, whole.
func TestPairActivePausedLongerThanFailover(t *testing.T) {
	p := loadedPair(t, pairLoad{workers: 3, clients: 4, timeout: clientTimeout, acks: 100, acksWithin: 60 * time.Second, wholeWithin: 60 * time.Second})
	active, passive := p.active, p.passive
	p.ld.progress(t, 50, 30*time.Second, "acks before the pause", p.dg)
	// The pause lasts a few failover timeouts past the takeover: the
	// woken node's timers (Binary Star's, raft's, its leases) have all
	// run out, as after a long GC pause or a VM migration. The operator
	// looks while the active is frozen: the commands must end, with an
	// answer from the other node or a clear error.
	pauseFor(t, p, active, 3*time.Second, 100, fmt.Sprintf("acks with the active %s paused (%s must take over)", active.name, passive.name), func() {
		for _, line := range cliReads(t, passive, p.brokers, p.ld.firstTicket()) {
			t.Logf("%s paused: %s", active.name, line)
		}
	})
	p.ld.progress(t, 100, 30*time.Second, "acks after the paused active woke", p.dg)
	waitPairHealthy(t, p.ctx, p.primary, p.backup, 60*time.Second)
	p.ld.progress(t, 50, 30*time.Second, "acks once the pair is whole again", p.dg)
	acks := p.ld.finish(t, p.dg)
	for _, n := range []*node{p.primary, p.backup} {
		if !n.running() {
			t.Fatalf("%s exited: %v%s", n.name, n.proc().Wait(), p.dg())
		}
	}
	checkForkAcks(t, p, acks)
}

// checkForkAcks is checkAcks after a paused active woke. The woken node
// goes on from its own log, its uncommitted tail included, while the
// peer served alone: a fork, merged as a split brain is (README, "A
// Binary Star pair": the backup yields and hands its changes over). A
// submit in that tail was not acknowledged; its client sent it again to
// the peer, which acknowledged another ticket for the key, and both are
// kept ("Where a keyed resend reached both sides, both tickets are kept
// and answered, and the key names the older"). So the store may hold one
// ticket never acknowledged per submitter of the load; every ack is still
// checked.
func checkForkAcks(t *testing.T, p pairRun, acks []ack) {
	t.Helper()
	checkAcksUnacked(t, p.ctx, p.brokers, acks, len(p.ld.stats), p.dg)
	checkOneServerPerTerm(t, p.primary, p.backup)
}

// unkeyed runs submitters that give no idempotency key (the Go client
// makes one random key per call): a failed call is made again, with a
// new key, so a ticket the failed call stored may stay beside the one
// acknowledged. failed counts those calls.
type unkeyed struct {
	*load
	failed atomic.Int64
}

func startUnkeyed(t *testing.T, ctx context.Context, brokers []string, n int) *unkeyed {
	t.Helper()
	u := &unkeyed{load: &load{changed: make(chan struct{}), errs: make(chan error, n), stop: make(chan struct{})}}
	for s := range n {
		cl, err := client.New(client.Config{Brokers: brokers, Timeout: clientTimeout, Retries: 10, Logger: quiet})
		if err != nil {
			t.Fatalf("client: %v", err)
		}
		t.Cleanup(func() { cl.Close() })
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			for i := 0; ; i++ {
				body := fmt.Sprintf("unkeyed %d-%d", s, i)
				for {
					select {
					case <-u.stop:
						return
					default:
					}
					tk, err := cl.Submit(ctx, "echo", [][]byte{[]byte(body)}, client.SubmitOptions{})
					if err == nil {
						u.add(ack{key: body, body: body, ticket: tk, at: time.Now()})
						break
					}
					if ctx.Err() != nil {
						return
					}
					u.failed.Add(1)
					if !(errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrServer)) {
						u.errs <- fmt.Errorf("unkeyed submit %q: %w", body, err)
						return
					}
					select {
					case <-time.After(20 * time.Millisecond):
					case <-ctx.Done():
						return
					}
				}
			}
		}()
	}
	return u
}

// firstTicket is the ticket of the load's first ack.
func (l *load) firstTicket() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acks[0].ticket
}

// cliReads runs the operator's read commands against both nodes of the
// pair and checks that each ends in time (no hang) with success or the
// CLI's "broker unavailable" (exit 6) and a message saying so. It returns
// one line per command, for the log.
func cliReads(t *testing.T, on *node, brokers []string, ticket string) []string {
	t.Helper()
	both := strings.Join(brokers, ",")
	var out []string
	for _, args := range [][]string{
		{"cluster", "--broker", both},
		{"stats", "--broker", both},
		{"tickets", "--broker", both},
		{"status", "--broker", both, ticket},
	} {
		start := time.Now()
		text, err := cli(t, on, args...)
		took := time.Since(start)
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("titanic %s: %v", strings.Join(args, " "), err)
		}
		if took > 30*time.Second {
			t.Errorf("titanic %s took %s during the failover", args[0], took.Round(time.Millisecond))
		}
		if code != 0 && (code != 6 || strings.TrimSpace(text) == "") {
			t.Errorf("titanic %s during the failover: exit %d, want 0 or 6 with a reason:\n%s", strings.Join(args, " "), code, text)
		}
		if strings.Contains(text, "panic:") || strings.Contains(text, "goroutine ") {
			t.Errorf("titanic %s crashed:\n%s", args[0], text)
		}
		first, _, _ := strings.Cut(strings.TrimSpace(text), "\n")
		out = append(out, fmt.Sprintf("%s: exit %d in %s: %s", args[0], code, took.Round(time.Millisecond), first))
	}
	return out
}

// TestPairRollingRestart restarts the passive, waits for the pair to be
// whole, then restarts the active (an upgrade, README "Upgrades"), with
// clients submitting all along, keyed and unkeyed, once with clean stops
// (SIGTERM: a drain) and once with SIGKILL. While the active is down the
// operator's read commands are run against both nodes. Every acknowledged
// ticket must be answered, keyed ones made once, and the store may hold
// no unkeyed ticket beyond the failed calls.
func TestPairRollingRestart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		clean bool
	}{{"sigterm", true}, {"sigkill", false}} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.clean {
				// A killed passive, then a killed active, each
				// restarted: the pair's failover tests kill them too.
				longOnly(t)
			}
			p := loadedPair(t, pairLoad{workers: 3, clients: 3, timeout: clientTimeout, acks: 50, acksWithin: 60 * time.Second, wholeWithin: 60 * time.Second})
			uk := startUnkeyed(t, p.ctx, p.brokers, 2)
			uk.progress(t, 20, 30*time.Second, "first unkeyed acks", p.dg)
			down := func(n *node) {
				t.Helper()
				if !tc.clean {
					n.kill()
					return
				}
				if err := n.proc().Stop(30 * time.Second); err != nil {
					t.Fatalf("SIGTERM %s: %v (want a drain and exit 0)%s", n.name, err, p.dg())
				}
			}
			active, passive := p.active, p.passive
			down(passive)
			p.ld.progress(t, 50, 30*time.Second, fmt.Sprintf("acks with the passive %s down", passive.name), p.dg)
			passive.start(t)
			if a, _ := waitPairHealthy(t, p.ctx, p.primary, p.backup, 60*time.Second); a != active {
				t.Fatalf("%s became active across the passive's restart, want %s%s", a.name, active.name, p.dg())
			}
			p.ld.progress(t, 50, 30*time.Second, "acks after the passive's restart", p.dg)
			uk.progress(t, 20, 30*time.Second, "unkeyed acks after the passive's restart", p.dg)

			down(active)
			p.ld.progress(t, 50, 30*time.Second, fmt.Sprintf("acks with the active %s down (%s must take over)", active.name, passive.name), p.dg)
			for _, line := range cliReads(t, passive, p.brokers, p.ld.firstTicket()) {
				t.Logf("%s down: %s", active.name, line)
			}
			active.start(t)
			if a, _ := waitPairHealthy(t, p.ctx, p.primary, p.backup, 60*time.Second); a != passive {
				t.Fatalf("%s is active after the rolling restart, want %s (it took over)%s", a.name, passive.name, p.dg())
			}
			p.ld.progress(t, 50, 30*time.Second, "acks after the rolling restart", p.dg)
			uk.progress(t, 20, 30*time.Second, "unkeyed acks after the rolling restart", p.dg)
			acks := p.ld.finish(t, p.dg)
			uacks := uk.finish(t, p.dg)
			t.Logf("%d keyed and %d unkeyed acks; %d unkeyed calls failed and were made again", len(acks), len(uacks), uk.failed.Load())
			checkAcksUnacked(t, p.ctx, p.brokers, append(acks, uacks...), int(uk.failed.Load()), p.dg)
			checkOneServerPerTerm(t, p.primary, p.backup)
		})
	}
}

// TestPairEmptiedNodeAloneDoesNotServe replaces the passive's disk, and
// before it is started again the active dies: the emptied node starts
// alone. It holds nothing; it must not serve (an empty queue would answer
// every acknowledged ticket as unknown and let keys make new tickets). When
// the node that holds the tickets returns, the pair is whole, and the
// emptied node, caught up, can take over with nothing lost.
func TestPairEmptiedNodeAloneDoesNotServe(t *testing.T) {
	p := loadedPair(t, pairLoad{workers: 3, clients: 4, timeout: clientTimeout, acks: 100, acksWithin: 60 * time.Second, wholeWithin: 60 * time.Second})
	active, passive := p.active, p.passive
	passive.kill()
	wipe(t, passive)
	p.ld.progress(t, 50, 30*time.Second, fmt.Sprintf("acks of %s alone", active.name), p.dg)
	active.kill()
	passive.start(t)
	n, refused := p.ld.count(), p.ld.clientStats().Refusals
	time.Sleep(3 * time.Second) // an observation window: nothing may happen
	if got := p.ld.count(); got > n+len(p.ld.stats) {
		t.Fatalf("%d submits acknowledged with only the emptied %s up%s", got-n, passive.name, p.dg())
	}
	if strings.Contains(lifeLog(passive), servingLine) {
		t.Fatalf("the emptied %s serves alone%s", passive.name, p.dg())
	}
	if got := p.ld.clientStats().Refusals; got == refused {
		t.Fatalf("no client was refused by the emptied %s in the window%s", passive.name, p.dg())
	}
	active.start(t)
	a, ps := waitPairHealthy(t, p.ctx, p.primary, p.backup, 60*time.Second)
	if a != active {
		t.Fatalf("%s became active, want %s, which holds the tickets%s", a.name, active.name, p.dg())
	}
	p.ld.progress(t, 50, 30*time.Second, "acks once the pair is whole again", p.dg)
	takeOverAlone(t, p, p.ld, nil, a, ps)
}

// TestPairPausedActiveAnswersQueuedSubmits SIGSTOPs the active while
// clients that know only it go on sending keyed submits: their tries
// wait in its sockets until SIGCONT, when it handles them before it can
// learn that its peer took over meanwhile. Whatever it acknowledges then
// must not be lost, and no key may make two tickets. Each such client's
// key that was never acknowledged is submitted again through both nodes
// at the end, so that every ticket in the store has an ack to check.
func TestPairPausedActiveAnswersQueuedSubmits(t *testing.T) {
	p := loadedPair(t, pairLoad{workers: 3, clients: 2, timeout: clientTimeout, acks: 50, acksWithin: 60 * time.Second, wholeWithin: 60 * time.Second})
	active, passive := p.active, p.passive

	type pinnedKey struct{ key, body string }
	var (
		mu      sync.Mutex
		pinned  []ack
		waiting []pinnedKey
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for s := range 3 {
		cl, err := client.New(client.Config{Brokers: []string{active.endpoint()}, Timeout: clientTimeout, Retries: 100, Logger: quiet})
		if err != nil {
			t.Fatalf("client: %v", err)
		}
		t.Cleanup(func() { cl.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				k := pinnedKey{fmt.Sprintf("p%d-%d", s, i), fmt.Sprintf("body of p%d-%d", s, i)}
				select {
				case <-stop:
					return
				default:
				}
				tk, err := cl.Submit(p.ctx, "echo", [][]byte{[]byte(k.body)}, client.SubmitOptions{IdemKey: k.key})
				mu.Lock()
				if err == nil {
					pinned = append(pinned, ack{key: k.key, body: k.body, ticket: tk, at: time.Now()})
				} else {
					waiting = append(waiting, k)
				}
				mu.Unlock()
				if err != nil {
					// The node it knows no longer serves: this client
					// stops, its key is settled at the end.
					return
				}
			}
		}()
	}
	p.ld.progress(t, 50, 30*time.Second, "acks before the pause", p.dg)
	pauseFor(t, p, active, 3*time.Second, 100, fmt.Sprintf("acks with the active %s paused (%s must take over)", active.name, passive.name), nil)
	wokeAt := time.Now()
	p.ld.progress(t, 100, 30*time.Second, "acks after the paused active woke", p.dg)
	waitPairHealthy(t, p.ctx, p.primary, p.backup, 60*time.Second)
	close(stop)
	wg.Wait()

	var late int
	for _, a := range pinned {
		if a.at.After(wokeAt) {
			late++
		}
	}
	cl, err := client.New(client.Config{Brokers: p.brokers, Timeout: clientTimeout, Retries: 20, Logger: quiet})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer cl.Close()
	for _, k := range waiting {
		tk, err := cl.Submit(p.ctx, "echo", [][]byte{[]byte(k.body)}, client.SubmitOptions{IdemKey: k.key})
		if err != nil {
			t.Fatalf("submit again %s: %v%s", k.key, err, p.dg())
		}
		pinned = append(pinned, ack{key: k.key, body: k.body, ticket: tk, at: time.Now()})
	}
	t.Logf("clients of %s alone: %d acks, %d of them after it woke; %d keys settled through both nodes", active.name, len(pinned)-len(waiting), late, len(waiting))
	acks := append(p.ld.finish(t, p.dg), pinned...)
	for _, n := range []*node{p.primary, p.backup} {
		if !n.running() {
			t.Fatalf("%s exited: %v%s", n.name, n.proc().Wait(), p.dg())
		}
	}
	checkForkAcks(t, p, acks)
}

// TestPairCompactPassiveThenTakeOver runs titanic compact on the stopped
// passive while the active serves (README, Data care: allowed, one node
// at a time), starts it again, waits for the pair to be whole, then kills
// the active: the compacted node must take over with every acknowledged
// ticket (TestPairCompactPassive checks the files, not a takeover).
func TestPairCompactPassiveThenTakeOver(t *testing.T) {
	p := loadedPair(t, pairLoad{workers: 3, clients: 4, timeout: clientTimeout, acks: 100, acksWithin: 60 * time.Second, wholeWithin: 60 * time.Second})
	active, passive := p.active, p.passive
	if err := passive.proc().Stop(30 * time.Second); err != nil {
		t.Fatalf("stop %s: %v%s", passive.name, err, p.dg())
	}
	if out, code := titanicCLI(t, "compact", "--data", passive.dir); code != 0 || !strings.Contains(out, "compacted and checked") {
		t.Fatalf("compact %s: exit %d\n%s", passive.name, code, out)
	}
	p.ld.progress(t, 100, 30*time.Second, fmt.Sprintf("acks of %s while %s is compacted", active.name, passive.name), p.dg)
	passive.start(t)
	if a, _ := waitPairHealthy(t, p.ctx, p.primary, p.backup, 60*time.Second); a != active {
		t.Fatalf("%s became active across the passive's compaction, want %s%s", a.name, active.name, p.dg())
	}
	p.ld.progress(t, 100, 30*time.Second, "acks after the compacted passive rejoined", p.dg)
	takeOverAlone(t, p, p.ld, nil, active, passive)
}

// backupRestorePair takes titanic backup of the active while it serves,
// stops both nodes, restores the backup on both and starts them as a new
// pair (README, Restore: "Pair or group").
func backupRestorePair(t *testing.T, p pairRun, active *node) {
	t.Helper()
	other := p.primary
	if active == p.primary {
		other = p.backup
	}
	// The passive stops first: no takeover.
	backupRestore(t, active, []*node{other, active}, p.dg)
	p.primary.start(t)
	p.backup.start(t)
}

// backupRestore takes titanic backup of from while it serves, stops
// nodes in their order and restores the backup on every one: started,
// they are a new pair or group.
func backupRestore(t *testing.T, from *node, nodes []*node, dg func() string) {
	t.Helper()
	if out, err := cli(t, from, "backup", "--broker", from.endpoint(), "restored.db"); err != nil {
		t.Fatalf("backup of %s: %v\n%s%s", from.name, err, out, dg())
	}
	file := filepath.Join(t.TempDir(), "restored.db")
	data, err := os.ReadFile(filepath.Join(from.dir, "backups", "restored.db"))
	if err != nil {
		t.Fatalf("the backup file: %v", err)
	}
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if err := n.proc().Stop(30 * time.Second); err != nil {
			t.Fatalf("stop %s: %v%s", n.name, err, dg())
		}
	}
	for _, n := range nodes {
		if out, code := titanicCLI(t, "restore", "--force", "--data", n.dir, file); code != 0 {
			t.Fatalf("restore on %s: exit %d\n%s", n.name, code, out)
		}
		n.restores = append(n.restores, len(n.procs))
	}
}

// TestPairBackupUnderLoadRestored takes a backup of the active while
// clients submit, restores it on both nodes as a new pair, and checks the
// restored pair: every ticket acknowledged before the backup was asked
// for is answered, the store holds no ticket but acknowledged ones and
// at most one in flight per submitter at the backup, and after the new
// pair's active is killed the other node answers the same.
func TestPairBackupUnderLoadRestored(t *testing.T) {
	p := loadedPair(t, pairLoad{workers: 3, clients: 4, timeout: clientTimeout, acks: 100, acksWithin: 60 * time.Second, wholeWithin: 60 * time.Second})
	p.ld.progress(t, 100, 30*time.Second, "acks before the backup", p.dg)
	asked := time.Now()
	backupRestorePair(t, p, p.active)
	acks := p.ld.finish(t, p.dg) // what came after the backup is not in it, as documented
	var before []ack
	byTicket := map[string]bool{}
	for _, a := range acks {
		byTicket[a.ticket] = true
		if a.at.Before(asked) {
			before = append(before, a)
		}
	}
	active, passive := waitPairHealthy(t, p.ctx, p.primary, p.backup, 60*time.Second)
	dial := func(brokers []string) func() *client.Client {
		return func() *client.Client {
			cl, err := client.New(client.Config{Brokers: brokers, Timeout: clientTimeout, Retries: 20, Logger: quiet})
			if err != nil {
				t.Fatalf("client: %v", err)
			}
			return cl
		}
	}
	answered := func(a ack, reply string) error {
		if want := "echo:" + a.body; reply != want {
			return fmt.Errorf("ticket %s (key %s) answered %q, want %q", a.ticket, a.key, reply, want)
		}
		return nil
	}
	answerAll(t, p.ctx, before, p.dg, dial(p.brokers), answered)
	cl := dial(p.brokers)()
	defer cl.Close()
	var stray []string
	for after := ""; ; {
		page, err := cl.List(p.ctx, client.ListOptions{After: after, Limit: 1000})
		if err != nil {
			t.Fatalf("list: %v%s", err, p.dg())
		}
		for _, ti := range page {
			if !byTicket[ti.Ticket] {
				stray = append(stray, ti.Ticket)
			}
			after = ti.Ticket
		}
		if len(page) < 1000 {
			break
		}
	}
	if len(stray) > len(p.ld.stats) {
		t.Fatalf("the restored pair holds %d tickets never acknowledged, at most %d were in flight at the backup: %v", len(stray), len(p.ld.stats), stray)
	}
	t.Logf("%d acks before the backup was asked for, %d in all; the restored store holds %d unacknowledged (in flight at the backup)", len(before), len(acks), len(stray))
	active.kill()
	answerAll(t, p.ctx, before, p.dg, dial([]string{passive.endpoint()}), answered)
}

// TestPairPowerLoss SIGKILLs both nodes at once (a power cut of the rack)
// under load and starts them again, one order or the other: the pair must
// serve again by itself, with every acknowledged ticket.
func TestPairPowerLoss(t *testing.T) {
	for _, activeFirst := range []bool{false, true} {
		name := "passiveStartsFirst"
		if activeFirst {
			name = "activeStartsFirst"
		}
		t.Run(name, func(t *testing.T) {
			p := loadedPair(t, pairLoad{workers: 3, clients: 4, timeout: clientTimeout, acks: 100, acksWithin: 60 * time.Second, wholeWithin: 60 * time.Second})
			active, passive := p.active, p.passive
			p.ld.progress(t, 100, 30*time.Second, "acks before the power cut", p.dg)
			var wg sync.WaitGroup
			for _, n := range []*node{active, passive} {
				wg.Add(1)
				go func() { defer wg.Done(); n.kill() }()
			}
			wg.Wait()
			order := []*node{passive, active}
			if activeFirst {
				order = []*node{active, passive}
			}
			for _, n := range order {
				n.start(t)
			}
			waitPairHealthy(t, p.ctx, p.primary, p.backup, 60*time.Second)
			p.ld.progress(t, 100, 30*time.Second, "acks after the power came back", p.dg)
			acks := p.ld.finish(t, p.dg)
			checkAcks(t, p.ctx, p.brokers, acks, p.dg)
			checkOneServerPerTerm(t, p.primary, p.backup)
		})
	}
}

// TestPairPassivePausedLongerThanFailover SIGSTOPs the passive for a few
// seconds (the active goes on alone), SIGCONTs it, waits for the pair to
// be whole and kills the active: the woken node must take over with
// every acknowledged ticket.
func TestPairPassivePausedLongerThanFailover(t *testing.T) {
	p := loadedPair(t, pairLoad{workers: 3, clients: 4, timeout: clientTimeout, acks: 100, acksWithin: 60 * time.Second, wholeWithin: 60 * time.Second})
	active, passive := p.active, p.passive
	pauseFor(t, p, passive, 3*time.Second, 100, fmt.Sprintf("acks of %s with %s paused", active.name, passive.name), nil)
	if a, _ := waitPairHealthy(t, p.ctx, p.primary, p.backup, 60*time.Second); a != active {
		t.Fatalf("%s became active after the passive's pause, want %s%s", a.name, active.name, p.dg())
	}
	p.ld.progress(t, 100, 30*time.Second, "acks after the passive woke", p.dg)
	takeOverAlone(t, p, p.ld, nil, active, passive)
}

// pauseFor SIGSTOPs n, runs during (if not nil), waits for acks more
// acks of the load, keeps n stopped until hold has passed since the stop
// and SIGCONTs it.
func pauseFor(t *testing.T, p pairRun, n *node, hold time.Duration, acks int, what string, during func()) {
	t.Helper()
	if err := n.proc().Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %s: %v", n.name, err)
	}
	pausedAt := time.Now()
	if during != nil {
		during()
	}
	p.ld.progress(t, acks, 30*time.Second, what, p.dg)
	time.Sleep(time.Until(pausedAt.Add(hold))) // the length of the fault, not synchronisation
	if err := n.proc().Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("SIGCONT %s: %v", n.name, err)
	}
}
