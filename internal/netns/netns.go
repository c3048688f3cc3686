// Package netns runs titanic processes on separate "hosts" for failover
// tests: each host is a Linux network namespace with its own address and a
// veth link to a shared bridge (the "switch", itself a namespace), so a test
// can kill or freeze a host's processes, take its link down (a loud cut) or
// drop its traffic with nftables (a silent partition).
//
// Everything the package creates lives in namespaces it made, named
// "tt-<pid>-<subnet>-<rand>-<name>": hosts get 10.77.<subnet>.N/24, where
// <subnet> is chosen (under a lock file) so that no two live test
// processes share one. The only change to the root namespace is the
// optional veth of Net.Attach, which lets the test process itself (a Go
// client, for instance) reach every host; it is deleted at cleanup.
// Namespaces left by a test process that died (its PID is in the names)
// are swept by the next New.
//
// The package needs root and iproute2's ip; Require skips the test
// otherwise (or fails it when TITANIC_NETNS_REQUIRED is set). Silent
// partitions need nft: when it is missing, the package installs nftables
// with apt-get once (as root), and skips the test if that fails.
package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/internal/harness"
)

const (
	prefix   = "tt-"
	bridge   = "br0"
	hostIf   = "eth0" // a host's end of its veth, inside the host
	nftTable = "titanic_test"
	octets   = "10.77."
	lockPath = "/run/titanic-netns.lock"
	netnsDir = "/run/netns"
	cmdLimit = 30 * time.Second // upper bound of one ip/nft/Run command
)

var (
	// ourName matches the namespaces this package makes: tt-<pid>-...
	ourName = regexp.MustCompile(`^tt-(\d+)-`)
	// subnetName reads the subnet of a Net's namespace: tt-<pid>-<subnet>-...
	subnetName = regexp.MustCompile(`^tt-\d+-(\d+)-`)
	hostName   = regexp.MustCompile(`^[a-z0-9][a-z0-9_]{0,19}$`)
	subnetUsed = regexp.MustCompile(`\b10\.77\.(\d+)\.`)
)

// --- availability -----------------------------------------------------------

var avail struct {
	once sync.Once
	err  error
}

// Available returns nil when network namespaces can be made here (Linux,
// root, ip present and `ip netns add`, a bridge and a veth work), or why
// not.
func Available() error {
	avail.once.Do(func() { avail.err = probe(os.Geteuid(), exec.LookPath) })
	return avail.err
}

// probe checks what Available reports; euid and lookPath are parameters
// so that tests can pretend to be someone else.
func probe(euid int, lookPath func(string) (string, error)) error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("network namespaces need Linux, this is %s", runtime.GOOS)
	}
	if euid != 0 {
		return fmt.Errorf("network namespaces need root, euid is %d", euid)
	}
	if _, err := lookPath("ip"); err != nil {
		return fmt.Errorf("iproute2's ip is not installed: %v", err)
	}
	name := fmt.Sprintf("%s%d-probe%s", prefix, os.Getpid(), randHex(2))
	if _, err := ip("netns", "add", name); err != nil {
		return err
	}
	defer func() { _, _ = ip("netns", "del", name) }()
	for _, args := range [][]string{
		{"-n", name, "link", "add", bridge, "type", "bridge"},
		{"-n", name, "link", "add", "pa", "type", "veth", "peer", "name", "pb"},
	} {
		if _, err := ip(args...); err != nil {
			return err
		}
	}
	return nil
}

// Require skips the test when namespaces cannot be made here, saying why;
// with TITANIC_NETNS_REQUIRED set in the environment it fails it instead.
func Require(tb testing.TB) {
	tb.Helper()
	requireErr(tb, Available())
}

func requireErr(tb testing.TB, err error) {
	tb.Helper()
	if err == nil {
		return
	}
	if os.Getenv("TITANIC_NETNS_REQUIRED") != "" {
		tb.Fatalf("netns: %v (TITANIC_NETNS_REQUIRED is set)", err)
	}
	tb.Skipf("netns: skipped: %v", err)
}

// --- the network ------------------------------------------------------------

