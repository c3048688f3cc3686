package broker_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/titanicmq/titanic/broker/curve"
)

// maxCapture bounds the bytes a capture keeps.
const maxCapture = 64 << 20

// capture records the TCP traffic of one port on the loopback interface.
type capture interface {
	// stop ends the capture and returns what it saw: TCP payloads (raw
	// socket) or a pcap file (tcpdump); either holds the bytes sent.
	stop() ([]byte, error)
	name() string
}

// startCapture captures port on lo with a raw AF_PACKET socket, or with
// tcpdump when the raw socket is refused (no CAP_NET_RAW) and tcpdump is
// installed. TITANIC_TEST_CAPTURE=tcpdump forces tcpdump.
func startCapture(t *testing.T, port int) (capture, error) {
	t.Helper()
	var rawErr error
	if os.Getenv("TITANIC_TEST_CAPTURE") != "tcpdump" {
		c, err := startRawCapture(port)
		if err == nil {
			return c, nil
		}
		rawErr = fmt.Errorf("raw socket: %w", err)
	}
	c, err := startTcpdump(t, port)
	if err == nil {
		return c, nil
	}
	return nil, errors.Join(rawErr, fmt.Errorf("tcpdump: %w", err))
}

// rawCapture reads IPv4 packets of lo from an AF_PACKET socket.
type rawCapture struct {
	fd   int
	port int
	quit chan struct{}
	done chan struct{}

	mu      sync.Mutex
	buf     bytes.Buffer
	packets int
	err     error
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func startRawCapture(port int) (*rawCapture, error) {
	lo, err := loopback()
	if err != nil {
		return nil, err
	}
	proto := htons(syscall.ETH_P_IP)
	// SOCK_DGRAM: the link header is removed, packets start at IP.
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM, int(proto))
	if err != nil {
		return nil, fmt.Errorf("socket(AF_PACKET): %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: proto, Ifindex: lo.Index}); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("bind to %s: %w", lo.Name, err)
	}
	tv := syscall.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("receive timeout: %w", err)
	}
	c := &rawCapture{fd: fd, port: port, quit: make(chan struct{}), done: make(chan struct{})}
	go c.read()
	return c, nil
}

func loopback() (*net.Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for i := range ifs {
		if ifs[i].Flags&net.FlagLoopback != 0 {
			return &ifs[i], nil
		}
	}
	return nil, errors.New("no loopback interface")
}

func (c *rawCapture) name() string { return "raw AF_PACKET socket on lo" }

func (c *rawCapture) read() {
	defer close(c.done)
	pkt := make([]byte, 1<<16+512)
	for {
		select {
		case <-c.quit:
			return
		default:
		}
		n, from, err := syscall.Recvfrom(c.fd, pkt, 0)
		if err != nil {
			if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
				continue
			}
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		// Loopback shows each packet twice, going out and coming in.
		if ll, ok := from.(*syscall.SockaddrLinklayer); ok && ll.Pkttype == syscall.PACKET_OUTGOING {
			continue
		}
		if payload, ok := tcpPayload(pkt[:n], c.port); ok {
			c.mu.Lock()
			c.packets++
			if c.buf.Len()+len(payload) <= maxCapture {
				c.buf.Write(payload)
			}
			c.mu.Unlock()
		}
	}
}

// tcpPayload returns the TCP payload of an IPv4 packet to or from port.
func tcpPayload(p []byte, port int) ([]byte, bool) {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != syscall.IPPROTO_TCP {
		return nil, false
	}
	ihl := int(p[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(p[2:4]))
	if total > len(p) || ihl+20 > total {
		return nil, false
	}
	tcp := p[ihl:total]
	src, dst := int(binary.BigEndian.Uint16(tcp[0:2])), int(binary.BigEndian.Uint16(tcp[2:4]))
	if src != port && dst != port {
		return nil, false
	}
	off := int(tcp[12]>>4) * 4
	if off > len(tcp) {
		return nil, false
	}
	return tcp[off:], true
}

func (c *rawCapture) stop() ([]byte, error) {
	close(c.quit)
	<-c.done
	syscall.Close(c.fd)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return nil, c.err
	}
	if c.packets == 0 {
		return nil, errors.New("no packet of the port captured")
	}
	return bytes.Clone(c.buf.Bytes()), nil
}

// tcpdumpCapture runs tcpdump -w on lo for one port.
type tcpdumpCapture struct {
	cmd  *exec.Cmd
	file string
	exit chan error
	mu   sync.Mutex
	said strings.Builder // tcpdump's stderr
}

