package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/titanicmq/titanic/internal/harness"
	"github.com/titanicmq/titanic/titanic/tsp"
)

// fakeBusyBroker answers titanic.reply and titanic.wait "500 busy" for the
// first `busy` lookups, then 200 with the reply "hello"; anything else 200.
func fakeBusyBroker(t *testing.T, ep string, busy int) {
	t.Helper()
	sk, err := zmq.NewSocket(zmq.ROUTER)
	if err != nil {
		t.Fatal(err)
	}
	if err := sk.Bind(ep); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer sk.Close()
		_ = sk.SetRcvtimeo(50 * time.Millisecond)
		for ctx.Err() == nil {
			msg, err := sk.RecvMessageBytes(0)
			if err != nil {
				continue
			}
			h := -1
			for i, f := range msg {
				if string(f) == "MDPC01" {
					h = i
					break
				}
			}
			if h < 0 || h+1 >= len(msg) {
				continue
			}
			svc := string(msg[h+1])
			out := append([][]byte{}, msg[:h+2]...)
			switch svc {
			case tsp.SvcReply, tsp.SvcWait:
				if busy > 0 {
					busy--
					out = append(out, []byte("500"), []byte(string(tsp.Busy)))
				} else {
					out = append(out, []byte("200"), []byte("hello"))
				}
			default:
				out = append(out, []byte("200"))
			}
			parts := make([]interface{}, len(out))
			for i := range out {
				parts[i] = out[i]
			}
			_, _ = sk.SendMessage(parts...)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// A broker that answers "busy, retry later" to the first lookup: the
// waits of README ("waits until answered") must go on, as c.Wait does
// for a transient answer; they ended at once (found by a reviewer of the
// day's changes), `wait` calling the ticket
// an error (exit 5, ErrFailed: a failed ticket to a script).
func TestWaitRidesOutBusy(t *testing.T) {
	const ticket = "0123456789abcdef0123456789abcdef"
	ep := harness.FreeEndpoint(t)
	fakeBusyBroker(t, ep, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code, stdout, stderr := runCLI(t, ctx, "wait", "--broker", ep, ticket)
	if code != 0 || !strings.Contains(stdout, ticket+"\tdone") {
		t.Errorf("wait, broker busy once: exit %d, stdout %q, stderr %q; want exit 0 and the ticket done", code, stdout, stderr)
	}
	ep2 := harness.FreeEndpoint(t)
	fakeBusyBroker(t, ep2, 1)
	code, stdout, stderr = runCLI(t, ctx, "reply", "--wait", "--broker", ep2, ticket)
	if code != 0 || !strings.Contains(stdout, "hello") {
		t.Errorf("reply --wait, broker busy once: exit %d, stdout %q, stderr %q; want exit 0 and the reply", code, stdout, stderr)
	}
}
