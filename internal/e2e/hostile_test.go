package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/client"
	"github.com/titanicmq/titanic/internal/harness"
)

// TestHostileClients runs hostile clients against a real broker and checks
// that a well-behaved client's submits are still acknowledged throughout,
// and that the broker's memory stays bounded: oversized frames, a
// pipelined flood from one connection, thousands of connections, clients
// that never read their answers, and garbage frames from the fuzz corpus.
func TestHostileClients(t *testing.T) {
	ep := harness.FreeEndpoint(t)
	br := harness.Broker(t, "broker", ep, t.TempDir(), append([]string{"--max-message-size", "1048576", "--submit-rate", "2000"}, fastBroker...)...)
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer zctx.Term()
	if err := zctx.SetMaxSockets(4096); err != nil {
		t.Fatal(err)
	}
	var socks []*zmq.Socket
	defer func() {
		for _, s := range socks {
			_ = s.Close()
		}
	}()
	dealer := func() *zmq.Socket {
		s, err := zctx.NewSocket(zmq.DEALER)
		if err != nil {
			t.Fatal(err)
		}
		_ = s.SetLinger(0)
		_ = s.SetSndhwm(0)
		if err := s.Connect(ep); err != nil {
			t.Fatal(err)
		}
		socks = append(socks, s)
		return s
	}
	submit := func(s *zmq.Socket, body []byte) {
		_, _ = s.SendMessageDontwait("", "MDPC01", "titanic.request", "echo", body)
	}

	// A well-behaved client submits throughout; each submit must be
	// acknowledged within its Lazy Pirate retries.
	good, err := client.New(client.Config{Brokers: []string{ep}, Timeout: 2 * time.Second, Retries: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var acked int
	var goodErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx := context.Background()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := good.Submit(ctx, "good", [][]byte{[]byte("ok")}, client.SubmitOptions{}); err != nil {
				goodErr = err
				return
			}
			acked++
		}
	}()

	// Oversized frames: the connection is dropped (ZMQ_MAXMSGSIZE).
	big := bytes.Repeat([]byte("x"), 2<<20)
	for range 5 {
		submit(dealer(), big)
	}
	// A flood from one connection, never reading: the broker answers
	// "busy" past the in-flight limit and the rate, and queues nothing
	// without bound.
	flood := dealer()
	for i := range 50_000 {
		submit(flood, []byte("flood "+strconv.Itoa(i)))
	}
	// Thousands of connections, each with a request, never reading.
	for range 2000 {
		submit(dealer(), []byte("many"))
	}
	// Garbage from the fuzz corpus.
	g := dealer()
	files, _ := filepath.Glob(filepath.Join("..", "..", "broker", "mdp", "testdata", "fuzz", "*", "*"))
	if len(files) == 0 {
		t.Fatal("no fuzz corpus found")
	}
	for _, f := range files {
		frames := corpusFrames(t, f)
		parts := make([]any, len(frames))
		for i, fr := range frames {
			parts[i] = fr
		}
		_, _ = g.SendMessageDontwait(parts...)
	}

	// Keep the good client going a while after the storm.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && goodErr == nil {
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if goodErr != nil {
		t.Fatalf("well-behaved client failed during the attack: %v\nbroker log:\n%s", goodErr, br.Tail())
	}
	if acked < 50 {
		t.Fatalf("well-behaved client got only %d acks", acked)
	}
	if br.Exited() {
		t.Fatalf("broker died:\n%s", br.Tail())
	}
	rss := peakRSS(t, br.PID())
	t.Logf("well-behaved client: %d submits acknowledged during the attack; broker peak RSS %d MiB", acked, rss>>20)
	if rss > 1<<30 {
		t.Fatalf("broker peak RSS %d MiB: memory not bounded", rss>>20)
	}
}

// corpusFrames reads a Go fuzz corpus file ([]byte("...") on its second
// line) and splits it into frames at '|', as the mdp fuzz targets do.
func corpusFrames(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(b), "\n", 3)
	if len(lines) < 2 {
		return [][]byte{b}
	}
	lit := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(lines[1]), "[]byte("), ")")
	s, err := strconv.Unquote(lit)
	if err != nil {
		return [][]byte{[]byte(lines[1])}
	}
	return bytes.Split([]byte(s), []byte{'|'})
}

// peakRSS reads VmHWM (peak resident set) of pid.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}