// Net is one test's network: a switch namespace holding a bridge, and the
// hosts linked to it. Its methods that take no testing.TB (Host, Attach)
// report errors to the test that called New, so call them from that test's
// goroutine.
type Net struct {
	// ID prefixes the names of the Net's namespaces: tt-<pid>-<subnet>-<rand>.
	ID string
	// Subnet is the hosts' network, 10.77.<subnet>.0/24.
	Subnet string

	tb     testing.TB
	x      int    // the third octet
	sw     string // the switch namespace
	mu     sync.Mutex
	nss    []string // namespaces made, switch first
	hosts  []*Host
	procs  []*Process
	next   int    // next host number: 10.77.x.next
	rootIf string // root end of Attach's veth
	rootIP string
	closed bool
}

// New makes a switch namespace with a bridge. The test's cleanup kills
// every process started on the Net's hosts (by PID, SIGKILL, then wait),
// deletes the root end of Attach's veth and every namespace the Net made,
// whether the test passed or not. New skips the test when Require would.
func New(tb testing.TB) *Net {
	tb.Helper()
	Require(tb)
	n := &Net{tb: tb, next: 1}
	tb.Cleanup(n.cleanup)

	unlock, err := lock()
	if err != nil {
		tb.Fatalf("netns: %v", err)
	}
	sweep(tb.Logf)
	x, err := pickSubnet()
	if err == nil {
		n.x = x
		n.ID = fmt.Sprintf("%s%d-%d-%s", prefix, os.Getpid(), x, randHex(2))
		n.Subnet = fmt.Sprintf("%s%d.0/24", octets, x)
		n.sw = n.ID + "-sw"
		err = n.addNS(n.sw)
	}
	unlock()
	if err != nil {
		tb.Fatalf("netns: %v", err)
	}
	n.must(
		[]string{"-n", n.sw, "link", "set", "lo", "up"},
		[]string{"-n", n.sw, "link", "add", bridge, "type", "bridge", "forward_delay", "0"},
		[]string{"-n", n.sw, "link", "set", bridge, "up"},
	)
	return n
}

// addNS makes a namespace and records it for cleanup.
func (n *Net) addNS(name string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errors.New("the Net is already cleaned up")
	}
	if _, err := ip("netns", "add", name); err != nil {
		return err
	}
	n.nss = append(n.nss, name)
	return nil
}

// must runs ip commands, failing the Net's test on the first error.
func (n *Net) must(cmds ...[]string) {
	n.tb.Helper()
	for _, args := range cmds {
		if _, err := ip(args...); err != nil {
			n.tb.Fatalf("netns: %v", err)
		}
	}
}

// addr hands out the next host address.
func (n *Net) addr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.next > 250 {
		n.tb.Fatalf("netns: more than 250 hosts on one Net")
	}
	a := fmt.Sprintf("%s%d.%d", octets, n.x, n.next)
	n.next++
	return a
}

// Host is a namespace linked to the Net's switch.
type Host struct {
	Name string // as given to Net.Host
	NS   string // namespace: <Net.ID>-<Name>
	Addr string // IPv4 address, on the host's eth0

	net         *Net
	port        string // the switch's end of the host's veth
	mu          sync.Mutex
	partitioned bool
}

// Host makes a namespace "<Net.ID>-<name>" with lo up and a veth (eth0)
// to the switch, with the next address of the subnet. Names are lower-case
// letters, digits and _, at most 20, unique on the Net.
func (n *Net) Host(name string) *Host {
	n.tb.Helper()
	if !hostName.MatchString(name) || name == "sw" {
		n.tb.Fatalf("netns: bad host name %q (want [a-z0-9_], at most 20, not \"sw\")", name)
	}
	n.mu.Lock()
	for _, h := range n.hosts {
		if h.Name == name {
			n.mu.Unlock()
			n.tb.Fatalf("netns: host %q already exists", name)
		}
	}
	n.mu.Unlock()
	a := n.addr()
	num := a[strings.LastIndexByte(a, '.')+1:]
	h := &Host{Name: name, NS: n.ID + "-" + name, Addr: a, net: n, port: "h" + num}
	if err := n.addNS(h.NS); err != nil {
		n.tb.Fatalf("netns: %v", err)
	}
	n.must(
		[]string{"-n", h.NS, "link", "set", "lo", "up"},
		[]string{"-n", n.sw, "link", "add", h.port, "type", "veth", "peer", "name", hostIf, "netns", h.NS},
		[]string{"-n", n.sw, "link", "set", h.port, "master", bridge},
		[]string{"-n", n.sw, "link", "set", h.port, "up"},
		[]string{"-n", h.NS, "addr", "add", a + "/24", "dev", hostIf},
		[]string{"-n", h.NS, "link", "set", hostIf, "up"},
	)
	n.mu.Lock()
	n.hosts = append(n.hosts, h)
	n.mu.Unlock()
	return h
}

