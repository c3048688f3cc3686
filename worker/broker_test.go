package worker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker"
	"github.com/titanicmq/titanic/broker/mdp"
)

// TestWithBroker runs the worker against the real broker, with a plain
// MDP client on a raw DEALER.
func TestWithBroker(t *testing.T) {
	// Liveness is 3 intervals: at 50 ms a loaded machine (load average
	// 13 on 2 cores) descheduled the worker's beats past it, and the
	// plain request in flight was dropped with the worker.
	const interval = 100 * time.Millisecond
	b, err := broker.New(broker.Config{
		Endpoints:         []string{"tcp://127.0.0.1:*"},
		HeartbeatInterval: interval,
		Logger:            testLogger(t),
	})
	if err != nil {
		t.Fatalf("broker.New: %v", err)
	}
	src := &oneJob{job: broker.Job{Token: []byte("T1"), Body: [][]byte{[]byte("job")}}, done: make(chan completed, 1)}
	b.SetSource(src)
	ctx, cancel := context.WithCancel(context.Background())
	brokerErr := make(chan error, 1)
	go func() { brokerErr <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-brokerErr:
			if err != nil {
				t.Errorf("broker Run: %v", err)
			}
		case <-time.After(wait):
			t.Errorf("broker did not stop within %s", wait)
		}
	})
	select {
	case <-b.Ready():
	case err := <-brokerErr:
		t.Fatalf("broker Run: %v", err)
	case <-time.After(wait):
		t.Fatalf("broker not ready within %s", wait)
	}
	ep := b.Endpoints()[0]

	startWorker(t, Config{Brokers: []string{ep}, Service: "echo", HeartbeatInterval: interval},
		func(ctx context.Context, req [][]byte) ([][]byte, error) {
			switch string(req[0]) {
			case "fail":
				return nil, errors.New("refused")
			case "slow":
				// The work takes many heartbeat intervals; the broker
				// keeps the worker only because it heartbeats meanwhile.
				select {
				case <-time.After(10 * interval):
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return append([][]byte{[]byte("echo:")}, req...), nil
		})

	// The durable job is handed out first, with its token.
	select {
	case got := <-src.done:
		if string(got.lease.Token) != "T1" || !framesEqual(got.reply, [][]byte{[]byte("echo:"), []byte("job")}) {
			t.Fatalf("job completed with token %q and reply %q", got.lease.Token, got.reply)
		}
		b.Release(got.lease.ID)
	case <-time.After(wait):
		t.Fatalf("durable job not completed within %s", wait)
	}

	c := newClient(t, ep)
	c.call("echo", [][]byte{[]byte("hello"), {}, {0x00, 0xff}}, [][]byte{[]byte("echo:"), []byte("hello"), {}, {0x00, 0xff}})
	c.call("echo", [][]byte{[]byte("slow")}, [][]byte{[]byte("echo:"), []byte("slow")})
	// FAIL drops a plain request; the next reply proves it was handled.
	c.send("echo", []byte("fail"))
	c.call("echo", [][]byte{[]byte("after")}, [][]byte{[]byte("echo:"), []byte("after")})

	src.mu.Lock()
	if len(src.failed) != 0 {
		t.Errorf("job failed: %q", src.failed)
	}
	src.mu.Unlock()
	st, err := b.Stats(context.Background())
	if err != nil {
		t.Fatalf("broker stats: %v", err)
	}
	if st.RequestsFailed != 1 || st.RepliesRelayed != 3 || st.RequestsLost != 0 {
		t.Errorf("broker stats: %d failed, %d relayed, %d lost; want 1, 3, 0", st.RequestsFailed, st.RepliesRelayed, st.RequestsLost)
	}
}

// oneJob is a broker.Source with a single job. Its methods run on the
// broker's loop and never block.
type oneJob struct {
	mu     sync.Mutex
	job    broker.Job
	gave   bool
	failed []string
	done   chan completed
}

type completed struct {
	lease broker.Lease
	reply [][]byte
}

func (s *oneJob) Next(service, _ string) (broker.Job, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if service != "echo" || s.gave {
		return broker.Job{}, false
	}
	s.gave = true
	return s.job, true
}

func (s *oneJob) Completed(lease broker.Lease, reply [][]byte) {
	select {
	case s.done <- completed{lease, reply}:
	default:
	}
}

func (s *oneJob) Failed(lease broker.Lease, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failed = append(s.failed, reason)
}

// Unsent gives the job back for the next worker, as a real Source does.
func (s *oneJob) Unsent(broker.Lease, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gave = false
}

func (s *oneJob) Workers(string, int) {}

// client is a plain MDP client on a raw DEALER socket.
type client struct {
	t      *testing.T
	sock   *zmq.Socket
	poller *zmq.Poller
}

func newClient(t *testing.T, ep string) *client {
	t.Helper()
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatalf("client context: %v", err)
	}
	sock, err := zctx.NewSocket(zmq.DEALER)
	if err != nil {
		t.Fatalf("client socket: %v", err)
	}
	t.Cleanup(func() {
		_ = sock.Close()
		_ = zctx.Term()
	})
	if err := sock.SetLinger(0); err != nil {
		t.Fatalf("client linger: %v", err)
	}
	if err := sock.Connect(ep); err != nil {
		t.Fatalf("client connect: %v", err)
	}
	p := zmq.NewPoller()
	p.Add(sock, zmq.POLLIN)
	return &client{t: t, sock: sock, poller: p}
}

func (c *client) send(service string, body ...[]byte) {
	c.t.Helper()
	frames := mdp.ClientRequest(service, body...)
	parts := make([]any, len(frames))
	for i, f := range frames {
		parts[i] = f
	}
	if _, err := c.sock.SendMessage(parts...); err != nil {
		c.t.Fatalf("client send: %v", err)
	}
}

func (c *client) call(service string, body, want [][]byte) {
	c.t.Helper()
	c.send(service, body...)
	polled, err := c.poller.Poll(wait)
	if err != nil {
		c.t.Fatalf("client poll: %v", err)
	}
	if len(polled) == 0 {
		c.t.Fatalf("no reply to %q within %s", body, wait)
	}
	frames, err := c.sock.RecvMessageBytes(0)
	if err != nil {
		c.t.Fatalf("client receive: %v", err)
	}
	got, err := mdp.ParseReply(frames, service)
	if err != nil {
		c.t.Fatalf("reply to %q: %v", body, err)
	}
	if !framesEqual(got, want) {
		c.t.Fatalf("reply to %q is %q, want %q", body, got, want)
	}
}
