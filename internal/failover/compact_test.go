package failover

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
)

// Lines that show a node was given, or restored, a whole snapshot instead
// of resuming from its own store and the log: raft's on the follower that
// receives one and on the leader that sends it, and the store's own when
// it is restored from one (at start too: a start that only checks a
// snapshot past the store's applied index, and keeps the store, logs
// "snapshot not restored").
var snapshotInstallLines = []string{
	"Installed remote snapshot",
	"copied to local snapshot",
	"installing snapshot on",
	"store restored from snapshot",
}

// TestGroupCompactFollower is README's Data care procedure for a
// replicated node: in a 3-node group whose store once held large tickets,
// most of them closed, one follower is stopped, `titanic compact` shrinks
// its data file (leaving the raft directory inside the data directory as
// it was), and it is started again while the others keep acknowledging.
// It resumes from its own store and the log: no node installs or restores
// a snapshot (it holds a real one of its own, taken before it stopped, so
// a compacted store that lost its applied index would be restored from
// it, and say so). It catches up with what was committed meanwhile, every
// acknowledged ticket is answered, and `titanic check` passes on its file
// with the ticket count the leader lists.
func TestGroupCompactFollower(t *testing.T) {
	// Snapshots often (so the follower has one of its own before it
	// stops), and a log long enough that catching up never needs one.
	nodes := groupWith(t, "--raft-snapshot-threshold", "64", "--raft-snapshot-interval", "300ms", "--raft-trailing-logs", "100000")
	brokers := endpoints(nodes...)
	dg := func() string { return diag(nodes...) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	echoWorkers(t, ctx, brokers, 3)
	waitGroupHealthy(t, ctx, nodes, 30*time.Second)

	cl, err := client.New(client.Config{Brokers: brokers, Timeout: clientTimeout, Retries: 20, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	kept := spaceToReturn(t, ctx, cl, dg)
	leader := waitGroupHealthy(t, ctx, nodes, 30*time.Second)
	var follower *node
	for _, n := range nodes {
		if n != leader {
			follower = n
			break
		}
	}
	raftDir := filepath.Join(follower.dir, "raft")
	eventually(t, 30*time.Second, follower.name+" holds a raft snapshot of its own", func() error {
		snaps, _ := filepath.Glob(filepath.Join(raftDir, "snapshots", "*", "meta.json"))
		if len(snaps) == 0 {
			return fmt.Errorf("no snapshot in %s", raftDir)
		}
		return nil
	}, dg)

	// The keyed load runs from here to the end: the follower misses what
	// is committed while it is down and must catch up with it.
	ld := startLoad(t, ctx, brokers, 4, clientTimeout)
	ld.progress(t, 50, 30*time.Second, "acks before the follower stops", dg)

	if err := follower.proc().Stop(30 * time.Second); err != nil {
		t.Fatalf("stop %s: %v%s", follower.name, err, dg())
	}
	before := compactStopped(t, follower)
	// Committed while the follower is down.
	ld.progress(t, 200, 60*time.Second, "acks while the follower is down", dg)

	follower.start(t)
	waitGroupHealthy(t, ctx, nodes, 60*time.Second)
	ld.progress(t, 100, 60*time.Second, "acks after the compacted follower rejoined", dg)
	acks := append(ld.finish(t, dg), kept...)
	checkAcks(t, ctx, brokers, acks, dg)
	leader = waitGroupHealthy(t, ctx, nodes, 60*time.Second)

	for _, n := range nodes {
		for _, line := range snapshotInstallLines {
			if strings.Contains(n.logs(), line) {
				t.Errorf("%s logged %q: the compacted follower did not resume from its own store and the log", n.name, line)
			}
		}
	}
	if !strings.Contains(lifeLog(follower), "broker ready") {
		t.Errorf("%s's log after compaction has no start-up line", follower.name)
	}

	out := checkCaughtUp(t, ctx, cl, leader, follower, len(acks), dg)
	t.Logf("%s compacted %d -> %d bytes, rejoined from the log: %d acknowledged tickets answered, check: %s",
		follower.name, before, fileSize(t, filepath.Join(follower.dir, "titanic.db")), len(acks), out)
}

// TestPairCompactPassive is the same procedure on a Binary Star pair: the
// passive node is stopped, compacted and started again while the active
// acknowledges. Unlike a group's follower it cannot resume from the log:
// the active, alone, reformed raft, which compacts the log, so the
// returning node is sent a snapshot, a copy of the active's data file
// (free pages included). It rejoins, nothing acknowledged is lost, and
// titanic check passes on its file; the test logs what became of the
// file's size (README, Data care). Then both nodes are stopped,
// compacted and started: both files stay small, nothing is lost.
func TestPairCompactPassive(t *testing.T) {
	p := loadedPair(t, pairLoad{workers: 3, wholeWithin: 30 * time.Second})
	primary, backup, brokers, ctx, dg := p.primary, p.backup, p.brokers, p.ctx, p.dg
	cl, err := client.New(client.Config{Brokers: brokers, Timeout: clientTimeout, Retries: 20, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	kept := spaceToReturn(t, ctx, cl, dg)
	active, passive := waitPairHealthy(t, ctx, primary, backup, 30*time.Second)
	ld := startLoad(t, ctx, brokers, 4, clientTimeout)
	ld.progress(t, 50, 30*time.Second, "acks before the passive stops", dg)
	if err := passive.proc().Stop(30 * time.Second); err != nil {
		t.Fatalf("stop %s: %v%s", passive.name, err, dg())
	}
	before := compactStopped(t, passive)
	compacted := fileSize(t, filepath.Join(passive.dir, "titanic.db"))
	ld.progress(t, 200, 60*time.Second, "acks while the passive is down", dg)
	passive.start(t)
	if a, _ := waitPairHealthy(t, ctx, primary, backup, 60*time.Second); a != active {
		t.Fatalf("%s serves after %s rejoined, want %s still", a.name, passive.name, active.name)
	}
	ld.progress(t, 100, 60*time.Second, "acks after the compacted passive rejoined", dg)
	acks := append(ld.finish(t, dg), kept...)
	checkAcks(t, ctx, brokers, acks, dg)
	out := checkCaughtUp(t, ctx, cl, active, passive, len(acks), dg)
	how := "from the log"
	if l := lifeLog(passive); strings.Contains(l, "Installed remote snapshot") || strings.Contains(l, "store restored from snapshot") {
		how = "from a snapshot of the active"
	}
	t.Logf("%s compacted %d -> %d bytes, rejoined %s: data file %d bytes (the active's %d); %d acknowledged tickets answered, check: %s",
		passive.name, before, compacted, how, fileSize(t, filepath.Join(passive.dir, "titanic.db")),
		fileSize(t, filepath.Join(active.dir, "titanic.db")), len(acks), out)

	// What does shrink a pair: both nodes stopped (the passive is), both
	// compacted, both started. Whichever is behind is sent a snapshot of
	// the other's compacted file.
	if err := active.proc().Stop(30 * time.Second); err != nil {
		t.Fatalf("stop %s: %v%s", active.name, err, dg())
	}
	for _, n := range []*node{passive, active} {
		compactStopped(t, n)
	}
	passive.start(t)
	active.start(t)
	active, passive = waitPairHealthy(t, ctx, primary, backup, 60*time.Second)
	checkAcks(t, ctx, brokers, acks, dg)
	out = checkCaughtUp(t, ctx, cl, active, passive, len(acks), dg)
	if err := active.proc().Stop(30 * time.Second); err != nil {
		t.Fatalf("stop %s: %v%s", active.name, err, dg())
	}
	for _, n := range []*node{primary, backup} {
		if size := fileSize(t, filepath.Join(n.dir, "titanic.db")); size*2 > before {
			t.Errorf("%s's data file is %d bytes after both were compacted and the pair rejoined, %d before: want at most half", n.name, size, before)
		}
	}
	t.Logf("both stopped and compacted: %s serves, %s rejoined: data files %d and %d bytes; check: %s", active.name, passive.name,
		fileSize(t, filepath.Join(active.dir, "titanic.db")), fileSize(t, filepath.Join(passive.dir, "titanic.db")), out)
}

// checkCaughtUp waits until n has applied what leader had committed, has
// the leader list its tickets (there must be acked of them), stops n and
// runs titanic check on its data file, which must hold as many. It
// returns check's report.
func checkCaughtUp(t *testing.T, ctx context.Context, cl *client.Client, leader, n *node, acked int, dg func() string) string {
	t.Helper()
	lst := statusOf(t, ctx, leader, dg)
	eventually(t, 30*time.Second, n.name+" applies the leader's last commit", func() error {
		st, err := clusterStatus(ctx, n.endpoint())
		if err != nil {
			return err
		}
		if st.Applied < lst.Commit {
			return fmt.Errorf("applied %d of %d", st.Applied, lst.Commit)
		}
		return nil
	}, dg)
	listed := 0
	for after := ""; ; {
		page, err := cl.List(ctx, client.ListOptions{After: after, Limit: 1000})
		if err != nil {
			t.Fatalf("list: %v%s", err, dg())
		}
		listed += len(page)
		if len(page) < 1000 {
			break
		}
		after = page[len(page)-1].Ticket
	}
	if listed != acked {
		t.Fatalf("the leader lists %d tickets, %d were acknowledged", listed, acked)
	}
	if err := n.proc().Stop(30 * time.Second); err != nil {
		t.Fatalf("stop %s: %v%s", n.name, err, dg())
	}
	out, code := titanicCLI(t, "check", "--data", n.dir)
	m := regexp.MustCompile(`ok, (\d+) tickets`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("check of the caught-up %s: exit %d\n%s", n.name, code, out)
	}
	if got, _ := strconv.Atoi(m[1]); got != listed {
		t.Fatalf("%s's store holds %d tickets, the leader lists %d", n.name, got, listed)
	}
	return strings.TrimSpace(out)
}

// spaceToReturn makes space for a compaction to give back: 200 answered
// tickets of 64 KiB (and their 64 KiB replies), 180 of them closed. It
// returns the 20 kept, to be checked like a load's tickets.
func spaceToReturn(t *testing.T, ctx context.Context, cl *client.Client, dg func() string) []ack {
	t.Helper()
	body := make([]byte, 64<<10)
	_, _ = rand.NewChaCha8([32]byte{9}).Read(body)
	// All submitted before any is closed: closing each as it is answered
	// would let the next reuse its pages, and the file would not grow.
	var big []ack
	for i := range 200 {
		key := fmt.Sprintf("big-%d", i)
		b := string(body) + key
		tk, err := cl.Submit(ctx, "echo", [][]byte{[]byte(b)}, client.SubmitOptions{IdemKey: key})
		if err != nil {
			t.Fatalf("submit %s: %v%s", key, err, dg())
		}
		big = append(big, ack{key: key, body: b, ticket: tk, at: time.Now()})
	}
	var kept []ack
	for i, a := range big {
		if _, err := cl.Reply(ctx, a.ticket, client.ReplyOptions{Wait: true, PollInterval: 50 * time.Millisecond}); err != nil {
			t.Fatalf("reply of %s: %v%s", a.key, err, dg())
		}
		if i%10 == 0 {
			kept = append(kept, a)
		} else if err := cl.CloseTicket(ctx, a.ticket); err != nil {
			t.Fatalf("close %s: %v%s", a.ticket, err, dg())
		}
	}
	return kept
}

// compactStopped runs titanic compact on a stopped node's data directory
// and checks the result: a file at most half the size, titanic check
// passing, and the raft directory inside the data directory unchanged.
// It returns the size before.
func compactStopped(t *testing.T, n *node) int64 {
	t.Helper()
	dbPath, raftDir := filepath.Join(n.dir, "titanic.db"), filepath.Join(n.dir, "raft")
	before := fileSize(t, dbPath)
	raftBefore := treeDigest(t, raftDir)
	out, code := titanicCLI(t, "compact", "--data", n.dir)
	if code != 0 || !strings.Contains(out, "compacted and checked") {
		t.Fatalf("compact %s: exit %d\n%s", n.dir, code, out)
	}
	t.Log(strings.TrimSpace(out))
	if after := fileSize(t, dbPath); after*2 > before {
		t.Fatalf("data file %d bytes after compaction, %d before: want at most half", after, before)
	}
	if raftAfter := treeDigest(t, raftDir); raftAfter != raftBefore {
		t.Fatalf("compact changed the raft directory %s:\nbefore:\n%s\nafter:\n%s", raftDir, raftBefore, raftAfter)
	}
	if out, code := titanicCLI(t, "check", "--data", n.dir); code != 0 {
		t.Fatalf("check after compaction: exit %d\n%s", code, out)
	}
	return before
}

// titanicCLI runs the binary with args and returns its combined output
// and exit code.
func titanicCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, harness.Binary(t), args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("titanic %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), 0
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// treeDigest lists every file under dir with its size and SHA-256, one a
// line, in path order.
func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		fmt.Fprintf(&b, "%s %d %x\n", rel, len(data), sha256.Sum256(data))
		return nil
	})
	if err != nil {
		t.Fatalf("digest of %s: %v", dir, err)
	}
	return b.String()
}
