package worker

import (
	"context"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/broker/mdp"
	"github.com/titanicmq/titanic/broker/zsock"
)

// A REPLY or FAIL that cannot be queued (a full pipe: the broker stopped
// reading) must not be dropped silently: the broker would wait for ever on
// a worker that keeps heartbeating. The worker gives the connection up, so
// that the broker sees it gone and redelivers; a HEARTBEAT is just
// dropped. A DEALER with ZMQ_IMMEDIATE and no connected peer refuses
// every send with EAGAIN, as a full pipe does.
func TestDroppedAnswerLosesConnection(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cmd   [][]byte
		loses bool
	}{
		{"heartbeat", mdp.WorkerCommand(mdp.Heartbeat), false},
		{"reply", mdp.WorkerEnvelope(mdp.Reply, []byte("client"), []byte("answer")), true},
		{"fail", mdp.WorkerEnvelope(mdp.Fail, []byte("client"), []byte("why")), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := New(Config{Brokers: []string{"tcp://127.0.0.1:1"}, Service: "echo"}, func(context.Context, [][]byte) ([][]byte, error) { return nil, nil })
			if err != nil {
				t.Fatal(err)
			}
			zctx, err := zmq.NewContext()
			if err != nil {
				t.Fatal(err)
			}
			// Every socket closes before the context ends, also when the
			// test fails (Term waits for open sockets).
			bell := zsock.NewDoorbell()
			s := &session{w: w, log: w.log, zctx: zctx, bell: bell, wake: newWakeup(bell), endpoint: "tcp://127.0.0.1:1"}
			t.Cleanup(func() {
				if s.dealer != nil {
					s.detach()
				}
				_ = bell.Close()
				_ = zctx.Term()
			})
			dealer, err := zctx.NewSocket(zmq.DEALER)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.attach(dealer); err != nil {
				t.Fatal(err)
			}
			for _, set := range []func() error{
				func() error { return dealer.SetLinger(0) },
				func() error { return dealer.SetImmediate(true) },
				func() error { return dealer.Connect("tcp://127.0.0.1:1") },
			} {
				if err := set(); err != nil {
					t.Fatal(err)
				}
			}
			if s.send(time.Now(), tc.cmd) {
				t.Fatal("send reported success on a socket that refuses every message")
			}
			if lost := s.dealer == nil; lost != tc.loses {
				t.Fatalf("connection given up: %v, want %v", lost, tc.loses)
			}
		})
	}
}