// Attach links the root namespace (the test process) to the switch with a
// veth and an address of the subnet, which it returns, so that in-process
// clients reach every host. The root end is named ttr<subnet>-<rand>; it is
// deleted at cleanup. Attaching again returns the same address.
func (n *Net) Attach() string {
	n.tb.Helper()
	n.mu.Lock()
	if n.rootIP != "" {
		defer n.mu.Unlock()
		return n.rootIP
	}
	n.mu.Unlock()
	a := n.addr()
	name := fmt.Sprintf("ttr%d-%s", n.x, randHex(2))
	n.mu.Lock()
	n.rootIf = name // set first: cleanup deletes it even if what follows fails
	n.mu.Unlock()
	n.must(
		[]string{"link", "add", name, "type", "veth", "peer", "name", "root0", "netns", n.sw},
		[]string{"-n", n.sw, "link", "set", "root0", "master", bridge},
		[]string{"-n", n.sw, "link", "set", "root0", "up"},
		[]string{"addr", "add", a + "/24", "dev", name},
		[]string{"link", "set", name, "up"},
	)
	n.mu.Lock()
	n.rootIP = a
	n.mu.Unlock()
	return a
}

// Hosts returns the Net's hosts, in the order they were made.
func (n *Net) Hosts() []*Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.hosts)
}

// track records a process for the Net's cleanup; false once it has run.
func (n *Net) track(p *Process) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.procs = append(n.procs, p)
	return true
}

// cleanup kills the processes, then deletes the root veth and the
// namespaces. Errors are reported, not fatal: everything is attempted.
func (n *Net) cleanup() {
	n.mu.Lock()
	n.closed = true
	procs, nss, rootIf := n.procs, n.nss, n.rootIf
	n.mu.Unlock()
	for _, p := range procs {
		p.Kill()
	}
	// Whatever else runs in our namespaces (a Run that outlived its
	// command, a worker's child): SIGKILL by PID, wait until gone.
	for _, ns := range slices.Backward(nss) {
		if err := killIn(ns); err != nil {
			n.tb.Errorf("netns cleanup: %v", err)
		}
	}
	if rootIf != "" {
		if out, err := ip("link", "del", rootIf); err != nil && !bytes.Contains(out, []byte("Cannot find device")) {
			n.tb.Errorf("netns cleanup: %v", err)
		}
	}
	for _, ns := range slices.Backward(nss) {
		if _, err := ip("netns", "del", ns); err != nil {
			n.tb.Errorf("netns cleanup: %v", err)
		}
	}
}

// --- host operations --------------------------------------------------------

// Endpoint returns tcp://<Addr>:<port>.
func (h *Host) Endpoint(port int) string { return fmt.Sprintf("tcp://%s:%d", h.Addr, port) }

// Run runs a short command in the host's namespace (ip netns exec; killed
// after 30 s) and returns its combined output.
func (h *Host) Run(tb testing.TB, name string, args ...string) ([]byte, error) {
	tb.Helper()
	return runIn(h.NS, nil, name, args...)
}

// LinkDown sets the host's eth0 down: a loud cut. The host's own sockets
// get "network unreachable" at once; peers' packets to it are lost, and
// since their ARP entries for it are flushed, new connections to it fail
// with "no route to host" once ARP gives up (about 3 s), or time out first.
func (h *Host) LinkDown(tb testing.TB) {
	tb.Helper()
	if _, err := ip("-n", h.NS, "link", "set", hostIf, "down"); err != nil {
		tb.Fatalf("netns: %v", err)
	}
	n := h.net
	for _, o := range n.Hosts() {
		if o != h {
			_, _ = ip("-n", o.NS, "neigh", "flush", "to", h.Addr)
		}
	}
	n.mu.Lock()
	rootIf := n.rootIf
	n.mu.Unlock()
	if rootIf != "" {
		_, _ = ip("neigh", "flush", "to", h.Addr, "dev", rootIf)
	}
}

// LinkUp sets the host's eth0 up again; its address and route come back.
func (h *Host) LinkUp(tb testing.TB) {
	tb.Helper()
	if _, err := ip("-n", h.NS, "link", "set", hostIf, "up"); err != nil {
		tb.Fatalf("netns: %v", err)
	}
}

