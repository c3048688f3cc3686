package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
)

func TestRequireSkips(t *testing.T) {
	noIP := func(name string) (string, error) {
		if name == "ip" {
			return "", exec.ErrNotFound
		}
		return exec.LookPath(name)
	}
	for _, c := range []struct {
		name   string
		euid   int
		look   func(string) (string, error)
		reason string
	}{
		{"not root", 1000, exec.LookPath, "need root"},
		{"no ip", 0, noIP, "ip is not installed"},
	} {
		err := probe(c.euid, c.look)
		if err == nil || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s: probe = %v, want an error saying %q", c.name, err, c.reason)
			continue
		}
		if os.Getenv("TITANIC_NETNS_REQUIRED") != "" {
			continue // requireErr fails instead of skipping
		}
		reached := false
		var skipped bool
		ok := t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			defer func() { skipped = t.Skipped() }()
			requireErr(t, err)
			reached = true
		})
		if !ok || reached || !skipped {
			t.Errorf("%s: requireErr(%v): passed=%v reached=%v skipped=%v, want a skip", c.name, err, ok, reached, skipped)
		}
	}
}

// serve accepts connections on l until it is closed, closing each.
func serve(t *testing.T, l net.Listener) string {
	t.Helper()
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l.Addr().String()
}

func listen(t *testing.T, h *Host) string {
	t.Helper()
	l, err := h.Listen("tcp", h.Addr+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", h.Name, err)
	}
	return serve(t, l)
}