func startTcpdump(t *testing.T, port int) (*tcpdumpCapture, error) {
	path, err := exec.LookPath("tcpdump")
	if err != nil {
		return nil, fmt.Errorf("not installed (apt-get install -y tcpdump): %w", err)
	}
	lo, err := loopback()
	if err != nil {
		return nil, err
	}
	file := filepath.Join(t.TempDir(), "capture.pcap")
	cmd := exec.Command(path, "-i", lo.Name, "--immediate-mode", "-U", "-n", "-s", "0", "-w", file, "tcp port "+strconv.Itoa(port))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &tcpdumpCapture{cmd: cmd, file: file, exit: make(chan error, 1)}
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			c.mu.Lock()
			c.said.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
			if strings.Contains(sc.Text(), "listening on") {
				once.Do(func() { close(listening) })
			}
		}
		c.exit <- cmd.Wait()
	}()
	select {
	case <-listening:
		return c, nil
	case err := <-c.exit:
		c.mu.Lock()
		defer c.mu.Unlock()
		return nil, fmt.Errorf("exited before listening (%v): %s", err, strings.TrimSpace(c.said.String()))
	case <-time.After(waitFor):
		_ = cmd.Process.Kill()
		<-c.exit
		return nil, fmt.Errorf("not listening within %s", waitFor)
	}
}

func (c *tcpdumpCapture) name() string { return "tcpdump -w on lo" }

func (c *tcpdumpCapture) stop() ([]byte, error) {
	// --immediate-mode and -U hand each packet over and write it at
	// once; give the last ones a moment.
	time.Sleep(100 * time.Millisecond)
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.exit:
	case <-time.After(waitFor):
		_ = c.cmd.Process.Kill()
		<-c.exit
	}
	b, err := os.ReadFile(c.file)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil && len(b) <= 24 { // a pcap file header alone
		err = fmt.Errorf("no packet captured; tcpdump said: %s", strings.TrimSpace(c.said.String()))
	}
	return b, err
}

// exchange runs a broker (with CURVE or not), an echo worker and a client
// over tcp://127.0.0.1, sends body, checks the echo, and returns what the
// capture saw of the broker's port (nil and the reason when it could not
// capture).
func exchange(t *testing.T, secure bool, body string) (seen []byte, why error) {
	t.Helper()
	var e *env
	var workerKeys, clientKeys *curve.ClientKeys
	if secure {
		ce := startCurve(t)
		e = ce.env
		workerKeys, clientKeys = ce.identity("worker", true), ce.identity("client", true)
	} else {
		e = start(t, testConfig(t), nil)
	}
	u, err := url.Parse(e.ep)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatalf("endpoint %s: %v", e.ep, err)
	}
	capt, capErr := startCapture(t, port)
	if capErr == nil {
		t.Logf("capturing port %d with %s", port, capt.name())
	}

	runWorker(t, e.ep, "echo", workerKeys)
	e.waitWorkers("echo", 1)
	c := newClient(t, e.ep, clientKeys, 2*time.Second)
	got, err := request(t, c, "echo", body)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if got != "echo:"+body {
		t.Fatalf("reply %q, want the echo of %q", got, body)
	}
	if capErr != nil {
		return nil, capErr
	}
	seen, err = capt.stop()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", capt.name(), err)
	}
	t.Logf("%s saw %d bytes of the exchange", capt.name(), len(seen))
	return seen, nil
}

// Traffic through a CURVE broker is not readable on the wire: a marker in
// the request body (and its echo) shows in a capture of a plain run and not
// in one of a CURVE run.
func TestCurveWireIsEncrypted(t *testing.T) {
	needCurve(t)
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce)
	plainMarker := "PLAINTEXT-MARKER-" + hex.EncodeToString(nonce)
	curveMarker := "CURVE-RUN-MARKER-" + hex.EncodeToString(nonce)

	var plainSeen, curveSeen []byte
	var why error
	t.Run("plain", func(t *testing.T) {
		plainSeen, why = exchange(t, false, "body with "+plainMarker)
	})
	if why != nil {
		t.Skipf("skipping the capture checks (the exchanges ran): cannot capture loopback traffic: %v", why)
	}
	t.Run("curve", func(t *testing.T) {
		curveSeen, why = exchange(t, true, "body with "+curveMarker)
	})
	if t.Failed() {
		return
	}
	if why != nil {
		t.Fatalf("the plain run was captured but the CURVE run was not: %v", why)
	}
	// The plain capture proves the capture works: greeting, mechanism
	// and the body are all there in clear.
	if !bytes.Contains(plainSeen, []byte(plainMarker)) {
		t.Fatalf("the plain run's marker is not in its capture (%d bytes): the capture does not work", len(plainSeen))
	}
	if !bytes.Contains(plainSeen, []byte("NULL")) {
		t.Errorf("no NULL mechanism in the plain capture")
	}
	if !bytes.Contains(curveSeen, []byte("CURVE")) {
		t.Fatalf("no CURVE greeting in the CURVE run's capture (%d bytes): it did not see the handshake", len(curveSeen))
	}
	if bytes.Contains(curveSeen, []byte(curveMarker)) {
		t.Fatalf("the CURVE run's marker %q is readable on the wire", curveMarker)
	}
	for _, clear := range []string{"MDPC01", "MDPW01", "echo:"} {
		if bytes.Contains(curveSeen, []byte(clear)) {
			t.Errorf("%q is readable in the CURVE capture", clear)
		}
	}
	t.Logf("plain capture: %d bytes, marker present; CURVE capture: %d bytes, no marker, no MDP header", len(plainSeen), len(curveSeen))
}