// Partition cuts the host off, silently, from others (from everyone but
// itself when none is given): nftables rules in the host's namespace (table
// inet titanic_test) drop its packets from and to them, so connections
// time out instead of being refused. Partitioning again replaces the cut.
// The test is skipped when nft is missing and cannot be installed.
func (h *Host) Partition(tb testing.TB, others ...*Host) {
	tb.Helper()
	addrs := make([]string, len(others))
	for i, o := range others {
		addrs[i] = o.Addr
	}
	h.PartitionAddrs(tb, addrs...)
}

// PartitionAddrs is Partition by IPv4 address (the address Net.Attach
// returned cuts the test process off). No address: from everyone.
func (h *Host) PartitionAddrs(tb testing.TB, addrs ...string) {
	tb.Helper()
	RequireNft(tb)
	in, out := `iifname != "lo" drop`, `oifname != "lo" drop`
	if len(addrs) > 0 {
		for _, a := range addrs {
			if ip := net.ParseIP(a); ip == nil || ip.To4() == nil {
				tb.Fatalf("netns: partition: %q is not an IPv4 address", a)
			}
		}
		set := "{ " + strings.Join(addrs, ", ") + " }"
		in, out = "ip saddr "+set+" drop", "ip daddr "+set+" drop"
	}
	h.partition(tb, in, out)
}

// PartitionPort cuts, silently, only the TCP traffic of port (as source
// or destination) between the host and others: packets of that port from
// and to them are dropped, anything else passes (a cut of one service's
// link, such as raft's, while the others stay up). Partitioning again
// replaces the cut.
func (h *Host) PartitionPort(tb testing.TB, port int, others ...*Host) {
	tb.Helper()
	set := portCut(tb, port, others)
	rules := func(dir string) string {
		return fmt.Sprintf("ip %[1]s %[2]s tcp sport %[3]d drop\n\t\tip %[1]s %[2]s tcp dport %[3]d drop", dir, set, port)
	}
	h.partition(tb, rules("saddr"), rules("daddr"))
}

// PartitionPortTo cuts, silently, only the connections this host opens
// to port on others: its packets to that port of theirs, and theirs from
// it, are dropped; connections they open to this host's port pass (a
// one-way cut of one service's link: this host cannot reach their
// raft, they reach its). Partitioning again replaces the cut.
func (h *Host) PartitionPortTo(tb testing.TB, port int, others ...*Host) {
	tb.Helper()
	set := portCut(tb, port, others)
	h.partition(tb, fmt.Sprintf("ip saddr %s tcp sport %d drop", set, port), fmt.Sprintf("ip daddr %s tcp dport %d drop", set, port))
}

// portCut checks a cut of port between a host and others (nft present,
// a port, at least one other host) and returns the others' addresses as
// an nftables set.
func portCut(tb testing.TB, port int, others []*Host) string {
	tb.Helper()
	RequireNft(tb)
	if len(others) == 0 || port <= 0 || port > 65535 {
		tb.Fatalf("netns: partition port %d: want a port and at least one other host", port)
	}
	addrs := make([]string, len(others))
	for i, o := range others {
		addrs[i] = o.Addr
	}
	return "{ " + strings.Join(addrs, ", ") + " }"
}

// partition installs the host's partition rules: in and out are the rules
// of its input and output chains.
func (h *Host) partition(tb testing.TB, in, out string) {
	tb.Helper()
	// Declaring the table first makes the delete work when it is absent:
	// the whole file is one atomic transaction.
	rules := fmt.Sprintf(`table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	chain input {
		type filter hook input priority -100; policy accept;
		%[2]s
	}
	chain output {
		type filter hook output priority -100; policy accept;
		%[3]s
	}
}
`, nftTable, in, out)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.partitioned = true // set first: a half-applied cut is still healed
	if out, err := runIn(h.NS, strings.NewReader(rules), "nft", "-f", "-"); err != nil {
		tb.Fatalf("netns: partition %s: %v\n%s", h.Name, err, out)
	}
}

// Heal deletes the host's partition rules; it does nothing when the host is
// not partitioned.
func (h *Host) Heal(tb testing.TB) {
	tb.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.partitioned {
		return
	}
	rules := fmt.Sprintf("table inet %[1]s\ndelete table inet %[1]s\n", nftTable)
	if out, err := runIn(h.NS, strings.NewReader(rules), "nft", "-f", "-"); err != nil {
		tb.Fatalf("netns: heal %s: %v\n%s", h.Name, err, out)
	}
	h.partitioned = false
}

// --- nftables ---------------------------------------------------------------

var nft struct {
	once sync.Once
	err  error
}

