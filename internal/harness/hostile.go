package harness

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// HostileConns is how many connections the hostile clients open, each
// sending a request and never reading.
const HostileConns = 2000

// Hostile runs the hostile clients of the self-defence tests against the
// broker at ep: connections sending frames over --max-message-size (1 MiB
// expected), a pipelined flood from one connection that never reads,
// HostileConns connections with a request each that never read, garbage
// from the mdp fuzz corpus (corpus: broker/mdp/testdata/fuzz) and
// frame-count bombs (one message of 10,000 frames). One round is sent
// when rounds is 1; with rounds 0 a round is sent every interval until
// ctx ends (the connections stay; the flood and the garbage go on). It
// returns once the last round is handed to ZeroMQ, with the function
// that closes its sockets, which stay open until then so that what they
// queued goes out: call it on the goroutine that called Hostile (the
// sockets are that goroutine's).
func Hostile(ctx context.Context, ep, corpus string, rounds int, interval time.Duration) (closeAll func(), err error) {
	closeAll, _, err = HostileRounds(ctx, ep, corpus, rounds, interval)
	return closeAll, err
}

// HostileRounds is Hostile, and also returns how many rounds it sent in
// full: a benchmark running the attack in a process of low priority
// reports it, to show the attack was delivered and not starved.
func HostileRounds(ctx context.Context, ep, corpus string, rounds int, interval time.Duration) (closeAll func(), sent int, err error) {
	zctx, err := zmq.NewContext()
	if err != nil {
		return nil, sent, err
	}
	var socks []*zmq.Socket
	cleanup := func() {
		for _, s := range socks {
			_ = s.Close()
		}
		socks = nil
		_ = zctx.Term()
	}
	// cleanup, not closeAll: an error return sets closeAll to nil.
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	if err := zctx.SetMaxSockets(HostileConns + 64); err != nil {
		return nil, sent, err
	}
	dealer := func() (*zmq.Socket, error) {
		s, err := zctx.NewSocket(zmq.DEALER)
		if err != nil {
			return nil, err
		}
		socks = append(socks, s)
		_ = s.SetLinger(0)
		_ = s.SetSndhwm(0)
		return s, s.Connect(ep)
	}
	submit := func(s *zmq.Socket, body []byte) {
		_, _ = s.SendMessageDontwait("", "MDPC01", "titanic.request", "echo", body)
	}
	files, _ := filepath.Glob(filepath.Join(corpus, "*", "*"))
	if len(files) == 0 {
		return nil, sent, fmt.Errorf("no fuzz corpus in %s", corpus)
	}
	var garbage [][]any
	for _, f := range files {
		frames, err := CorpusFrames(f)
		if err != nil {
			return nil, sent, err
		}
		parts := make([]any, len(frames))
		for i, fr := range frames {
			parts[i] = fr
		}
		garbage = append(garbage, parts)
	}
	bomb := make([]any, 10_000)
	for i := range bomb {
		bomb[i] = []byte{}
	}
	bomb[1] = "MDPC01"

	big := bytes.Repeat([]byte("x"), 2<<20)
	flood, err := dealer()
	if err != nil {
		return nil, sent, err
	}
	g, err := dealer()
	if err != nil {
		return nil, sent, err
	}
	var many []*zmq.Socket
	for range HostileConns {
		s, err := dealer()
		if err != nil {
			return nil, sent, err
		}
		many = append(many, s)
	}
	var oversized []*zmq.Socket // last round's: dropped by the broker
	for round := 0; rounds == 0 || round < rounds; round++ {
		for _, s := range oversized {
			_ = s.Close()
		}
		socks = socks[:HostileConns+2] // flood, g and many stay
		oversized = oversized[:0]
		// Oversized frames: the connection is dropped (ZMQ_MAXMSGSIZE).
		for range 5 {
			s, err := dealer()
			if err != nil {
				return nil, sent, err
			}
			submit(s, big)
			oversized = append(oversized, s)
		}
		// A flood from one connection, never reading: the broker answers
		// "busy" past the in-flight limit and the rate, and queues
		// nothing without bound.
		for i := range 50_000 {
			submit(flood, []byte("flood "+strconv.Itoa(i)))
		}
		// Many connections, each with a request, never reading.
		for _, s := range many {
			submit(s, []byte("many"))
		}
		for _, parts := range garbage {
			_, _ = g.SendMessageDontwait(parts...)
		}
		_, _ = g.SendMessageDontwait(bomb...)
		sent++
		if rounds != 0 && round == rounds-1 {
			break
		}
		select {
		case <-ctx.Done():
			return cleanup, sent, nil
		case <-time.After(interval):
		}
	}
	return cleanup, sent, nil
}

// CorpusFrames reads a Go fuzz corpus file ([]byte("...") on its second
// line) and splits it into frames at '|', as the mdp fuzz targets do.
func CorpusFrames(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.SplitN(string(b), "\n", 3)
	if len(lines) < 2 {
		return [][]byte{b}, nil
	}
	lit := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(lines[1]), "[]byte("), ")")
	s, err := strconv.Unquote(lit)
	if err != nil {
		return [][]byte{[]byte(lines[1])}, nil
	}
	return bytes.Split([]byte(s), []byte{'|'}), nil
}

// ProcStatus reads a field of /proc/PID/status in bytes (VmHWM, RssAnon:
// "kB" values); it returns an error where there is no /proc.
func ProcStatus(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}
