package client

import (
	"fmt"
	"net"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/titanic/tsp"
)

// Retry and RetryFailed ask again after a busy answer: found by an
// outside-in test of the job lifecycle.

// fakeRouter is a raw MDPC01 ROUTER on a port of 44000-44999 (the range
// this machine's tests may use); answer gives each request's reply body.
func fakeRouter(t *testing.T, answer func(service string, body [][]byte) [][]byte) string {
	t.Helper()
	ctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	s, err := ctx.NewSocket(zmq.ROUTER)
	if err != nil {
		t.Fatal(err)
	}
	ep := ""
	for i := range 1000 {
		p := 44000 + (int(time.Now().UnixNano()%1000)+i)%1000
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			l.Close()
			if s.Bind(fmt.Sprintf("tcp://127.0.0.1:%d", p)) == nil {
				ep = fmt.Sprintf("tcp://127.0.0.1:%d", p)
				break
			}
		}
	}
	if ep == "" {
		t.Fatal("no free port in 44000-44999")
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		defer ctx.Term()
		defer s.Close()
		_ = s.SetLinger(0)
		p := zmq.NewPoller()
		p.Add(s, zmq.POLLIN)
		for {
			select {
			case <-stop:
				return
			default:
			}
			polled, err := p.Poll(5 * time.Millisecond)
			if err != nil || len(polled) == 0 {
				continue
			}
			msg, err := s.RecvMessageBytes(0)
			if err != nil || len(msg) < 4 || string(msg[2]) != "MDPC01" {
				continue
			}
			var rep [][]byte
			if string(msg[3]) == tsp.SvcRole {
				rep = answer(tsp.SvcRole, msg[4:])
			} else {
				rep = answer(string(msg[3]), msg[4:])
			}
			if rep == nil {
				continue
			}
			_, _ = s.SendMessage(append([][]byte{msg[0], {}, []byte("MDPC01"), msg[3]}, rep...))
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return ep
}

// titanic.retry is answered "500 busy, retry later" for the moment a
// retention sweep that found expired tickets lists them (README,
// Extension frames: "the HTTP API's retry waits instead"), and README's
// refusal kinds say what a client does with `busy, retry later`:
// "retries later". RetryFailed (so `titanic retry --service S --failed`,
// and Retry for `titanic retry TICKET`) gives up at once instead, exit 1
// "broker error: busy, retry later", with the rest of the service's
// failed tickets left failed. Against a real broker (DoneTTL 3s, sweeps
// every 50ms, 10,000 expired tickets swept while 1,500 are retried) it
// stopped part way in most runs (1224 of 1500 retried); this fake broker
// answers busy once, as a passing sweep does.
func TestRetryFailedRetriesBusy(t *testing.T) {
	t1 := "0123456789abcdef0123456789abcde1"
	t2 := "0123456789abcdef0123456789abcde2"
	busyOnce := true
	ep := fakeRouter(t, func(service string, body [][]byte) [][]byte {
		switch service {
		case "titanic.list":
			if len(body) > 2 && string(body[2]) != "" { // a page after the first
				return frames("200")
			}
			return frames("200", t1+" keep failed 5", t2+" keep failed 5")
		case "titanic.retry":
			if string(body[0]) == t1 && busyOnce {
				busyOnce = false
				return frames("500", "busy, retry later")
			}
			return frames("200")
		}
		return nil // the role question and the rest: no answer, as an older broker
	})
	c := newClient(t, time.Second, 3, ep)
	n, err := c.RetryFailed(testCtx(t), "keep")
	if err != nil || n != 2 {
		t.Fatalf("RetryFailed with one passing busy answer: retried %d, %v (want 2, nil: busy is retried later)", n, err)
	}
}