// RequireNft skips the test unless nft is installed. When it is missing
// and we are root, it first installs nftables with apt-get (once per test
// process).
func RequireNft(tb testing.TB) {
	tb.Helper()
	nft.once.Do(func() { nft.err = installNft() })
	if nft.err != nil {
		if os.Getenv("TITANIC_NETNS_REQUIRED") != "" {
			tb.Fatalf("netns: silent partitions need nft: %v (TITANIC_NETNS_REQUIRED is set)", nft.err)
		}
		tb.Skipf("netns: skipped: silent partitions need nft: %v", nft.err)
	}
}

func installNft() error {
	if _, err := exec.LookPath("nft"); err == nil {
		return nil
	}
	if os.Geteuid() != 0 {
		return errors.New("nft is not installed, and installing nftables needs root")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return errors.New("nft is not installed, and there is no apt-get to install nftables")
	}
	install := []string{"install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=120", "nftables"}
	_, err := aptGet(install...)
	if err != nil {
		// The package lists may be missing or stale.
		if out2, err2 := aptGet("update", "-q", "-o", "DPkg::Lock::Timeout=120"); err2 != nil {
			return fmt.Errorf("apt-get update: %v\n%s", err2, harness.Tail(out2, 10))
		}
		if out, err := aptGet(install...); err != nil {
			return fmt.Errorf("apt-get install nftables: %v\n%s", err, harness.Tail(out, 10))
		}
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return fmt.Errorf("nftables installed but nft is not in PATH: %v", err)
	}
	return nil
}

func aptGet(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "apt-get", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	return cmd.CombinedOutput()
}

// --- naming, locking, sweeping ----------------------------------------------

// lock takes the lock file that serializes subnet choice and sweeping
// between test processes. The kernel drops it if the process dies.
func lock() (unlock func(), err error) {
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", lockPath, err)
	}
	return func() { f.Close() }, nil
}

// namespaces lists the namespaces ip knows.
func namespaces() ([]string, error) {
	out, err := ip("netns", "list")
	if err != nil {
		return nil, err
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// sweep deletes the namespaces of ours whose creating process is dead,
// killing what still runs in them first.
func sweep(logf func(string, ...any)) {
	names, err := namespaces()
	if err != nil {
		logf("netns sweep: %v", err)
		return
	}
	for _, name := range names {
		m := ourName.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() || alive(pid) {
			continue
		}
		if err := killIn(name); err != nil {
			logf("netns sweep: %v", err)
		}
		if _, err := ip("netns", "del", name); err != nil {
			logf("netns sweep: %v", err)
			continue
		}
		logf("netns: swept stale namespace %s (pid %d is gone)", name, pid)
	}
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// pickSubnet chooses a third octet no namespace of ours and no root
// address or route uses. Call it under lock.
func pickSubnet() (int, error) {
	used := map[int]bool{}
	names, err := namespaces()
	if err != nil {
		return 0, err
	}
	for _, name := range names {
		if m := subnetName.FindStringSubmatch(name); m != nil {
			x, _ := strconv.Atoi(m[1])
			used[x] = true
		}
	}
	for _, args := range [][]string{{"-4", "-o", "addr", "show"}, {"-4", "route", "show", "table", "all"}} {
		out, err := ip(args...)
		if err != nil {
			return 0, err
		}
		for _, m := range subnetUsed.FindAllStringSubmatch(string(out), -1) {
			x, _ := strconv.Atoi(m[1])
			used[x] = true
		}
	}
	start := mrand.IntN(256)
	for i := range 256 {
		if x := (start + i) % 256; !used[x] {
			return x, nil
		}
	}
	return 0, errors.New("every 10.77.X.0/24 subnet is in use")
}

// killIn SIGKILLs every process in namespace ns and waits (up to 5 s)
// until none is left.
func killIn(ns string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids, err := pidsIn(ns)
		if err != nil || len(pids) == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still run in %s after SIGKILL", pids, ns)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pidsIn(ns string) ([]int, error) {
	out, err := ip("netns", "pids", ns)
	if err != nil {
		if bytes.Contains(out, []byte("No such file")) {
			return nil, nil
		}
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// --- commands ---------------------------------------------------------------

// ip runs iproute2's ip; the error carries the command and its output.
func ip(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdLimit)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// runIn runs a command in namespace ns, with stdin when not nil.
func runIn(ns string, stdin *strings.Reader, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	return cmd.CombinedOutput()
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