// reach checks that from can connect to addr.
func reach(t *testing.T, from *Host, addr string) {
	t.Helper()
	var err error
	for range 3 { // a link just brought up may need a moment
		var c net.Conn
		if c, err = from.Dial("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("%s cannot reach %s: %v", from.Name, addr, err)
}

// silent checks that a connection from from to addr times out: the
// packets are dropped, nothing refuses them.
func silent(t *testing.T, from *Host, addr string) {
	t.Helper()
	c, err := from.Dial("tcp", addr, 600*time.Millisecond)
	if err == nil {
		c.Close()
		t.Fatalf("%s reached %s, want a silent cut", from.Name, addr)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%s -> %s: %v, want a timeout", from.Name, addr, err)
	}
}

// cut checks that a connection from from to addr fails, however.
func cut(t *testing.T, from *Host, addr string) error {
	t.Helper()
	c, err := from.Dial("tcp", addr, 600*time.Millisecond)
	if err == nil {
		c.Close()
		t.Fatalf("%s reached %s, want a cut", from.Name, addr)
	}
	return err
}

func TestLinksAndPartitions(t *testing.T) {
	t.Parallel()
	n := New(t)
	a, b := n.Host("a"), n.Host("b")
	root := n.Attach()
	if again := n.Attach(); again != root {
		t.Fatalf("Attach again = %s, want %s", again, root)
	}
	for _, h := range []*Host{a, b} {
		if !strings.HasPrefix(h.Addr, strings.TrimSuffix(n.Subnet, "0/24")) {
			t.Fatalf("%s has %s, outside %s", h.Name, h.Addr, n.Subnet)
		}
	}
	aAddr, bAddr := listen(t, a), listen(t, b)
	rl, err := net.Listen("tcp", root+":0")
	if err != nil {
		t.Fatal(err)
	}
	rootAddr := serve(t, rl)

	// Everyone reaches everyone: host to host with in-namespace sockets,
	// host to the test process with bash in the namespace (Run).
	reach(t, a, bAddr)
	reach(t, b, aAddr)
	for _, h := range []*Host{a, b} {
		rh, rp, _ := net.SplitHostPort(rootAddr)
		if out, err := h.Run(t, "bash", "-c", fmt.Sprintf("echo > /dev/tcp/%s/%s", rh, rp)); err != nil {
			t.Fatalf("%s cannot reach the test process at %s: %v\n%s", h.Name, rootAddr, err, out)
		}
	}
	if c, err := net.DialTimeout("tcp", bAddr, time.Second); err != nil {
		t.Fatalf("the test process cannot reach b: %v", err)
	} else {
		c.Close()
	}
	// A port nobody listens on is refused, loudly.
	closed := b.Addr + ":1"
	if _, err := a.Dial("tcp", closed, time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("a -> %s: %v, want connection refused", closed, err)
	}
	// The namespace is really separate: b's address is not local to a.
	if out, err := a.Run(t, "ip", "-4", "-o", "addr"); err != nil || strings.Contains(string(out), b.Addr+"/") {
		t.Fatalf("ip addr in a: %v\n%s", err, out)
	}

	t.Run("LinkDown", func(t *testing.T) {
		a.LinkDown(t)
		if err := cut(t, a, bAddr); !errors.Is(err, syscall.ENETUNREACH) {
			t.Errorf("a -> b with a's link down: %v, want network unreachable", err)
		}
		cut(t, b, aAddr)
		a.LinkUp(t)
		reach(t, a, bAddr)
		reach(t, b, aAddr)
	})

	t.Run("Partition", func(t *testing.T) {
		b.Partition(t, a)
		defer b.Heal(t)
		silent(t, a, bAddr)
		silent(t, a, closed) // not refused any more: dropped
		silent(t, b, aAddr)
		if c, err := net.DialTimeout("tcp", bAddr, time.Second); err != nil {
			t.Fatalf("the test process is not partitioned from b, yet: %v", err)
		} else {
			c.Close()
		}
		// The rules are in b's namespace only.
		if out, err := a.Run(t, "nft", "list", "tables"); err != nil || strings.Contains(string(out), nftTable) {
			t.Fatalf("nft list tables in a: %v\n%s", err, out)
		}
		if out, err := exec.Command("nft", "list", "tables").CombinedOutput(); err != nil || strings.Contains(string(out), nftTable) {
			t.Fatalf("nft list tables in the root namespace: %v\n%s", err, out)
		}

		b.Heal(t)
		reach(t, a, bAddr)
		reach(t, b, aAddr)
		b.Heal(t) // healing twice is harmless

		b.Partition(t) // from everyone, the test process too
		silent(t, a, bAddr)
		if c, err := net.DialTimeout("tcp", bAddr, 600*time.Millisecond); err == nil {
			c.Close()
			t.Fatal("the test process reached a fully partitioned b")
		}
		b.Heal(t)
		reach(t, a, bAddr)
	})

	t.Run("PartitionPort", func(t *testing.T) {
		// Two listeners on b; only the cut port goes silent, both ways
		// (a's listener on that port too), and only towards a.
		listenOn := func(h *Host, port int) string {
			t.Helper()
			l, err := h.Listen("tcp", fmt.Sprintf("%s:%d", h.Addr, port))
			if err != nil {
				t.Fatalf("listen on %s:%d: %v", h.Name, port, err)
			}
			return serve(t, l)
		}
		const port = 7411
		bCut, aCut := listenOn(b, port), listenOn(a, port)
		b.PartitionPort(t, port, a)
		defer b.Heal(t)
		silent(t, a, bCut)
		silent(t, b, aCut)
		reach(t, a, bAddr) // another port of b
		reach(t, b, aAddr)
		if c, err := net.DialTimeout("tcp", bCut, time.Second); err != nil {
			t.Fatalf("the test process cannot reach b's cut port, which is cut only from a: %v", err)
		} else {
			c.Close()
		}
		b.Heal(t)
		reach(t, a, bCut)
		reach(t, b, aCut)
	})
}

func TestBrokerOnHost(t *testing.T) {
	t.Parallel()
	n := New(t)
	h := n.Host("b1")
	n.Attach()
	br := h.Broker(t, "broker", t.TempDir(), "--log-level", "debug")

	// PID is titanic itself (ip execs it), in the host's namespace.
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", br.PID()))
	if err != nil {
		t.Fatal(err)
	}
	bin, _ := filepath.Abs(harness.Binary(t))
	want, _ := filepath.EvalSymlinks(bin)
	if exe != want {
		t.Fatalf("pid %d runs %s, want %s", br.PID(), exe, want)
	}
	var pst, nst syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", br.PID()), &pst); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(filepath.Join(netnsDir, h.NS), &nst); err != nil {
		t.Fatal(err)
	}
	if pst.Ino != nst.Ino {
		t.Fatalf("broker's netns inode %d, host's %d", pst.Ino, nst.Ino)
	}

	c, err := client.New(client.Config{Brokers: []string{h.Endpoint(5555)}, Timeout: 500 * time.Millisecond, Retries: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	submit := func() (string, error) {
		return c.Submit(ctx, "echo", [][]byte{[]byte("x")}, client.SubmitOptions{})
	}
	ticket, err := submit()
	if err != nil || len(ticket) != 32 {
		t.Fatalf("submit = %q, %v\n%s", ticket, err, br.Tail())
	}

	if err := br.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if _, err := submit(); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("submit to a stopped broker: %v, want ErrUnavailable", err)
	}
	if err := br.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if _, err := submit(); err != nil {
		t.Fatalf("submit after SIGCONT: %v\n%s", err, br.Tail())
	}

	// Killed and started again on the same data, it still knows the ticket.
	old := br.PID()
	br = br.Restart(t)
	if br.PID() == old {
		t.Fatal("restart kept the pid")
	}
	st, err := c.Status(ctx, ticket)
	if err != nil || st.State != "pending" {
		t.Fatalf("status after restart = %+v, %v\n%s", st, err, br.Tail())
	}
	if !strings.Contains(br.Tail(), "broker ready") {
		t.Fatalf("Tail has no ready line:\n%s", br.Tail())
	}
}

// TestDoZMQContext makes a ZeroMQ context inside host a (its first socket
// starts its I/O threads there) and connects from another goroutine to a
// listener of host b: the connection comes from a's address, though the
// test process itself is not attached and has no route to b.
func TestDoZMQContext(t *testing.T) {
	t.Parallel()
	n := New(t)
	a, b := n.Host("a"), n.Host("b")
	l, err := b.Listen("tcp", b.Addr+":0")
	if err != nil {
		t.Fatalf("listen on b: %v", err)
	}
	defer l.Close()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	// libzmq starts the context's I/O threads with its first socket.
	if err := a.Do(func() error {
		s, err := zctx.NewSocket(zmq.PUB)
		if err == nil {
			err = s.Close()
		}
		return err
	}); err != nil {
		t.Fatalf("first socket in a: %v", err)
	}
	defer func() { _ = zctx.Term() }()

	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	s, err := zctx.NewSocket(zmq.DEALER) // on this goroutine's thread, in the root namespace
	if err != nil {
		t.Fatal(err)
	}
	_ = s.SetLinger(0)
	defer s.Close()
	if err := s.Connect("tcp://" + l.Addr().String()); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-accepted:
		defer c.Close()
		if host, _, _ := net.SplitHostPort(c.RemoteAddr().String()); host != a.Addr {
			t.Fatalf("connection from %s, want host a's %s", host, a.Addr)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the context made in a did not connect to b within 5s")
	}
}

func TestCleanup(t *testing.T) {
	t.Parallel()
	Require(t)
	var (
		nss    []string
		rootIf string
		pids   []int
	)
	t.Run("net", func(t *testing.T) {
		n := New(t)
		h := n.Host("a")
		n.Attach()
		pids = append(pids, h.Broker(t, "broker", t.TempDir()).PID())
		// A process Start did not make, still running at cleanup.
		sleep := exec.Command("ip", "netns", "exec", h.NS, "sleep", "60")
		if err := sleep.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { _ = sleep.Wait() }()
		pids = append(pids, sleep.Process.Pid)
		// ip netns exec enters the namespace after it started: wait for
		// that, or cleanup could run before it is there to be found.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if in, _ := pidsIn(h.NS); slices.Contains(in, sleep.Process.Pid) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sleep (pid %d) not in namespace %s within 10s", sleep.Process.Pid, h.NS)
			}
		}
		nss, rootIf = slices.Clone(n.nss), n.rootIf
		if len(nss) != 2 || rootIf == "" {
			t.Fatalf("namespaces %v, root link %q", nss, rootIf)
		}
	})
	have, err := namespaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range nss {
		if slices.Contains(have, ns) {
			t.Errorf("namespace %s left after its test", ns)
		}
	}
	if out, err := exec.Command("ip", "link", "show", rootIf).CombinedOutput(); err == nil {
		t.Errorf("root link %s left after its test:\n%s", rootIf, out)
	}
	for _, pid := range pids {
		deadline := time.Now().Add(2 * time.Second)
		for alive(pid) && !zombie(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if alive(pid) && !zombie(pid) {
			t.Errorf("pid %d still runs after its test", pid)
		}
	}
}

func zombie(pid int) bool {
	state, err := procState(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && state == 'Z'
}

func TestSweepStale(t *testing.T) {
	t.Parallel()
	n := New(t) // a live Net of ours, which the sweep must keep
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := fmt.Sprintf("%s%d-0-dead-sw", prefix, dead.Process.Pid)
	// Held from the stale namespace's making to the sweep: any other
	// test process's New sweeps under this lock, and would otherwise
	// remove the namespace while it is being made.
	unlock, err := lock()
	if err != nil {
		t.Fatal(err)
	}
	locked := true
	defer func() {
		if locked {
			unlock()
		}
	}()
	if _, err := ip("netns", "add", stale); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = ip("netns", "del", stale) })
	// A process the dead test left running in its namespace.
	left := exec.Command("ip", "netns", "exec", stale, "sleep", "60")
	left.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := left.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { _ = left.Wait(); close(waited) }()
	t.Cleanup(func() { _ = syscall.Kill(-left.Process.Pid, syscall.SIGKILL) })
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if pids, _ := pidsIn(stale); len(pids) == 1 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("processes in %s: %v, want the sleep", stale, pids)
		}
	}
	sweep(t.Logf)
	unlock()
	locked = false
	have, err := namespaces()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(have, stale) {
		t.Errorf("stale namespace %s not swept", stale)
	}
	if !slices.Contains(have, n.sw) {
		t.Errorf("live namespace %s swept", n.sw)
	}
	select {
	case <-waited:
	case <-time.After(2 * time.Second):
		t.Errorf("the process left in %s was not killed", stale)
	}
}
